"""The station fleet: what each station last said about itself, reassigning and retiring.

Stations publish a retained status message on connect and a heartbeat every minute
(online, outbox backlog, clock state, firmware); the broker publishes their last will
(``online: false``) when a connection dies. The bridge records them here.

The self check-in source of a venue (server.selfcheckin: the server signs what people
declare on the poster's page) is stored as a pseudo-station but is not part of the
fleet: it never connects, cannot be moved or retired, and is left out of ``rows``.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from qrgate.errors import UserError
from server.storage.sql import code_point_order
from server.venues.venues import is_row_id

logger = logging.getLogger(__name__)

HEARTBEAT_S = 60
# A station whose last heartbeat is older than this is shown offline even if the broker
# has not noticed yet (a cut cable can take a keepalive period to detect).
STALE_AFTER_S = 3 * HEARTBEAT_S
MAX_BACKLOG = 2**63 - 1  # what a BIGINT holds; a larger "count" is stored as unknown


class Fleet:
    """Fleet state in the server database (tables station_status, station_events)."""

    def __init__(self, storage):
        self.storage = storage
        db = storage.sql
        if not (db.has_table("station_status") and db.has_table("station_events")):
            db.schema(
                """
                CREATE TABLE IF NOT EXISTS station_status (
                    station_id TEXT PRIMARY KEY, online BOOLEAN, backlog BIGINT, clock_synced BOOLEAN, fw TEXT,
                    fault TEXT, last_seen_ms BIGINT, status TEXT);
                CREATE TABLE IF NOT EXISTS station_events (
                    id {pk}, station_id TEXT, at_ms BIGINT, action TEXT, detail TEXT);
                """
            )

    def record_status(self, station_id: str, payload: bytes, now_ms: int | None = None) -> bool:
        """Store a status message; False if it is not one (ignored, logged)."""
        try:
            obj = json.loads(payload)
            if not isinstance(obj, dict) or not isinstance(obj.get("online"), bool):
                raise ValueError
        except (ValueError, UnicodeDecodeError):
            logger.warning("ignoring unreadable status from %s", station_id)
            return False
        if self.storage.station(station_id) is None:
            return False
        now_ms = now_ms or int(time.time() * 1000)
        self.storage.sql.execute(
            "INSERT INTO station_status (station_id, online, backlog, clock_synced, fw, fault, last_seen_ms, status)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id) DO UPDATE SET online = excluded.online,"
            " backlog = excluded.backlog, clock_synced = excluded.clock_synced, fw = excluded.fw,"
            " fault = excluded.fault, last_seen_ms = excluded.last_seen_ms, status = excluded.status",
            [station_id, obj["online"], _backlog(obj.get("backlog")), bool(obj.get("sync", False)),
             _short_text(obj.get("fw", "")), _short_text(obj.get("fault", "")), now_ms, json.dumps(obj)[:2000]],
        )
        return True

    def rows(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Every station with its venue and last known state, for the fleet page."""
        now_ms = now_ms or int(time.time() * 1000)
        db = self.storage.sql
        not_self = (" WHERE s.station_id NOT IN (SELECT station_id FROM self_stations)"
                    if db.has_table("self_stations") else "")
        rows = db.rows(
            "SELECT s.station_id, s.status, s.venue_id, v.name, t.online, t.backlog, t.clock_synced, t.fw,"
            " t.fault, t.last_seen_ms FROM stations s JOIN venues v ON v.id = s.venue_id"
            f" LEFT JOIN station_status t ON t.station_id = s.station_id{not_self}"
            # Station ids in code-point order on every engine (PostgreSQL would use the
            # database's collation, where "gate-9" and "gate1" may swap).
            f" ORDER BY {code_point_order(db, 's.station_id')}"
        )
        out = []
        for r in rows:
            last = r[9]
            online = bool(r[4]) and last is not None and now_ms - last < STALE_AFTER_S * 1000
            out.append({
                "station_id": r[0], "status": r[1], "venue_id": r[2], "venue": r[3], "online": online,
                "backlog": r[5], "clock_synced": bool(r[6]) if r[6] is not None else None, "fw": r[7] or "",
                "fault": r[8] or "", "last_seen_ms": last,
            })
        return out

    def self_checkin_venues(self) -> int:
        """How many venues take self check-ins (each has a pseudo-station, not in ``rows``)."""
        db = self.storage.sql
        return db.value("SELECT count(*) FROM self_stations", [], 0) if db.has_table("self_stations") else 0

    def is_self_checkin(self, station_id: str) -> bool:
        db = self.storage.sql
        return db.has_table("self_stations") and db.one(
            "SELECT 1 FROM self_stations WHERE station_id = ?", [station_id]) is not None

    def venue_choices(self) -> list[dict[str, Any]]:
        """Every venue a station may be moved to: id and name, by name."""
        return self.storage.sql.dicts("SELECT id, name FROM venues ORDER BY name")

    def reassign(self, station_id: str, venue_id: int) -> None:
        if self.storage.station(station_id) is None or self.is_self_checkin(station_id):
            raise UserError(f"no station {station_id!r}")
        if not is_row_id(venue_id) or self.storage.sql.one("SELECT 1 FROM venues WHERE id = ?", [venue_id]) is None:
            raise UserError(f"no venue with id {venue_id}")
        self.storage.sql.execute("UPDATE stations SET venue_id = ? WHERE station_id = ?", [venue_id, station_id])
        self._event(station_id, "qrgate.station.reassigned", f"venue {venue_id}")

    def retire(self, station_id: str) -> None:
        """From now on the station's records are refused (and counted).

        Its broker account is the caller's to delete (``BrokerFiles.remove_user``, as
        ``qrgate-provision retire`` and the fleet page do): that also closes the
        connection it has open, so it cannot send or read anything more, nor log in.
        """
        info = self.storage.station(station_id)
        if info is None or self.is_self_checkin(station_id):
            raise UserError(f"no station {station_id!r}")
        if info.status == "retired":
            raise UserError(f"station {station_id} is already retired")
        self.storage.sql.execute("UPDATE stations SET status = 'retired' WHERE station_id = ?", [station_id])
        self._event(station_id, "qrgate.station.retired", "")

    def events(self, station_id: str) -> list[dict[str, Any]]:
        return self.storage.sql.dicts(
            "SELECT at_ms, action, detail FROM station_events WHERE station_id = ? ORDER BY id", [station_id])

    def _event(self, station_id: str, action: str, detail: str) -> None:
        self.storage.sql.execute("INSERT INTO station_events (station_id, at_ms, action, detail) VALUES (?, ?, ?, ?)",
                                 [station_id, int(time.time() * 1000), action, detail])
        logger.info("%s %s %s", action, station_id, detail)


def _backlog(value: Any) -> int | None:
    """The outbox backlog a station reported; None (unknown) for anything but a count."""
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_BACKLOG:
        return value
    return None


def _short_text(value: Any) -> str:
    """A station's firmware or fault text as stored: printable characters only (a NUL
    cannot be stored on PostgreSQL), at most 32."""
    return "".join(ch for ch in str(value) if ch.isprintable())[:32]
