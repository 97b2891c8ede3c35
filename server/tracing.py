"""Contact tracing: a person's visits, and everyone whose presence overlapped them.

Check-ins become visits per venue: an entry followed by an exit is one visit; an entry
with no exit lasts ``default_stay_s``; an exit with no entry started ``default_stay_s``
before it; a station that only records one direction makes visits of the default length.
A vehicle is a venue, so a bus trip is one place. Two visits are contacts when they
overlap at the same venue once the traced person's visit is widened by ``margin_s``.

The queries use the (person_key, wall_ms) and (venue_id, wall_ms) indexes, so tracing
touches only the days and venues it needs.
"""

from __future__ import annotations

import time
from collections import defaultdict
from dataclasses import dataclass, field
from typing import Any

DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Visit:
    person_key: str
    venue_id: int
    start_ms: int
    end_ms: int
    estimated: bool  # one end of the visit is the default stay, not a scan


@dataclass
class Contact:
    person_key: str
    name: str
    overlap_ms: int = 0
    venues: set[int] = field(default_factory=set)
    first_ms: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"person_key": self.person_key, "name": self.name, "overlap_minutes": round(self.overlap_ms / 60000, 1),
                "venues": sorted(self.venues), "first_contact_ms": self.first_ms}


def visits_from_checkins(rows: list[tuple[str, int, str, int]], default_stay_ms: int) -> list[Visit]:
    """Pair (person_key, venue_id, direction, wall_ms) rows, in time order, into visits."""
    by_place: dict[tuple[str, int], list[tuple[str, int]]] = defaultdict(list)
    for person, venue, direction, wall in rows:
        by_place[(person, venue)].append((direction, wall))
    visits: list[Visit] = []
    for (person, venue), scans in by_place.items():
        scans.sort(key=lambda s: s[1])
        open_at: int | None = None
        for direction, wall in scans:
            if direction == "in":
                if open_at is not None:  # entered again without an exit: close the first
                    visits.append(Visit(person, venue, open_at, min(wall, open_at + default_stay_ms), True))
                open_at = wall
            else:
                if open_at is not None and wall - open_at <= 2 * DAY_MS:
                    visits.append(Visit(person, venue, open_at, wall, False))
                else:
                    visits.append(Visit(person, venue, wall - default_stay_ms, wall, True))
                open_at = None
        if open_at is not None:
            visits.append(Visit(person, venue, open_at, open_at + default_stay_ms, True))
    visits.sort(key=lambda v: (v.start_ms, v.venue_id))
    return visits


def overlap_ms(a: Visit, b: Visit, margin_ms: int) -> int:
    """How long ``b`` was present during ``a`` widened by the margin on both sides (the
    traced person may have lingered, or the scans may lag the real arrival)."""
    start = max(a.start_ms - margin_ms, b.start_ms)
    end = min(a.end_ms + margin_ms, b.end_ms)
    return max(0, end - start)


class Tracer:
    """Runs traces against the server database."""

    def __init__(self, storage):
        self.storage = storage

    def trace(self, person_key: str, start_ms: int, end_ms: int, *, margin_s: int = 900,
              default_stay_s: int = 3600) -> dict[str, Any]:
        """The person's visits in [start, end) and their contacts, most overlap first."""
        stay, margin = default_stay_s * 1000, margin_s * 1000
        db = self.storage.db
        own = db.execute(
            "SELECT person_key, venue_id, direction, wall_ms FROM checkins"
            " WHERE person_key = ? AND wall_ms >= ? AND wall_ms < ? ORDER BY wall_ms",
            [person_key, start_ms - stay, end_ms + stay],
        ).fetchall()
        visits = [v for v in visits_from_checkins(own, stay) if v.end_ms > start_ms and v.start_ms < end_ms]
        contacts: dict[str, Contact] = {}
        names: dict[str, str] = {}
        for visit in visits:
            lo, hi = visit.start_ms - margin - stay, visit.end_ms + margin + stay
            rows = db.execute(
                "SELECT person_key, venue_id, direction, wall_ms, name FROM checkins"
                " WHERE venue_id = ? AND wall_ms >= ? AND wall_ms <= ? AND person_key != ?",
                [visit.venue_id, lo, hi, person_key],
            ).fetchall()
            for r in rows:
                names[r[0]] = r[4]
            for other in visits_from_checkins([r[:4] for r in rows], stay):
                shared = overlap_ms(visit, other, margin)
                if shared <= 0:
                    continue
                c = contacts.setdefault(other.person_key, Contact(other.person_key, names.get(other.person_key, "")))
                c.overlap_ms += shared
                c.venues.add(visit.venue_id)
                c.first_ms = min(c.first_ms or other.start_ms, other.start_ms)
        ranked = sorted(contacts.values(), key=lambda c: (-c.overlap_ms, c.person_key))
        return {
            "person_key": person_key,
            "from_ms": start_ms,
            "to_ms": end_ms,
            "margin_s": margin_s,
            "default_stay_s": default_stay_s,
            "visits": [{"venue_id": v.venue_id, "start_ms": v.start_ms, "end_ms": v.end_ms, "estimated": v.estimated}
                       for v in visits],
            "contacts": [c.as_dict() for c in ranked],
        }


def delete_older_than(storage, days: int, *, now_ms: int | None = None) -> int:
    """Retention: delete check-ins older than ``days`` days; return how many went."""
    if days < 1:
        raise ValueError("retention must keep at least one day")
    cutoff = (now_ms or int(time.time() * 1000)) - days * DAY_MS
    conn = storage.db.conn
    conn.execute("BEGIN IMMEDIATE")
    try:
        deleted = conn.execute("DELETE FROM checkins WHERE wall_ms < ?", [cutoff]).rowcount
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    return deleted
