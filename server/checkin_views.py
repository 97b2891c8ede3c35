"""Check-ins of one venue as its members may see them: masked, newest first, with
self-declared and clock-corrected records marked."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from qrgate.masking import mask_birth, mask_id_number, mask_person_name


def venue_checkins(storage, venue_id: int, tz: ZoneInfo, limit: int = 100,
                   before_id: int | None = None) -> list[dict[str, Any]]:
    """The venue's latest check-ins, personal fields masked."""
    db = storage.db
    columns = set(db["checkins"].columns_dict)
    corrected = "c.time_corrected" if "time_corrected" in columns else "0"
    has_self = "self_stations" in db.table_names()
    self_flag = "(s.station_id IS NOT NULL)" if has_self else "0"
    join = "LEFT JOIN self_stations s ON s.station_id = c.station_id" if has_self else ""
    where = "c.venue_id = ?" + (" AND c.id < ?" if before_id else "")
    params: list[Any] = [venue_id, *([before_id] if before_id else []), limit]
    rows = db.execute(
        f"SELECT c.id, c.station_id, c.seq, c.direction, c.kind, c.id_number, c.name, c.birth, c.wall_ms,"
        f" c.clock_synced, {corrected} AS time_corrected, {self_flag} AS self_declared"
        f" FROM checkins c {join} WHERE {where} ORDER BY c.id DESC LIMIT ?", params,
    ).fetchall()
    out = []
    for (cid, station_id, seq, direction, kind, id_number, name, birth, wall_ms, synced, corrected_flag,
         self_declared) in rows:
        when = dt.datetime.fromtimestamp(wall_ms / 1000, tz)
        out.append({
            "id": cid, "station_id": station_id, "seq": seq, "direction": direction, "kind": kind,
            "name": mask_person_name(name or ""), "id_number": mask_id_number(id_number or ""),
            "birth": mask_birth(birth or ""), "time": when.isoformat(timespec="seconds"),
            "time_text": when.strftime("%d/%m/%Y %H:%M:%S"), "clock_synced": bool(synced),
            "time_corrected": bool(corrected_flag), "self_declared": bool(self_declared),
        })
    return out


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet will show as text: a leading =, +, -, @, tab, CR or NUL would
    make Excel or LibreOffice run it as a formula (OWASP CSV injection), so prefix '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "\x00") else text
