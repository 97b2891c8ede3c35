"""Fleet updates on the server: the signed release repository served to stations, the
release notice on MQTT, and what each station's updater last reported (docs/updates.md)."""
