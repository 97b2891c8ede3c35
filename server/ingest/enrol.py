"""Enrolment: binding a new station to a venue with a single-use code, no secret typed.

1. Someone allowed to (operator, technician, venue owner or manager) asks for a code for
   a venue: a random token, stored only as its SHA-256, valid for a few minutes.
2. The code is shown as a QR: ``{"qrgate_enrol": 1, "url": <server>, "token": <token>}``.
3. The station reads it, makes its Ed25519 key on the device, and POSTs
   ``{"v": 1, "token": ..., "public_key": ..., "name": ...}`` to ``<server>/api/enrol``.
4. The server spends the token (once), creates the station's broker account (which may
   connect only under the client id ``station-<id>``; provisioning/broker.py), registers
   the public key, and answers with what the station needs: its id, venue, broker
   address, CA certificate, password and client id, and the server's keys.
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
import secrets
import time
from dataclasses import dataclass
from typing import Any

from provisioning.broker_accounts import is_reserved_username, station_client_id
from qrgate import protocol
from qrgate.errors import QrgateError, UserError
from server.venues.venues import is_row_id

logger = logging.getLogger(__name__)

HANDSHAKE_VERSION = 1
CODE_KEY = "qrgate_enrol"
MAX_MINUTES = 60
NAME_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,40}$")


VENUE_CLOSED = "Địa điểm đã đóng cửa: hãy mở lại địa điểm trước khi cài đặt trạm mới."


class EnrolError(QrgateError, ValueError):
    """A refused enrolment; ``status`` is the HTTP status to answer with."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.status = status


def _hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def enrol_code_text(url: str, token: str) -> str:
    """The text of the enrolment QR."""
    return json.dumps({CODE_KEY: HANDSHAKE_VERSION, "url": url.rstrip("/"), "token": token}, separators=(",", ":"))


@dataclass(frozen=True)
class EnrolSettings:
    """What the server hands out: where stations find the broker, and the server's keys."""

    mqtt_host: str
    mqtt_port: int
    ca_pem: str
    server_key: str
    pass_keys: tuple[str, ...]
    timezone: str = "Asia/Ho_Chi_Minh"  # [web] timezone: the calendar of a pass's dates


class Enrolment:
    """Enrolment tokens (table enrol_tokens) and the handshake."""

    def __init__(self, storage, broker=None, settings: EnrolSettings | None = None):
        self.storage = storage
        self.broker = broker  # provisioning.broker.BrokerFiles
        self.settings = settings
        db = storage.sql
        if not db.has_table("enrol_tokens"):
            db.schema("CREATE TABLE IF NOT EXISTS enrol_tokens (token_hash TEXT PRIMARY KEY, venue_id BIGINT,"
                      " created_ms BIGINT, expires_ms BIGINT, used_ms BIGINT, station_id TEXT, created_by TEXT)")

    def create_token(self, venue_id: int, *, minutes: float = 10, created_by: str = "",
                     now_ms: int | None = None) -> str:
        if not 1 <= minutes <= MAX_MINUTES:
            raise UserError(f"an enrolment code lives 1-{MAX_MINUTES} minutes, not {minutes}")
        if not is_row_id(venue_id) or self.storage.sql.one("SELECT 1 FROM venues WHERE id = ?", [venue_id]) is None:
            raise UserError(f"no venue with id {venue_id}")
        if self.is_closed(venue_id):
            raise UserError(VENUE_CLOSED)
        # Hex: a technician may type it into a shell, where a token starting with '-' (one
        # in 64 of URL-safe base64) reads as an option (`enroll --token -x...` failed).
        token = secrets.token_hex(24)
        now_ms = now_ms or int(time.time() * 1000)
        self.storage.sql.execute(
            "INSERT INTO enrol_tokens (token_hash, venue_id, created_ms, expires_ms, used_ms, station_id, created_by)"
            " VALUES (?, ?, ?, ?, NULL, NULL, ?)",
            [_hash(token), venue_id, now_ms, now_ms + int(minutes * 60_000), created_by])
        return token

    def is_closed(self, venue_id: int) -> bool:
        """A closed venue (server/venues/venues.py) takes no new stations."""
        db = self.storage.sql
        return "closed_ms" in db.columns("venues") and db.value(
            "SELECT closed_ms FROM venues WHERE id = ?", [venue_id]) is not None

    def enrol(self, request: Any, *, now_ms: int | None = None) -> dict[str, Any]:
        """Run the server side of the handshake; EnrolError if refused."""
        if self.broker is None or self.settings is None:
            raise EnrolError(503, "this server is not set up for enrolment ([broker] files_dir)")
        if not isinstance(request, dict):
            raise EnrolError(400, "the request must be a JSON object")
        version = request.get("v")
        if not isinstance(version, int) or isinstance(version, bool) or version < 1:
            raise EnrolError(400, "the request has no handshake version")
        if version > HANDSHAKE_VERSION:
            raise EnrolError(400, f"handshake version {version} is newer than this server knows ({HANDSHAKE_VERSION}):"
                                  " update the server")
        token, public_key, name = request.get("token"), request.get("public_key"), request.get("name", "")
        if not isinstance(token, str) or not isinstance(public_key, str) or not isinstance(name, str):
            raise EnrolError(400, "token, public_key and name must be text")
        try:
            protocol.public_key_from_text(public_key)
        except ValueError:
            raise EnrolError(400, "public_key is not a base64 Ed25519 key") from None
        now_ms = now_ms or int(time.time() * 1000)
        db = self.storage.sql
        row = db.one("SELECT venue_id, expires_ms, used_ms FROM enrol_tokens WHERE token_hash = ?", [_hash(token)])
        if row is None:
            raise EnrolError(403, "unknown enrolment code")
        venue_id, expires_ms, used_ms = row
        if used_ms is not None:
            raise EnrolError(403, "this enrolment code was already used: ask for a new one")
        if now_ms > expires_ms:
            raise EnrolError(403, "this enrolment code has expired: ask for a new one")
        if self.is_closed(venue_id):
            raise EnrolError(403, "the venue of this enrolment code is closed: reopen it, or ask for a code of"
                                  " another venue")
        station_id = self._station_id(name)
        # Spend the token first and only once, even if two stations race with it.
        spent = db.execute("UPDATE enrol_tokens SET used_ms = ?, station_id = ? WHERE token_hash = ? AND used_ms IS NULL",
                           [now_ms, station_id, _hash(token)])
        if spent != 1:
            raise EnrolError(403, "this enrolment code was already used: ask for a new one")
        # The broker account first: a registered station without one could never log in.
        try:
            password = self.broker.add_user(station_id)
        except (QrgateError, OSError) as exc:
            db.execute("UPDATE enrol_tokens SET used_ms = NULL, station_id = NULL WHERE token_hash = ?",
                       [_hash(token)])
            logger.error("enrolment of %s: the broker did not take its account (%s); the code still works",
                         station_id, exc)
            raise EnrolError(503, "the broker cannot take a new station right now: "
                                  "try the same code again in a minute") from None
        self.broker.reload()
        try:
            self.storage.add_station(station_id, public_key, venue_id)
        except Exception:
            try:
                self.broker.remove_user(station_id)
            except (QrgateError, OSError):
                logger.exception("could not delete the broker account of %s, which was not registered", station_id)
            raise
        venue = db.value("SELECT name FROM venues WHERE id = ?", [venue_id])
        logger.info("enrolled station %s at venue %d", station_id, venue_id)
        s = self.settings
        return {
            "v": HANDSHAKE_VERSION,
            "station_id": station_id,
            "venue": venue,
            "mqtt": {"host": s.mqtt_host, "port": s.mqtt_port, "ca_pem": s.ca_pem, "username": station_id,
                     "password": password, "client_id": station_client_id(station_id)},
            "server_key": s.server_key,
            "pass_keys": list(s.pass_keys),
            "timezone": s.timezone,
        }

    def rotate(self, request: Any, *, now_ms: int | None = None) -> dict[str, Any]:
        """A station's new key, vouched for by its current key; effective from ``from_seq``."""
        import base64

        from cryptography.exceptions import InvalidSignature

        if not isinstance(request, dict) or set(request) != {"v", "station_id", "new_public_key", "from_seq",
                                                               "ts_ms", "sig"}:
            raise EnrolError(400, "a key rotation has exactly v, station_id, new_public_key, from_seq, ts_ms, sig")
        if request["v"] != HANDSHAKE_VERSION:
            raise EnrolError(400, f"handshake version {request['v']!r} is not {HANDSHAKE_VERSION}")
        station_id, new_key, from_seq, ts_ms = (request["station_id"], request["new_public_key"],
                                                request["from_seq"], request["ts_ms"])
        if not (isinstance(station_id, str) and isinstance(new_key, str) and isinstance(from_seq, int)
                and isinstance(ts_ms, int) and from_seq >= 1):
            raise EnrolError(400, "station_id and new_public_key are text, from_seq and ts_ms whole numbers")
        info = self.storage.station(station_id)
        if info is None or info.status != "active":
            raise EnrolError(403, f"no active station {station_id!r}")
        history = self.storage.station_keys(station_id)
        if (from_seq, new_key) in history:
            return {"v": HANDSHAKE_VERSION, "station_id": station_id, "from_seq": from_seq}  # a retry: done already
        body = {k: v for k, v in request.items() if k != "sig"}
        try:
            protocol.public_key_from_text(new_key)
            current = protocol.public_key_from_text(info.public_key)
            current.verify(base64.b64decode(request["sig"], validate=True),
                           protocol.ROTATE_SIGNING_CONTEXT + protocol.canonical_json(body))
        except (InvalidSignature, ValueError, TypeError):
            raise EnrolError(403, "the rotation is not signed by the station's current key") from None
        now_ms = now_ms or int(time.time() * 1000)
        if abs(now_ms - ts_ms) > 10 * 60_000:
            raise EnrolError(403, "the rotation request is too old or from the future: check the station's clock")
        try:
            self.storage.rotate_station_key(station_id, new_key, from_seq)
        except UserError as exc:
            raise EnrolError(409, str(exc)) from None
        logger.info("station %s rotated its key from seq %d", station_id, from_seq)
        return {"v": HANDSHAKE_VERSION, "station_id": station_id, "from_seq": from_seq}

    def _station_id(self, name: str) -> str:
        """The name asked for, if free; else a random one. Never a name of the server's own
        broker accounts (``qrgate-...``): enrolled as ``qrgate-server``, a station would
        have replaced the server's account and been handed every station's records."""
        if name and NAME_RE.match(name) and not is_reserved_username(name) and self.storage.station(name) is None:
            return name
        while True:
            candidate = f"st-{secrets.token_hex(4)}"
            if self.storage.station(candidate) is None:
                return candidate


def enrolment_for(config, storage) -> Enrolment:
    """The enrolment service for a server configuration (keys made on first use)."""
    from provisioning.broker import BrokerFiles
    from provisioning.station import server_public_keys

    if config.broker_dir is None:
        return Enrolment(storage)
    files = BrokerFiles.open(config.broker_dir)
    pass_key, sealing_key = server_public_keys(config)
    settings = EnrolSettings(
        mqtt_host=config.broker.public_host or config.mqtt.host,
        mqtt_port=config.broker.public_port or config.mqtt.port,
        ca_pem=files.ca_cert.read_text(encoding="ascii"),
        server_key=sealing_key,
        pass_keys=(pass_key,),
        timezone=config.web.timezone,
    )
    return Enrolment(storage, files, settings)
