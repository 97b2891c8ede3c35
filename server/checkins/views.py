"""Check-ins as a role may see them: masked for venue roles and operators, in full for a
health officer inside their area; self-declared and clock-corrected records marked.

Every stored time can be shown: a station's clock may have said year 9999 or before
year 1, which no calendar date in the server's zone holds; such a time is shown as
INVALID_TIME, never as an error that takes the whole page down."""

from __future__ import annotations

import datetime as dt
from typing import Any
from zoneinfo import ZoneInfo

from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server.phone.devices import phone_labels

BIGINT_MAX = 2**63 - 1
INVALID_TIME = "thời gian không hợp lệ"  # "time not valid": a stored time no date holds


def venue_checkins(storage, venue_id: int, tz: ZoneInfo, limit: int = 100,
                   before_id: int | None = None) -> list[dict[str, Any]]:
    """The venue's latest check-ins, personal fields masked."""
    db = storage.sql
    # A file from before clock correction has no time_corrected column.
    corrected = "c.time_corrected" if "time_corrected" in db.columns("checkins") else "0"
    has_self = db.has_table("self_stations")
    self_flag = "(s.station_id IS NOT NULL)" if has_self else "0"
    join = "LEFT JOIN self_stations s ON s.station_id = c.station_id" if has_self else ""
    if before_id:
        before_id = min(before_id, BIGINT_MAX)  # every id is below; PostgreSQL refuses a larger number
    where = "c.venue_id = ?" + (" AND c.id < ?" if before_id else "")
    params: list[Any] = [venue_id, *([before_id] if before_id else []), limit]
    rows = db.rows(
        f"SELECT c.id, c.station_id, c.seq, c.direction, c.kind, c.id_number, c.name, c.birth, c.wall_ms,"
        f" c.clock_synced, {corrected} AS time_corrected, {self_flag} AS self_declared"
        f" FROM checkins c {join} WHERE {where} ORDER BY c.id DESC LIMIT ?", params,
    )
    out = []
    phones = phone_numbers(storage, {r[1] for r in rows})
    for (cid, station_id, seq, direction, kind, id_number, name, birth, wall_ms, synced, corrected_flag,
         self_declared) in rows:
        time_iso, time_text = when_texts(wall_ms, tz)
        out.append({
            "id": cid, "station_id": station_id, "seq": seq, "direction": direction, "kind": kind,
            "name": mask_person_name(name or ""), "id_number": mask_id_number(id_number or ""),
            "birth": mask_birth(birth or ""), "time": time_iso, "time_text": time_text, "clock_synced": bool(synced),
            "time_corrected": bool(corrected_flag), "self_declared": bool(self_declared),
            "phone_number": phones.get(station_id),
        })
    return out


def phone_numbers(storage, station_ids) -> dict[str, int]:
    """Which of these stations are phones, each with its number: a page says "Điện thoại
    số 3", never the station's id ``phone-3``."""
    return {station: label["number"] for station, label in phone_labels(storage.sql, list(station_ids)).items()}


def masked_phone(phone: str) -> str:
    """The number of the account that enrolled a phone with the middle hidden
    (0912•••419): enough for the venue to tell its staff apart, not a number to call."""
    return phone[:4] + "•" * max(len(phone) - 7, 0) + phone[-3:] if len(phone) > 7 else phone


def csv_cell(value: Any) -> str:
    """A cell a spreadsheet will show as text: a leading =, +, -, @, tab, CR or NUL would
    make Excel or LibreOffice run it as a formula (OWASP CSV injection), so prefix '."""
    text = "" if value is None else str(value)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r", "\x00") else text


def local_time(wall_ms: int, tz: ZoneInfo) -> dt.datetime | None:
    """``wall_ms`` as a time in ``tz``, or None when no date in years 1 to 9999 holds it."""
    try:
        return dt.datetime.fromtimestamp(wall_ms / 1000, tz)
    except (ValueError, OverflowError, OSError):
        return None


def when_texts(wall_ms: int, tz: ZoneInfo) -> tuple[str, str]:
    """(ISO 8601 with the offset, "dd/mm/yyyy hh:mm:ss") of a time in ``tz``; ("",
    INVALID_TIME) for a time no date holds. The text is cut from the ISO form: strftime
    cost as much again, for every row of every page."""
    try:
        iso = dt.datetime.fromtimestamp(wall_ms / 1000, tz).isoformat(timespec="seconds")  # YYYY-MM-DDThh:mm:ss+hh:mm
    except (ValueError, OverflowError, OSError):
        return "", INVALID_TIME
    return iso, f"{iso[8:10]}/{iso[5:7]}/{iso[:4]} {iso[11:19]}"


def present_checkin(row: dict[str, Any], tz: ZoneInfo, full: bool) -> dict[str, Any]:
    """A history row (server.checkins.history) for a screen or the API: personal fields in full
    only when ``full`` (a health officer inside their area), else masked."""
    time_iso, time_text = when_texts(row["wall_ms"], tz)
    name, id_number, birth = row["name"] or "", row["id_number"] or "", row["birth"] or ""
    if not full:
        name, id_number, birth = mask_person_name(name), mask_id_number(id_number), mask_birth(birth)
    return {
        "id": row["id"], "venue_id": row["venue_id"], "venue": row.get("venue", ""),
        "station_id": row["station_id"], "seq": row["seq"], "direction": row["direction"], "kind": row["kind"] or "",
        "name": name, "id_number": id_number, "birth": birth, "full": full,
        "time": time_iso, "time_text": time_text, "wall_ms": row["wall_ms"],
        "clock_synced": bool(row["clock_synced"]), "time_corrected": bool(row["time_corrected"]),
        "self_declared": bool(row.get("self_declared")),
        "phone": row.get("phone"),
    }


def present_visit(visit: dict[str, Any], tz: ZoneInfo, full: bool) -> dict[str, Any]:
    """A visit (server.checkins.history.visits_for_rows) shown like a check-in, with its span."""
    out = present_checkin(visit, tz, full)
    out["start"], out["start_text"] = when_texts(visit["start_ms"], tz)
    out["end"], out["end_text"] = when_texts(visit["end_ms"], tz)
    out.update(minutes=visit["minutes"], start_scanned=visit["start_scanned"], end_scanned=visit["end_scanned"])
    return out
