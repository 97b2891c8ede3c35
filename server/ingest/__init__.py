"""Station traffic and the fleet: the MQTT bridge and its workers (verify, store once,
ack), enrolment and key rotation, the configuration pushed to stations, the fleet's
status, /metrics, and their pages (enrolment codes, the fleet)."""
