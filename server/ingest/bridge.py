"""The MQTT bridge: verify each station's signed records, store them once, ack back.

Subscribes to every station's records topic with a persistent session, so batches sent
while the bridge is down wait in the broker. A record is acked only after the database
commit. A record refused for good (malformed, conflicting, out of the time window) is
acked as refused so the station stops sending it, but only once its signature verified:
nothing unsigned can make a station set a record aside. Forged or unreadable records,
and records from unknown stations, get no ack at all.

Several bridges (worker processes, server/ingest/workers.py) share the load through one MQTT v5
shared subscription, ``$share/qrgate-bridge-<hash>/...`` (a name kept from the stations:
share_group_for): the broker hands each batch to one member of the group. Each member
keeps its own persistent session under a stable client id, so a batch handed to a member
that is restarting waits for it in the broker, and a batch it was handling when it died
is delivered to it again (its PUBACK is sent only after the commit). Storing is
idempotent by (station, seq) whichever member stores it.
"""

from __future__ import annotations

import hashlib
import hmac
import logging
import os
import queue
import threading
import time
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import paho.mqtt.client as mqtt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qrgate import protocol
from qrgate.config import MqttSettings
from qrgate.errors import RecordError
from qrgate.mqtt import connect_async, make_client
from qrgate.sealing import PersonOpener
from server.config import IngestSection
from server.ingest.fleet import Fleet
from server.storage import IngestWindow, StationInfo, Storage

logger = logging.getLogger(__name__)

CHECK_CHUNK = 50  # records a verification thread takes at a time
# Records messages checked ahead of the one being stored (broker side, see Bridge.start).
PIPELINE_DEPTH = 4
SHARE_GROUP_PREFIX = "qrgate-bridge"
DEFAULT_INGEST = IngestWindow.from_config(IngestSection())  # server.toml without [ingest]
DERIVED = "derived"  # share_group: the name share_group_for() gives the server's settings


def share_group_for(settings: MqttSettings, base: Path) -> str:
    """The shared subscription group of this server's bridges.

    Its name is derived from the server's broker password, which every bridge has and no
    station has. Mosquitto's ACL file does not check subscriptions, only what they
    deliver: a station that knew the name could join the group, be handed its round-robin
    share of every station's records, and have the ACL drop them (the stations would
    resend, but a few such members would starve the real bridges).
    """
    secret = (settings.password(base) or "").encode("utf-8")
    digest = hmac.new(secret, b"qrgate bridge share group v1", hashlib.sha256).hexdigest()[:16]
    return f"{SHARE_GROUP_PREFIX}-{digest}"


def records_filter(share_group: str | None) -> str:
    """The records subscription: shared by the group, or (None) a plain one."""
    plain = protocol.records_topic("+")
    return f"$share/{share_group}/{plain}" if share_group else plain


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


class Refusal(NamedTuple):
    """A record the bridge does not store. ``seq`` is the number to ack it under, set
    only when the record's signature verified: an unsigned refusal is never acked."""

    reason: str
    detail: str
    seq: int | None = None


@dataclass(frozen=True, slots=True)
class CheckedBatch:
    """A records message after every check, before the database: what ``store`` needs."""

    info: StationInfo
    good: list[dict]
    refused: dict[int, str]  # seqs acked as refused for good


class Bridge:
    """Turns records messages into stored check-ins and acks.

    ``handle(topic, payload)`` is the whole decision and can be called without a broker:
    ``check`` (validate, verify, open; no writes but refusal counters) then ``store``
    (one transaction) and the ack. ``start()`` connects it to one: there the two halves
    run as a pipeline, so the next messages are verified on other cores while one is
    committed (docs/performance.md).
    """

    def __init__(self, storage: Storage, settings: MqttSettings | None = None, base: Path = Path("."), *,
                 client_id: str = "qrgate-bridge", opener: PersonOpener | None = None,
                 check_threads: int | None = None, share_group: str | None = DERIVED,
                 follow_status: bool = True, ingest: IngestWindow | None = None):
        """``client_id`` must be stable across restarts and unique in the group (it names
        the broker session holding this bridge's queue); ``share_group`` is the group's
        name (DERIVED: from the settings, see share_group_for; None: a plain subscription);
        ``follow_status`` subscribes to the stations' status too (one member of a group
        is enough: see workers.py); ``ingest`` is the window of record times stored
        (server.toml [ingest]; None: its defaults)."""
        self.storage = storage
        self.ingest = ingest if ingest is not None else DEFAULT_INGEST
        self.opener = opener
        self.fleet = Fleet(storage)
        threads = min(4, os.cpu_count() or 1) if check_threads is None else check_threads
        self._threads = max(1, threads)
        self._pool = ThreadPoolExecutor(self._threads, thread_name_prefix="verify")
        # Broker side: (message, its check running in the pool) in arrival order, for the
        # store thread; bounded, so a slow database holds back the network thread.
        self._pipeline: queue.Queue = queue.Queue(maxsize=PIPELINE_DEPTH)
        self._storer: threading.Thread | None = None
        self.verifier = RecordVerifier(storage)
        self.settings = settings
        self.counters: Counter[str] = Counter()
        self._counting = threading.Lock()
        self._connected = threading.Event()
        self._subscribed = threading.Event()
        self._client: mqtt.Client | None = None
        self._client_id = client_id
        self._base = base
        if share_group == DERIVED:
            share_group = share_group_for(settings, base) if settings is not None else None
        self.share_group = share_group
        self.follow_status = follow_status

    def handle(self, topic: str, payload: bytes, *, from_station: bool = False) -> protocol.Ack | None:
        """Process one records message; return the ack to send (None: send nothing).
        ``from_station``: as from the broker, where only a station can publish on a records
        topic and a person must come sealed (in-process callers are the server's own sources)."""
        return self.store(self.check(topic, payload, from_station=from_station))

    def check(self, topic: str, payload: bytes, *, split: bool = True, from_station: bool = False) -> CheckedBatch | None:
        """Every check of one records message (None: nothing to store and no ack).
        ``split``: spread the batch's records over the verification threads;
        ``from_station``: see handle."""
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
        checked_all = (self._check_all(raw_records, station_id, keys, from_station) if split
                       else self._check_chunk(raw_records, station_id, keys, from_station))
        for checked in checked_all:
            if type(checked) is Refusal:
                self._refuse(station_id, checked.reason, checked.detail)
                if checked.seq is not None and checked.reason in protocol.ACKED_REFUSALS:
                    refused[checked.seq] = checked.reason
                continue
            good.append(checked)
        return CheckedBatch(info, good, refused)

    def store(self, batch: CheckedBatch | None) -> protocol.Ack | None:
        """Commit a checked message's records; return the ack (None: send nothing)."""
        if batch is None:
            return None
        result = self.storage.store_records(batch.info, batch.good, window=self.ingest)
        for seq, reason in result.refused.items():
            self._refuse(batch.info.station_id, reason, f"seq {seq}")
        refused = {**batch.refused, **result.refused}
        with self._counting:
            self.counters["stored"] += result.new
            self.counters["duplicate"] += len(result.stored) - result.new
        return protocol.Ack(result.stored, refused)

    def _check_all(self, raw_records: list, station_id: str, keys: KeyHistory,
                   from_station: bool = False) -> list[dict | Refusal]:
        """Validate, verify and open every record, in order. libsodium and the AEAD run
        without the GIL, so a batch is split over a few threads: one bridge worker uses
        the cores it has (docs/performance.md)."""
        if self._threads == 1 or len(raw_records) < 2 * CHECK_CHUNK:
            return self._check_chunk(raw_records, station_id, keys, from_station)
        chunks = [raw_records[i:i + CHECK_CHUNK] for i in range(0, len(raw_records), CHECK_CHUNK)]
        return [r for part in self._pool.map(lambda c: self._check_chunk(c, station_id, keys, from_station), chunks)
                for r in part]

    def _check_chunk(self, raw_records: list, station_id: str, keys: KeyHistory,
                     from_station: bool = False) -> list[dict | Refusal]:
        """Each record, the signature first: until it verifies, a refusal has no seq to be
        acked under (a record with a zeroed signature and a bad field used to be acked
        as refused, and the station then set its genuine record of that number aside)."""
        out: list[dict | Refusal] = []
        for raw in raw_records:
            verified = None
            try:
                seq = protocol.signed_seq(raw)
                if raw.get("st") != station_id:
                    raise RecordError("misaddressed", f"record of {str(raw.get('st'))[:80]!r} on {station_id}'s topic")
                protocol.verify_record(raw, keys.for_seq(seq))
                verified = seq
                record = protocol.validate_record(raw)
                if "sealed" in record:
                    record["person"] = self._open(record, station_id)  # a dict of this batch's own
                elif from_station and "person" in record:
                    raise RecordError("malformed", "a station sends the person sealed, never in the clear")
                out.append(record)
            except RecordError as exc:
                out.append(Refusal(exc.reason, exc.detail, verified))
        return out

    def _open(self, record: dict, station_id: str) -> dict:
        if self.opener is None:
            raise RecordError("bad_sealed", "this server has no sealing key")
        try:
            return protocol.validate_person(self.opener.open(record["sealed"], station_id))
        except RecordError as exc:
            raise RecordError("bad_sealed", exc.detail) from None

    def _refuse(self, station_id: str, reason: str, detail: str) -> None:
        with self._counting:  # refusals are counted on the verification threads too
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
        # PUBACK only once the batch is committed and its ack published: a bridge killed
        # before that gets the batch again from its session when it reconnects.
        client.manual_ack_set(True)
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_message = self._on_message
        self._client = client
        self._storer = threading.Thread(target=self._store_loop, name="bridge-store", daemon=True)
        self._storer.start()
        connect_async(client, self.settings, props, persistent=True)

    @property
    def client_id(self) -> str:
        return self._client_id

    def alive(self) -> bool:
        """The network loop thread runs (it reconnects by itself while it does).

        paho keeps that thread as ``_thread`` (paho-mqtt 2.x, pinned in constraints.txt).
        """
        thread = getattr(self._client, "_thread", None)
        return (thread is not None and thread.is_alive() and self._storer is not None
                and self._storer.is_alive())

    def wait_connected(self, timeout: float) -> bool:
        return self._connected.wait(timeout)

    def wait_subscribed(self, timeout: float) -> bool:
        """True once the broker confirmed this connection's subscriptions."""
        return self._subscribed.wait(timeout)

    def close(self) -> None:
        if self._client is not None:
            self._client.disconnect()
            self._client.loop_stop()
        if self._storer is not None:
            # What is queued is stored (its acks cannot go out any more: the broker hands
            # those messages over again, and storing is idempotent).
            try:
                self._pipeline.put(None, timeout=60)
                self._storer.join(timeout=60)
            except queue.Full:
                logger.error("the bridge's store thread did not take its queue: closing without it")
            self._storer = None
        self._pool.shutdown(wait=False, cancel_futures=True)

    def subscriptions(self) -> list[tuple[str, int]]:
        topics = [(records_filter(self.share_group), 1)]
        if self.follow_status:
            # Not shared: one consumer sees each station's status messages in order (an
            # "online" and the "offline" after it, handled by two workers, could be
            # written the wrong way round).
            topics.append((protocol.status_topic("+"), 1))
        return topics

    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.error("broker refused the bridge: %s", reason_code)
            return
        wanted = self.subscriptions()
        if flags.session_present:
            # A session kept from an older setup (a plain subscription before the group,
            # status followed by another member now) would deliver twice: drop it.
            stale = {records_filter(None), protocol.status_topic("+")} - {t for t, _ in wanted}
            client.unsubscribe(sorted(stale))
        client.subscribe(wanted)
        logger.info("bridge %s connected to %s:%d", self._client_id, self.settings.host, self.settings.port)
        self._connected.set()

    def _on_subscribe(self, client, userdata, mid, reason_codes, properties):
        failed = [str(rc) for rc in reason_codes if rc.is_failure]
        if failed:
            logger.error("broker refused the bridge's subscriptions: %s", ", ".join(failed))
            return
        # Never the topic filters: the shared group's name in them is the secret that
        # keeps stations out of the group (share_group_for), and logs travel further.
        logger.info("bridge %s subscribed to the stations' records (%s)%s", self._client_id,
                    "shared group" if self.share_group else "not shared",
                    " and status" if self.follow_status else "")
        self._subscribed.set()

    def _on_disconnect(self, *args):
        self._connected.clear()
        self._subscribed.clear()

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        """On paho's network thread: start the records' checks in the pool and queue the
        message for the store thread, which handles messages (status ones too) in
        arrival order, so PUBACKs leave in the order the PUBLISHes came."""
        station_id = protocol.station_from_topic(message.topic)
        check: Future | None = None
        if not (station_id and message.topic == protocol.status_topic(station_id)):
            check = self._pool.submit(self.check, message.topic, message.payload, split=False, from_station=True)
        self._pipeline.put((client, message, check))

    def _store_loop(self) -> None:
        while (item := self._pipeline.get()) is not None:
            client, message, check = item
            try:
                self._deliver(client, message, check)
            except Exception:  # the store thread must outlive any one message
                logger.exception("could not handle a message on %s", message.topic)
            finally:
                # Also after a failure: the broker would only hand a message back on the next
                # connection, while the station sends again within resend_after_s anyway.
                if message.qos:
                    client.ack(message.mid, message.qos)

    def _deliver(self, client, message: mqtt.MQTTMessage, check: Future | None) -> None:
        station_id = protocol.station_from_topic(message.topic)
        if check is None:
            try:
                self.fleet.record_status(station_id, message.payload)
            except Exception:
                logger.exception("could not record the status of %s", station_id)
            return
        started = time.perf_counter()
        try:
            ack = self.store(check.result())
        except Exception:
            # A database error: no ack, so the station sends again later. Never crash.
            logger.exception("could not store batch from %s", message.topic)
            return
        if ack is not None:
            client.publish(protocol.acks_topic(station_id), ack.to_bytes(), qos=1)
        logger.debug("batch on %s handled in %.1f ms", message.topic, (time.perf_counter() - started) * 1000)
