"""Sends the outbox to the server over MQTT and forgets records only when the server acks.

A broker's PUBACK is not delivery: Mosquitto can lose a PUBACKed message in a crash. So
records stay in the outbox until the server's own ack (on the station's acks topic)
says they are stored; anything unacknowledged after ``resend_after_s`` or a reconnect is
sent again, and the server's idempotent store makes the repeat harmless.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path

import paho.mqtt.client as mqtt

from edge.queue.outbox import Outbox
from qrgate import __version__, protocol
from qrgate.config import MqttSettings
from qrgate.errors import RecordError
from qrgate.mqtt import connect_async, make_client
from qrgate.updates import RELEASES_TOPIC

logger = logging.getLogger(__name__)


class Publisher:
    """Background sender for one station's outbox.

    ``on_state(online, backlog)`` is called whenever either changes; it must not block.
    """

    def __init__(
        self,
        outbox: Outbox,
        settings: MqttSettings,
        base: Path,
        *,
        on_state: Callable[[bool, int], None] = lambda online, backlog: None,
        on_config: Callable[[bytes], None] = lambda payload: None,
        on_release: Callable[[bytes], None] = lambda payload: None,
        status_fields: Callable[[], dict] = dict,
        heartbeat_s: float = 60.0,
        batch_size: int = 200,
        max_inflight_batches: int = 8,
        resend_after_s: float = 15.0,
    ):
        self.outbox = outbox
        self.station_id = outbox.station_id
        self.settings = settings
        self._on_state = on_state
        self._on_config = on_config
        self._on_release = on_release
        self._status_fields = status_fields
        self.heartbeat_s = heartbeat_s
        self._last_status = 0.0
        self.batch_size = min(batch_size, protocol.MAX_RECORDS_PER_BATCH)
        self.max_inflight_batches = max_inflight_batches
        self.resend_after_s = resend_after_s
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._drained = threading.Condition()
        self._connected = False
        self._inflight: dict[int, tuple[set[int], float]] = {}  # first seq -> (seqs, sent at)
        self._sent_upto = 0
        self._lock = threading.Lock()
        will = (protocol.status_topic(self.station_id), self._status(False))
        self._client, self._props = make_client(
            f"station-{self.station_id}", settings, base, persistent=False, will=will
        )
        self._client.on_connect = self._on_connect
        self._client.on_disconnect = self._on_disconnect
        self._client.on_message = self._on_message
        self._thread = threading.Thread(target=self._run, name="publisher", daemon=True)
        self.acked = 0

    def thread_alive(self) -> bool:
        return self._thread.is_alive()

    @property
    def online(self) -> bool:
        return self._connected

    def _status(self, online: bool) -> bytes:
        if not online:  # the last will: written before anything is known
            return protocol.canonical_json({"online": False, "fw": __version__})
        return protocol.canonical_json(
            {**self._status_fields(), "online": True, "fw": __version__, "backlog": self.outbox.backlog()}
        )

    def _publish_status(self) -> None:
        self._last_status = time.monotonic()
        self._client.publish(protocol.status_topic(self.station_id), self._status(True), qos=1, retain=True)

    def start(self) -> None:
        connect_async(self._client, self.settings, self._props, persistent=False)
        self._thread.start()

    def wake(self) -> None:
        """A record was appended: send it now rather than at the next check."""
        self._wake.set()

    def close(self) -> None:
        self._closed.set()
        self._wake.set()
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        if self._connected:
            # A clean goodbye: the will is not sent on a normal disconnect.
            self._client.publish(protocol.status_topic(self.station_id), self._status(False), qos=1, retain=True)
        self._client.disconnect()
        self._client.loop_stop()

    def wait_drained(self, timeout: float) -> bool:
        """Block until every record in the outbox was acked by the server (or timeout)."""
        deadline = time.monotonic() + timeout
        with self._drained:
            while self.outbox.backlog():
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._drained.wait(left)
        return True

    # paho callbacks run on paho's network thread: keep them short.
    def _on_connect(self, client, userdata, flags, reason_code, properties):
        if reason_code.is_failure:
            logger.warning("broker %s:%d refused connection: %s", self.settings.host, self.settings.port, reason_code)
            return
        logger.info("connected to broker %s:%d", self.settings.host, self.settings.port)
        client.subscribe([(protocol.acks_topic(self.station_id), 1), (protocol.config_topic(self.station_id), 1),
                          (RELEASES_TOPIC, 1)])
        self._publish_status()
        with self._lock:
            self._connected = True
            self._inflight.clear()
            self._sent_upto = 0
        self._on_state(True, self.outbox.backlog())
        self._wake.set()

    def _on_disconnect(self, client, userdata, flags, reason_code, properties):
        if self._connected and not self._closed.is_set():
            logger.warning("lost broker connection: %s", reason_code)
        with self._lock:
            self._connected = False
        self._on_state(False, self.outbox.backlog())

    def _on_message(self, client, userdata, message: mqtt.MQTTMessage):
        if message.topic == protocol.config_topic(self.station_id):
            self._on_config(message.payload)
            return
        if message.topic == RELEASES_TOPIC:
            self._on_release(message.payload)  # edge/update/notice.py: a note for the updater
            return
        try:
            ack = protocol.Ack.from_bytes(message.payload)
        except RecordError as exc:
            logger.error("ignoring unreadable ack on %s: %s", message.topic, exc)
            return
        self.outbox.mark_stored(list(ack.stored))
        self.outbox.mark_refused(dict(ack.refused), int(time.time() * 1000))
        done = set(ack.stored) | set(ack.refused)
        with self._lock:
            self.acked += len(ack.stored)
            for first in list(self._inflight):
                seqs, _ = self._inflight[first]
                seqs -= done
                if not seqs:
                    del self._inflight[first]
        backlog = self.outbox.backlog()
        self._on_state(True, backlog)
        with self._drained:
            self._drained.notify_all()
        self._wake.set()

    def _run(self) -> None:
        while not self._closed.is_set():
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            if self._closed.is_set():
                break
            try:
                self._send_some()
                if self._connected and time.monotonic() - self._last_status >= self.heartbeat_s:
                    self._publish_status()
            except Exception:  # the sender must outlive any single failure
                logger.exception("publisher step failed; retrying")

    def _send_some(self) -> None:
        now = time.monotonic()
        with self._lock:
            if not self._connected:
                return
            if any(now - sent > self.resend_after_s for _, sent in self._inflight.values()):
                logger.warning("no ack for %ss: sending unacknowledged records again", self.resend_after_s)
                self._inflight.clear()
                self._sent_upto = 0
            room = self.max_inflight_batches - len(self._inflight)
            after = self._sent_upto
        while room > 0 and not self._closed.is_set():
            rows = self.outbox.pending(self.batch_size, after_seq=after)
            if not rows:
                return
            payload = protocol.encode_batch(body for _, body in rows)
            info = self._client.publish(protocol.records_topic(self.station_id), payload, qos=1)
            if info.rc != mqtt.MQTT_ERR_SUCCESS:
                logger.info("publish deferred (%s); will retry", mqtt.error_string(info.rc))
                return
            seqs = {seq for seq, _ in rows}
            after = rows[-1][0]
            with self._lock:
                self._inflight[rows[0][0]] = (seqs, time.monotonic())
                self._sent_upto = after
            room -= 1

