"""Settings and the block list the server pushes to each station (retained, signed).

A station's config message lives on ``qrgate/v1/stations/<id>/config``, retained, so a
station that connects (or reconnects after a week) gets the newest one at once. It is
signed with the server's Ed25519 key (the one stations already trust for personal
passes) under its own context, so nothing but the server can change a station's mind.

The block list is sent as salted SHA-256 hashes of person keys (e.g. "cccd:0240..."),
never the ids themselves. An entry may end (``until_ms``): a revoked personal pass is
refused by its own expiry date after that, so its entry leaves the list and the list
stays small over the years.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate import protocol
from qrgate.protocol import MODES
from qrgate.errors import UserError
from server.storage.sql import code_point_order
from server.venues.venues import is_row_id

logger = logging.getLogger(__name__)

MAX_PERSON_KEY = 200  # "pass:<id>" and the ID card keys are far shorter


@dataclass(frozen=True)
class StationSettings:
    mode: str = "toggle"
    repeat_window_s: float = 30.0
    anti_passback: bool = False
    auto_checkout_s: float = 14 * 3600.0

    def check(self) -> None:
        if self.mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if not 1 <= self.repeat_window_s <= 3600:
            raise UserError(f"repeat window must be 1-3600 s, got {self.repeat_window_s}")
        if not 60 <= self.auto_checkout_s <= 7 * 86400:
            raise UserError(f"automatic check-out must be 60 s to 7 days, got {self.auto_checkout_s}")


def blocked_hash(salt: bytes, person_key: str) -> str:
    return hashlib.sha256(salt + person_key.encode("utf-8")).hexdigest()


def sign_config(body: dict[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    sig = key.sign(protocol.CONFIG_SIGNING_CONTEXT + protocol.canonical_json(body))
    return {**body, "sig": base64.b64encode(sig).decode("ascii")}


class StationConfigStore:
    """Per-station settings and the block list, in the server database."""

    def __init__(self, storage):
        self.storage = storage
        db = storage.sql
        if not (db.has_table("station_settings") and db.has_table("blocklist")):
            db.schema(
                """
                CREATE TABLE IF NOT EXISTS station_settings (
                    station_id TEXT PRIMARY KEY, settings TEXT, version BIGINT, updated_ms BIGINT);
                CREATE TABLE IF NOT EXISTS blocklist (
                    person_key TEXT PRIMARY KEY, reason TEXT, added_ms BIGINT, until_ms BIGINT);
                """
            )
        db.ensure_column("blocklist", "until_ms", "BIGINT")  # files from before entries could end

    def settings(self, station_id: str) -> tuple[StationSettings, int]:
        row = self.storage.sql.one("SELECT settings, version FROM station_settings WHERE station_id = ?", [station_id])
        if row is None:
            return StationSettings(), 0
        return StationSettings(**json.loads(row[0])), row[1]

    def set_settings(self, station_id: str, settings: StationSettings) -> int:
        settings.check()
        if self.storage.station(station_id) is None:
            raise UserError(f"no station {station_id!r}")
        # One statement: two changes at once each get their own version.
        return self.storage.sql.value(
            "INSERT INTO station_settings (station_id, settings, version, updated_ms) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (station_id) DO UPDATE SET settings = excluded.settings,"
            " version = station_settings.version + 1, updated_ms = excluded.updated_ms RETURNING version",
            [station_id, json.dumps(asdict(settings)), int(time.time() * 1000)])

    def block(self, person_key: str, reason: str = "", until_ms: int | None = None) -> None:
        """Put a person on every station's block list; ``until_ms`` (None: for good) is when
        the entry may leave it."""
        if ":" not in person_key or len(person_key) > MAX_PERSON_KEY or not person_key.isprintable():
            raise UserError(f"person key must look like cccd:<12 digits>, bhxh:<10 digits> or pass:<id>, got {person_key!r}")
        if until_ms is not None and not is_row_id(until_ms):
            raise UserError(f"the end of a block must be a time in milliseconds, got {until_ms!r}")
        self.storage.sql.execute(
            "INSERT INTO blocklist (person_key, reason, added_ms, until_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (person_key) DO UPDATE SET reason = excluded.reason, added_ms = excluded.added_ms,"
            " until_ms = excluded.until_ms",
            [person_key, reason.replace("\x00", ""), int(time.time() * 1000), until_ms])

    def unblock(self, person_key: str) -> bool:
        return bool(self.storage.sql.execute("DELETE FROM blocklist WHERE person_key = ?", [person_key]))

    def blocked_keys(self, at_ms: int | None = None) -> list[str]:
        """Keys on the list at ``at_ms`` (default: now); ended entries are left out."""
        at_ms = at_ms if at_ms is not None else int(time.time() * 1000)
        return [r[0] for r in self.storage.sql.rows(
            "SELECT person_key FROM blocklist WHERE until_ms IS NULL OR until_ms > ?"
            f" ORDER BY {code_point_order(self.storage.sql, 'person_key')}", [at_ms])]

    def stations_of(self, venue_ids: list[int]) -> list[str]:
        """Active stations bound to any of the venues."""
        venue_ids = [v for v in venue_ids if is_row_id(v)]
        if not venue_ids:
            return []
        marks = ",".join("?" * len(venue_ids))
        # The server's own self check-in "stations" are not devices: nothing listens for a config.
        not_self = (" AND station_id NOT IN (SELECT station_id FROM self_stations)"
                    if self.storage.sql.has_table("self_stations") else "")
        return [r[0] for r in self.storage.sql.rows(
            f"SELECT station_id FROM stations WHERE status = 'active' AND venue_id IN ({marks}){not_self}"
            f" ORDER BY {code_point_order(self.storage.sql, 'station_id')}", list(venue_ids))]

    def build(self, station_id: str, key: Ed25519PrivateKey, *, now_ms: int | None = None) -> dict[str, Any]:
        """The signed config message for one station."""
        info = self.storage.station(station_id)
        if info is None:
            raise UserError(f"no station {station_id!r}")
        venue = self.storage.sql.one("SELECT name FROM venues WHERE id = ?", [info.venue_id])
        settings, version = self.settings(station_id)
        salt = os.urandom(16)
        now_ms = now_ms or int(time.time() * 1000)
        body = {
            "v": 1,
            "st": station_id,
            # Version grows with settings changes and with time, so a newer block list
            # always wins even when the settings did not change.
            "version": version * 10**13 + now_ms,
            "venue": venue[0] if venue else "",
            **asdict(settings),
            "blocked_salt": base64.b64encode(salt).decode("ascii"),
            "blocked": sorted(blocked_hash(salt, k) for k in self.blocked_keys(now_ms)),
        }
        return sign_config(body, key)

    def active_stations(self) -> list[str]:
        return [r[0] for r in self.storage.sql.rows(
            f"SELECT station_id FROM stations WHERE status = 'active' ORDER BY {code_point_order(self.storage.sql, 'station_id')}")]


def publish_configs(store: StationConfigStore, key: Ed25519PrivateKey, mqtt_settings, base: Path,
                    station_ids: list[str] | None = None, timeout: float = 15.0) -> int:
    """Publish retained configs for the given (default: all active) stations; return how many."""
    import threading

    from qrgate.mqtt import make_client

    ids = station_ids if station_ids is not None else store.active_stations()
    messages = [(protocol.config_topic(s), protocol.canonical_json(store.build(s, key))) for s in ids]
    if not messages:
        return 0
    client, props = make_client(f"qrgate-config-{os.getpid()}", mqtt_settings, base, persistent=False)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    client.connect(mqtt_settings.host, mqtt_settings.port, keepalive=mqtt_settings.keepalive, properties=props)
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise UserError(f"cannot reach the broker at {mqtt_settings.host}:{mqtt_settings.port}")
        infos = [client.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
    logger.info("published config to %d station(s)", len(messages))
    return len(messages)


class ConfigPublisher:
    """Publishes signed configs with the server's key and broker settings; the web UI
    calls it after a change that stations must learn at once (a revoked pass)."""

    def __init__(self, store: StationConfigStore, key: Ed25519PrivateKey, mqtt_settings, base: Path,
                 timeout: float = 15.0):
        self.store = store
        self.key = key
        self.mqtt_settings = mqtt_settings
        self.base = base
        self.timeout = timeout

    def publish(self, station_ids: list[str]) -> int:
        """Publish to these stations; UserError when the broker cannot be reached."""
        try:
            return publish_configs(self.store, self.key, self.mqtt_settings, self.base, station_ids, self.timeout)
        except OSError as exc:
            raise UserError(f"cannot reach the broker at {self.mqtt_settings.host}:{self.mqtt_settings.port}: "
                            f"{exc.strerror or exc}") from None
