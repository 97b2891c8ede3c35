"""Phones enrolled as stations: a venue's one-time enrolment code spent, the phone's
Ed25519 key registered as a station's under ``phone-<n>``, and the account that enrolled
it remembered, since its role at the venue is what keeps the phone working.

The code is the one a station takes (server/ingest/enrol.py, table ``enrol_tokens``);
a phone has no broker account (it speaks HTTPS, not MQTT), so it is spent here, with
the same rules: known, unused, unexpired, once. The phone's records are then verified
and stored by the bridge's own code (server/phone/service.py).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from qrgate import protocol
from qrgate.errors import QrgateError
from server.ingest.enrol import CODE_KEY, HANDSHAKE_VERSION, Enrolment
from server.ingest.stationconfig import StationConfigStore, StationSettings
from server.storage.sql import in_list

logger = logging.getLogger(__name__)

STATION_PREFIX = "phone-"
_TOKEN = re.compile(r"[0-9a-f]{48}", re.ASCII)


class PhoneEnrolError(QrgateError, ValueError):
    """A refused phone enrolment: ``status`` is the HTTP status, ``code`` names the
    reason (``unknown``, ``used``, ``expired``, ``other_venue``, ``closed``, ``bad_key``, ``bad_mode``)
    for the page to put in words."""

    def __init__(self, status: int, code: str, message: str):
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass(frozen=True, slots=True)
class PhoneDevice:
    """One enrolled phone: its station id and number, the venue it records for now (the
    fleet may move it), the account that enrolled it, and the station's status."""

    station_id: str
    number: int
    venue_id: int
    account_id: int
    created_ms: int
    status: str  # "active" or "retired" (the stations table)


def token_from_code(text: str) -> str:
    """The token of an enrolment code: the QR's JSON text (``{"qrgate_enrol":1,...}``) or
    the bare 48 hex digits; "" when it is neither."""
    text = (text or "").strip()
    if _TOKEN.fullmatch(text):
        return text
    try:
        code = json.loads(text)
    except ValueError:
        return ""
    if isinstance(code, dict) and code.get(CODE_KEY) == HANDSHAKE_VERSION and isinstance(code.get("token"), str):
        token = code["token"].strip()
        return token if _TOKEN.fullmatch(token) else ""
    return ""


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class PhoneDevices:
    """The ``phone_devices`` table beside the stations table, and phone enrolment.
    ``configs`` is the station settings store a new phone's mode is set in."""

    def __init__(self, storage, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.clock = clock
        self.configs = StationConfigStore(storage)
        self.enrolment = Enrolment(storage)  # its table, enrol_tokens, holds the codes a phone spends
        db = storage.sql
        if not db.has_table("phone_devices"):
            db.schema("CREATE TABLE IF NOT EXISTS phone_devices (id {pk}, station_id TEXT UNIQUE,"
                      " venue_id BIGINT NOT NULL, account_id BIGINT NOT NULL, created_ms BIGINT NOT NULL)")

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def enrol(self, token: str, public_key: str, venue_id: int, account_id: int,
              mode: str = "toggle") -> PhoneDevice:
        """Spend ``token`` (a code made for ``venue_id``) and register ``public_key`` as a
        new station ``phone-<n>`` bound to ``account_id``; its settings start with
        ``mode``. PhoneEnrolError says why not; a code refused for another venue stays
        unspent."""
        if mode not in protocol.MODES:
            raise PhoneEnrolError(400, "bad_mode", f"mode must be one of {', '.join(protocol.MODES)}")
        try:
            protocol.public_key_from_text(public_key)
        except (ValueError, TypeError):
            raise PhoneEnrolError(400, "bad_key", "public_key is not a base64 Ed25519 key") from None
        db = self.storage.sql
        now_ms = self._now_ms()
        token_hash = _hash(token)
        row = db.one("SELECT venue_id, expires_ms, used_ms FROM enrol_tokens WHERE token_hash = ?", [token_hash])
        if row is None:
            raise PhoneEnrolError(403, "unknown", "unknown enrolment code")
        code_venue, expires_ms, used_ms = row
        if used_ms is not None:
            raise PhoneEnrolError(403, "used", "this enrolment code was already used")
        if now_ms > expires_ms:
            raise PhoneEnrolError(403, "expired", "this enrolment code has expired")
        if code_venue != venue_id:
            raise PhoneEnrolError(403, "other_venue", "this enrolment code belongs to another venue")
        if self.enrolment.is_closed(venue_id):  # as for a station: a closed venue takes none
            raise PhoneEnrolError(403, "closed", "the venue of this enrolment code is closed")
        number = db.insert_id("INSERT INTO phone_devices (station_id, venue_id, account_id, created_ms)"
                              " VALUES (NULL, ?, ?, ?)", [venue_id, account_id, now_ms])
        station_id = f"{STATION_PREFIX}{number}"
        if self.storage.station(station_id) is not None:  # a station enrolled under that name by hand
            station_id = f"{STATION_PREFIX}{number}-{secrets.token_hex(3)}"
        # Spend the code once, even if a station and a phone race with it.
        spent = db.execute("UPDATE enrol_tokens SET used_ms = ?, station_id = ? WHERE token_hash = ?"
                           " AND used_ms IS NULL", [now_ms, station_id, token_hash])
        if spent != 1:
            db.execute("DELETE FROM phone_devices WHERE id = ?", [number])
            raise PhoneEnrolError(403, "used", "this enrolment code was already used")
        try:
            db.execute("UPDATE phone_devices SET station_id = ? WHERE id = ?", [station_id, number])
            self.storage.add_station(station_id, public_key, venue_id)
            self.configs.set_settings(station_id, StationSettings(mode=mode))
        except Exception:
            db.execute("UPDATE enrol_tokens SET used_ms = NULL, station_id = NULL WHERE token_hash = ?", [token_hash])
            db.execute("DELETE FROM phone_devices WHERE id = ?", [number])
            raise
        logger.info("enrolled phone %s at venue %d", station_id, venue_id)
        return PhoneDevice(station_id, number, venue_id, account_id, now_ms, "active")

    def get(self, station_id: str) -> PhoneDevice | None:
        """The phone with this station id (None: not a phone, or unknown). An id no station
        can have (a NUL byte, say, which PostgreSQL refuses in text) is unknown, never asked."""
        if not protocol.STATION_ID_RE.match(station_id):
            return None
        row = self.storage.sql.one(
            "SELECT p.station_id, p.id, s.venue_id, p.account_id, p.created_ms, s.status FROM phone_devices p"
            " JOIN stations s ON s.station_id = p.station_id WHERE p.station_id = ?", [station_id])
        return PhoneDevice(*row) if row else None

    def labels(self, station_ids: list[str]) -> dict[str, dict[str, Any]]:
        return phone_labels(self.storage.sql, station_ids)


def phone_labels(db, station_ids: list[str]) -> dict[str, dict[str, Any]]:
    """For history and exports: which of these stations are phones, with each one's number
    (``Điện thoại số 3``) and the phone number of the account that enrolled it."""
    if not station_ids or not db.has_table("phone_devices"):
        return {}
    condition, params = in_list(db, "p.station_id", sorted(set(station_ids)))
    return {r[0]: {"number": r[1], "account_phone": r[2] or ""} for r in db.rows(
        "SELECT p.station_id, p.id, a.phone FROM phone_devices p LEFT JOIN accounts a ON a.id = p.account_id"
        f" WHERE {condition}", params)}
