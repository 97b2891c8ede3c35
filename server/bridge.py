"""The MQTT bridge: verify each station's signed records, store them once, ack back.

Subscribes to every station's records topic with a persistent session, so batches sent
while the bridge is down wait in the broker. A record is acked only after the database
commit; a record refused for good (forged, conflicting) is acked as refused so the
station stops sending it; records from unknown stations get no ack at all.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qrgate import protocol
from qrgate.config import MqttSettings
from qrgate.errors import RecordError
from qrgate.mqtt import connect_async, make_client
from qrgate.sealing import PersonOpener
from server.fleet import Fleet
from server.storage import StationInfo, Storage

logger = logging.getLogger(__name__)

CHECK_CHUNK = 50  # records a verification thread takes at a time


class RecordVerifier:
    """Looks up the station for every batch (so a retirement or reassignment counts at
    once, whichever process made it) and caches only the parsed keys."""

    def __init__(self, storage: Storage):
        self.storage = storage
        self._keys: dict[str, Ed25519PublicKey] = {}

    def station(self, station_id: str) -> tuple[StationInfo, KeyHistory] | None:
        info = self.storage.station(station_id)
        if info is None:
            return None
        history = self.storage.station_keys(station_id) or [(1, info.public_key)]
        return info, KeyHistory([(seq, self._parsed(text)) for seq, text in history])

    def _parsed(self, text: str) -> Ed25519PublicKey:
        key = self._keys.get(text)
        if key is None:
            key = self._keys[text] = protocol.fast_verifier(text)
        return key


class KeyHistory:
    """A station's keys by the first seq each signs; picks the key for a record."""

    def __init__(self, keys: list[tuple[int, Ed25519PublicKey]]):
        self.keys = sorted(keys, key=lambda k: k[0])

    def for_seq(self, seq: int) -> Ed25519PublicKey:
        chosen = self.keys[0][1]
        for from_seq, key in self.keys:
            if from_seq <= seq:
                chosen = key
        return chosen


class Bridge:
    """Turns records messages into stored check-ins and acks.

    ``handle(topic, payload)`` is the whole decision and can be called without a broker;
    ``start()`` connects it to one.
    """

    def __init__(self, storage: Storage, settings: MqttSettings | None = None, base: Path = Path("."), *,
                 client_id: str = "qrgate-bridge", opener: PersonOpener | None = None,
                 check_threads: int | None = None):
        self.storage = storage
        self.opener = opener
        self.fleet = Fleet(storage)
        threads = min(4, os.cpu_count() or 1) if check_threads is None else check_threads
        self._pool = ThreadPoolExecutor(threads, thread_name_prefix="verify") if threads > 1 else None
        self.verifier = RecordVerifier(storage)
        self.settings = settings
        self.counters: Counter[str] = Counter()
        self._connected = threading.Event()
        self._client: mqtt.Client | None = None
        self._client_id = client_id
        self._base = base

    def handle(self, topic: str, payload: bytes) -> protocol.Ack | None:
        """Process one records message; return the ack to send (None: send nothing)."""
        station_id = protocol.station_from_topic(topic)
        if station_id is None:
            self._refuse("-", "misaddressed", f"topic {topic!r}")
            return None
        found = self.verifier.station(station_id)
        if found is None:
            self._refuse(station_id, "unknown_station", f"message on {topic}")
            return None
        info, keys = found
        if info.status != "active":
            self._refuse(station_id, "retired", f"message on {topic}")
            return None
        try:
            raw_records = protocol.decode_batch(payload)
        except RecordError as exc:
            self._refuse(station_id, exc.reason, exc.detail)
            return None
        good: list[dict] = []
        refused: dict[int, str] = {}
        for raw, checked in zip(raw_records, self._check_all(raw_records, station_id, keys)):
            if isinstance(checked, RecordError):
                seq = raw.get("seq") if isinstance(raw, dict) else None
                self._refuse(station_id, checked.reason, checked.detail)
                # Only a well-numbered record can be acked as refused; a forged record
                # must never make the station drop its genuine record of that number.
                if isinstance(seq, int) and not isinstance(seq, bool) and checked.reason in ("malformed", "too_large", "bad_version", "bad_sealed"):
                    refused[seq] = checked.reason
                continue
            good.append(checked)
        result = self.storage.store_records(info, good)
        for seq, reason in result.refused.items():
            self._refuse(station_id, reason, f"seq {seq}")
        refused.update(result.refused)
        self.counters["stored"] += result.new
        self.counters["duplicate"] += len(result.stored) - result.new
        return protocol.Ack(result.stored, refused)

    def _check_all(self, raw_records: list, station_id: str, keys: KeyHistory) -> list[dict | RecordError]:
        """Validate, verify and open every record, in order. libsodium and the AEAD run
        without the GIL, so a batch is split over a few threads: one bridge worker uses
        the cores it has (docs/performance.md)."""
        if self._pool is None or len(raw_records) < 2 * CHECK_CHUNK:
            return self._check_chunk(raw_records, station_id, keys)
        chunks = [raw_records[i:i + CHECK_CHUNK] for i in range(0, len(raw_records), CHECK_CHUNK)]
        return [r for part in self._pool.map(lambda c: self._check_chunk(c, station_id, keys), chunks) for r in part]

    def _check_chunk(self, raw_records: list, station_id: str, keys: KeyHistory) -> list[dict | RecordError]:
        out: list[dict | RecordError] = []
        for raw in raw_records:
            try:
                record = protocol.validate_record(raw)
                if record["st"] != station_id:
                    raise RecordError("misaddressed", f"record of {record['st']} on {station_id}'s topic")
                protocol.verify_record(record, keys.for_seq(record["seq"]))
                if "sealed" in record:
                    record = {**record, "person": self._open(record, station_id)}
                out.append(record)
            except RecordError as exc:
                out.append(exc)
        return out

    def _open(self, record: dict, station_id: str) -> dict:
        if self.opener is None:
            raise RecordError("bad_sealed", "this server has no sealing key")
        try:
            return protocol.validate_person(self.opener.open(record["sealed"], station_id))
        except RecordError as exc:
            raise RecordError("bad_sealed", exc.detail) from None

    def _refuse(self, station_id: str, reason: str, detail: str) -> None:
        self.counters[f"refused.{reason}"] += 1
        logger.warning("refused record from %s: %s (%s)", station_id, reason, detail)
        try:
            self.storage.count_refusal(station_id, reason)
        except Exception:  # counting must never stop the bridge
            logger.exception("could not count refusal")

    # --- broker side ---
    def start(self) -> None:
        if self.settings is None:
            raise RuntimeError("Bridge.start() needs MQTT settings")
        client, props = make_client(self._client_id, self.settings, self._base, persistent=True)
        client.on_connect = self._on_connect
        client.on_disconnect = lambda *a: self._connected.clear()
        client.on_message = self._on_message
        self._client = client
        connect_async(client, self.settings, props, persistent=True)

    def alive(self) -> bool:
        """The network loop thread runs (it reconnects by itself while it does).

        paho keeps that thread as ``_thread`` (paho-mqtt 2.x, pinned in constraints.txt).
        """
        thread = getattr(self._client, "_thread", None)
        return thread is not None and thread.is_alive()

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("broker refused the bridge: %s", reason_code)
            return
        client.subscribe([(protocol.records_topic("+"), 1), (protocol.status_topic("+"), 1)])
        logger.info("bridge connected to %s:%d", self.settings.host, self.settings.port)
        self._connected.set()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        station_id = protocol.station_from_topic(message.topic)
        if station_id and message.topic == protocol.status_topic(station_id):
            try:
                self.fleet.record_status(station_id, message.payload)
            except Exception:
                logger.exception("could not record the status of %s", station_id)
            return
        started = time.perf_counter()
        try:
            ack = self.handle(message.topic, message.payload)
        except Exception:
            # A database error: no ack, so the station sends again later. Never crash.
            logger.exception("could not store batch from %s", message.topic)
            return
        if ack is not None:
            station_id = protocol.station_from_topic(message.topic)
            client.publish(protocol.acks_topic(station_id), ack.to_bytes(), qos=1)
        logger.debug("batch on %s handled in %.1f ms", message.topic, (time.perf_counter() - started) * 1000)
