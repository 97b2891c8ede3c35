"""The station fleet: what each station last said about itself, reassigning and retiring.

Stations publish a retained status message on connect and a heartbeat every minute
(online, outbox backlog, clock state, firmware); the broker publishes their last will
(``online: false``) when a connection dies. The bridge records them here.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from qrgate.errors import UserError

logger = logging.getLogger(__name__)

HEARTBEAT_S = 60
# A station whose last heartbeat is older than this is shown offline even if the broker
# has not noticed yet (a cut cable can take a keepalive period to detect).
STALE_AFTER_S = 3 * HEARTBEAT_S


class Fleet:
    """Fleet state in the server database (tables station_status, station_events)."""

    def __init__(self, storage):
        self.storage = storage
        db = storage.db
        if "station_status" not in db.table_names():
            db["station_status"].create(
                {"station_id": str, "online": bool, "backlog": int, "clock_synced": bool, "fw": str,
                 "fault": str, "last_seen_ms": int, "status": str},
                pk="station_id",
            )
        if "station_events" not in db.table_names():
            db["station_events"].create(
                {"id": int, "station_id": str, "at_ms": int, "action": str, "detail": str}, pk="id"
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
        backlog = obj.get("backlog")
        self.storage.db["station_status"].upsert(
            {
                "station_id": station_id,
                "online": obj["online"],
                "backlog": backlog if isinstance(backlog, int) and backlog >= 0 else None,
                "clock_synced": bool(obj.get("sync", False)),
                "fw": str(obj.get("fw", ""))[:32],
                "fault": str(obj.get("fault", ""))[:32],
                "last_seen_ms": now_ms,
                "status": json.dumps(obj)[:2000],
            },
            pk="station_id",
        )
        return True

    def rows(self, now_ms: int | None = None) -> list[dict[str, Any]]:
        """Every station with its venue and last known state, for the fleet page."""
        now_ms = now_ms or int(time.time() * 1000)
        rows = self.storage.db.execute(
            "SELECT s.station_id, s.status, s.venue_id, v.name, t.online, t.backlog, t.clock_synced, t.fw,"
            " t.fault, t.last_seen_ms FROM stations s JOIN venues v ON v.id = s.venue_id"
            " LEFT JOIN station_status t ON t.station_id = s.station_id ORDER BY s.station_id"
        ).fetchall()
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

    def reassign(self, station_id: str, venue_id: int) -> None:
        if self.storage.station(station_id) is None:
            raise UserError(f"no station {station_id!r}")
        if self.storage.db["venues"].count_where("id = ?", [venue_id]) == 0:
            raise UserError(f"no venue with id {venue_id}")
        self.storage.db.execute("UPDATE stations SET venue_id = ? WHERE station_id = ?", [venue_id, station_id])
        self._event(station_id, "qrgate.station.reassigned", f"venue {venue_id}")

    def retire(self, station_id: str) -> None:
        """From now on the station's records are refused (and counted) and it cannot log in."""
        info = self.storage.station(station_id)
        if info is None:
            raise UserError(f"no station {station_id!r}")
        if info.status == "retired":
            raise UserError(f"station {station_id} is already retired")
        self.storage.db.execute("UPDATE stations SET status = 'retired' WHERE station_id = ?", [station_id])
        self._event(station_id, "qrgate.station.retired", "")

    def events(self, station_id: str) -> list[dict[str, Any]]:
        return [dict(r) for r in self.storage.db.query(
            "SELECT at_ms, action, detail FROM station_events WHERE station_id = ? ORDER BY id", [station_id])]

    def _event(self, station_id: str, action: str, detail: str) -> None:
        self.storage.db["station_events"].insert(
            {"station_id": station_id, "at_ms": int(time.time() * 1000), "action": action, "detail": detail}
        )
        logger.info("%s %s %s", action, station_id, detail)
