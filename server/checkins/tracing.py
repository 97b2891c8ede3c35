"""Contact tracing: a person's visits, and everyone whose presence overlapped them.

Check-ins become visits per venue: an entry followed by an exit (within a day) is one
visit; an entry with no exit lasts ``default_stay_s``; an exit with no entry started ``default_stay_s``
before it; a station that only records one direction makes visits of the default length.
A vehicle is a venue, so a bus trip is one place. Two visits are contacts when they
overlap at the same venue once the traced person's visit is widened by ``margin_s``.

The answer is the one a pairing of every check-in in the table would give, but the
queries read only what can matter, through the (person_key, wall_ms, id) and
(venue_id, wall_ms, id) indexes, which carry the venue or person and the direction so
that a trace on SQLite reads no table row until the contacts' names: the person's own
scans around the range, and per visit the venue's scans in its window plus the few
scans just outside it that complete a visit crossing the window's edges (see
``Tracer._scans_around``).
"""

from __future__ import annotations

import json
import time
from collections import defaultdict
from collections.abc import Collection
from dataclasses import dataclass, field
from typing import Any

from server.storage.sql import SQLITE

DAY_MS = 86_400_000
# An exit more than a day after an entry does not close it: the exit scan of that visit
# was missed, and the entry lasts the default stay. (A 24-hour hospital shift still pairs.)
MAX_VISIT_MS = DAY_MS
# What a trace reads of the scans around a visit; a contact's name and card are read once
# at the end, for the contacts only (at a big factory most rows read are not contacts' last).
CONTACT_COLUMNS = "person_key, venue_id, direction, wall_ms, id"


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
    checkin_id: int = 0  # one of their check-ins at a shared venue: where a further trace starts
    kind: str = ""
    id_number: str = ""
    birth: str = ""

    def as_dict(self) -> dict[str, Any]:
        return {"person_key": self.person_key, "name": self.name, "overlap_minutes": round(self.overlap_ms / 60000, 1),
                "venues": sorted(self.venues), "first_contact_ms": self.first_ms, "checkin_id": self.checkin_id,
                "kind": self.kind, "id_number": self.id_number, "birth": self.birth}


def visits_from_checkins(rows: list[tuple[str, int, str, int]], default_stay_ms: int) -> list[Visit]:
    """Pair (person_key, venue_id, direction, wall_ms) rows into visits (see the module's
    rules; scans at the same instant are taken entry first, whatever order they came in)."""
    by_place: dict[tuple[str, int], list[tuple[int, str]]] = defaultdict(list)
    for person, venue, direction, wall in rows:
        by_place[(person, venue)].append((wall, direction))
    visits = [Visit(person, venue, start, end, estimated)
              for (person, venue), scans in by_place.items()
              for start, end, estimated in paired(scans, default_stay_ms)]
    visits.sort(key=lambda v: (v.start_ms, v.venue_id))
    return visits


def paired(scans: list[tuple[int, str]], default_stay_ms: int) -> list[tuple[int, int, bool]]:
    """One person's visits at one venue as (start_ms, end_ms, estimated), from their
    (wall_ms, direction) scans there, which this sorts in place: by time, and at one
    instant the entry first ("in" sorts before "out")."""
    scans.sort()
    visits: list[tuple[int, int, bool]] = []
    open_at: int | None = None
    for wall, direction in scans:
        if direction == "in":
            if open_at is not None:  # entered again without an exit: close the first
                visits.append((open_at, min(wall, open_at + default_stay_ms), True))
            open_at = wall
        else:
            if open_at is not None and wall - open_at <= MAX_VISIT_MS:
                visits.append((open_at, wall, False))
            else:
                if open_at is not None:  # an exit days later is not this entry's
                    visits.append((open_at, open_at + default_stay_ms, True))
                visits.append((wall - default_stay_ms, wall, True))
            open_at = None
    if open_at is not None:
        visits.append((open_at, open_at + default_stay_ms, True))
    return visits


def overlap_ms(a: Visit, b: Visit, margin_ms: int) -> int:
    """How long ``b`` was present during ``a`` widened by the margin on both sides (the
    traced person may have lingered, or the scans may lag the real arrival)."""
    start = max(a.start_ms - margin_ms, b.start_ms)
    end = min(a.end_ms + margin_ms, b.end_ms)
    return max(0, end - start)


class Tracer:
    """Runs traces against the server database.

    Its five queries (below) are SQLite's, through ``storage.sql``: a bare column beside
    max() and json_each are what make them fast there. ``PostgresTracer``
    (server/checkins/postgres_tracer.py) writes the same five with DISTINCT ON and
    arrays; ``tracer_for`` picks the one for a storage.
    """

    def __init__(self, storage):
        self.storage = storage

    def trace(self, person_key: str, start_ms: int, end_ms: int, *, margin_s: int = 900,
              default_stay_s: int = 3600, venue_ids: Collection[int] | None = None) -> dict[str, Any]:
        """The person's visits in [start, end) and their contacts, most overlap first.

        ``venue_ids`` limits the trace to those venues (a health officer's area): visits
        elsewhere are only counted (``visits_elsewhere``) and nobody met there is listed.
        The answer is the one pairing every check-in of the table would give.
        """
        stay, margin = default_stay_s * 1000, margin_s * 1000
        # A visit touching [start, end) has its scans within MAX_VISIT_MS of it: read that
        # much around, so every visit pairs as it would over the whole table.
        own = self._person_scans(person_key, start_ms - stay - MAX_VISIT_MS, end_ms + stay + MAX_VISIT_MS)
        visits = [v for v in visits_from_checkins(own, stay) if v.end_ms > start_ms and v.start_ms < end_ms]
        allowed = None if venue_ids is None else set(venue_ids)
        elsewhere = sum(1 for v in visits if allowed is not None and v.venue_id not in allowed)
        visits = [v for v in visits if allowed is None or v.venue_id in allowed]
        contacts: dict[str, Contact] = {}
        seen: dict[str, tuple] = {}
        for visit in visits:
            # overlap_ms() of each of the others' visits, on plain tuples: a Visit for
            # every one of them cost about 20 ms of a mean trace of 180-250 ms.
            lo, hi = visit.start_ms - margin, visit.end_ms + margin  # the traced visit, widened
            for key, scans in self._scans_around(visit, margin, stay, person_key, seen).items():
                shared, began = 0, hi
                for start, end, _ in paired(scans, stay):
                    start = start if start > lo else lo
                    end = end if end < hi else hi
                    if end > start:
                        shared += end - start
                        began = start if start < began else began  # when they were first together
                if not shared:
                    continue
                c = contacts.get(key)
                if c is None:
                    c = contacts[key] = Contact(key, "", first_ms=began, checkin_id=seen[key][4])
                elif began < c.first_ms:
                    c.first_ms = began
                c.overlap_ms += shared
                c.venues.add(visit.venue_id)
        details = self._checkin_details([c.checkin_id for c in contacts.values()])
        for c in contacts.values():
            c.name, c.kind, c.id_number, c.birth = (value or "" for value in details.get(c.checkin_id, ("",) * 4))
        ranked = sorted(contacts.values(), key=lambda c: (-c.overlap_ms, c.person_key))
        return {
            "person_key": person_key,
            "from_ms": start_ms,
            "to_ms": end_ms,
            "margin_s": margin_s,
            "default_stay_s": default_stay_s,
            "visits": [{"venue_id": v.venue_id, "start_ms": v.start_ms, "end_ms": v.end_ms, "estimated": v.estimated}
                       for v in visits],
            "visits_elsewhere": elsewhere,
            "contacts": [c.as_dict() for c in ranked],
        }

    # -- the queries (server/storage/postgres.py overrides these five for PostgreSQL) -

    def _person_scans(self, person_key: str, lo: int, hi: int) -> list[tuple]:
        """(person_key, venue_id, direction, wall_ms) of the person in [lo, hi], in time order."""
        return self.storage.sql.rows(
            "SELECT person_key, venue_id, direction, wall_ms FROM checkins"
            " WHERE person_key = ? AND wall_ms >= ? AND wall_ms <= ? ORDER BY wall_ms", [person_key, lo, hi])

    def _venue_window(self, venue: int, lo: int, hi: int, person_key: str) -> list[tuple]:
        """Everyone else's scans at the venue in [lo, hi] with CONTACT_COLUMNS, in time order."""
        return self.storage.sql.rows(
            f"SELECT {CONTACT_COLUMNS} FROM checkins WHERE venue_id = ? AND wall_ms >= ? AND wall_ms <= ?"
            " AND person_key != ? ORDER BY wall_ms, id", [venue, lo, hi, person_key])

    def _last_scans(self, venue: int, lo: int, hi: int, person_key: str) -> list[tuple[str, str, int]]:
        """The other people whose last scan at the venue in [lo, hi) is an entry, as
        (person_key, "in", wall_ms); at one instant an exit counts as later than an entry,
        as in the pairing."""
        return [(k, d, w) for k, d, w, _ in self.storage.sql.rows(
            "SELECT person_key, direction, wall_ms, max(wall_ms * 2 + (direction = 'out')) FROM checkins"
            " WHERE venue_id = ? AND wall_ms >= ? AND wall_ms < ? AND person_key != ? GROUP BY person_key"
            " HAVING direction = 'in'", [venue, lo, hi, person_key])]

    def _nearest_scans(self, keys: list[str], venue: int, bounds: str, params: list[int],
                       pick: str) -> list[tuple]:
        """For each of ``keys``, its latest (``pick="max"``) or earliest (``"min"``) scan at the
        venue within ``bounds`` (``"wall_ms < ? AND wall_ms >= ?"`` or ``"wall_ms > ? AND
        wall_ms <= ?"``), with CONTACT_COLUMNS; ties as in the pairing."""
        return [r[:5] for r in self.storage.sql.rows(
            f"SELECT {CONTACT_COLUMNS}, {pick}(wall_ms * 2 + (direction = 'out')) FROM checkins"
            f" WHERE person_key IN (SELECT value FROM json_each(?)) AND +venue_id = ? AND {bounds}"
            " GROUP BY person_key", [json.dumps(keys), venue, *params])]

    def _checkin_details(self, ids: list[int]) -> dict[int, tuple[str, str, str, str]]:
        """(name, kind, id_number, birth) of these check-ins, by id."""
        if not ids:
            return {}
        return {r[0]: tuple(r[1:]) for r in self.storage.sql.rows(
            "SELECT id, name, kind, id_number, birth FROM checkins WHERE id IN (SELECT value FROM json_each(?))",
            [json.dumps(ids)])}

    def _scans_around(self, visit: Visit, margin: int, stay: int, person_key: str,
                      seen: dict[str, tuple]) -> dict[str, list[tuple[int, str]]]:
        """Everyone else's scans at the visit's venue that make up the visits able to
        overlap it, as (wall_ms, direction) lists by person_key (for :func:`paired`).

        A visit overlapping [start - margin, end + margin] either has a scan in the window
        [start - margin - stay, end + margin + stay], or it is an entry before the window
        paired with an exit after it. So: the window's scans; for a person whose first scan
        there is an exit, their scan just before (the entry it closes); for a person whose
        last scan there is an entry, their scan just after (the exit); and for a person with
        no scan in the window, an entry before it followed by an exit after it.
        """
        venue = visit.venue_id
        lo, hi = visit.start_ms - margin - stay, visit.end_ms + margin + stay
        rows = self._venue_window(venue, lo, hi, person_key)
        scans: dict[str, list[tuple[int, str]]] = {}
        first: dict[str, tuple] = {}
        last: dict[str, tuple] = {}
        for r in rows:
            key = r[0]
            if key in scans:
                scans[key].append((r[3], r[2]))
            else:
                scans[key] = [(r[3], r[2])]
                first[key] = r
            last[key] = r
        seen.update(last)
        # An exit whose entry is before the window: that entry only changes the overlap
        # (against the default stay before the exit) when the exit is late enough; the
        # same for an entry whose exit is after the window. Look up only those.
        before = [k for k, r in first.items() if r[2] == "out" and r[3] - stay > visit.start_ms - margin]
        after = [k for k, r in last.items() if r[2] == "in" and r[3] + stay < visit.end_ms + margin]
        # Each person's last scan before the window (an exit wins a tie, as in the
        # pairing); an entry there, with no scan in the window, may still be open.
        inside = {k: (direction, wall) for k, direction, wall in self._last_scans(venue, hi - MAX_VISIT_MS, lo,
                                                                                   person_key)
                  if k not in first and direction == "in"}
        # The scan just before the window of those whose first scan in it is an exit, and
        # the scan just after it of those whose last scan is an entry or who were inside
        # (ties as in the pairing: at one instant the entry comes first).
        for keys, bounds, params, pick in (
                (before, "wall_ms < ? AND wall_ms >= ?", [lo, lo - MAX_VISIT_MS], "max"),
                (after + list(inside), "wall_ms > ? AND wall_ms <= ?", [hi, hi + MAX_VISIT_MS], "min")):
            if not keys:
                continue
            for r in self._nearest_scans(keys, venue, bounds, params, pick):
                key = r[0]
                if key in inside:
                    if r[2] != "out":
                        continue
                    scans[key] = [(inside[key][1], "in")]
                    seen[key] = r[:5]
                scans[key].append((r[3], r[2]))
        return scans


def delete_older_than(storage, days: int, *, now_ms: int | None = None) -> int:
    """Retention: delete check-ins older than ``days`` days; return how many went."""
    if days < 1:
        raise ValueError("retention must keep at least one day")
    own = getattr(storage, "delete_older_than", None)  # PostgreSQL drops whole partitions
    if own is not None:
        return own(days, now_ms=now_ms)
    cutoff = (now_ms or int(time.time() * 1000)) - days * DAY_MS
    with storage.sql.transaction() as db:
        return db.execute("DELETE FROM checkins WHERE wall_ms < ?", [cutoff])


def tracer_for(storage) -> Tracer:
    """The tracer that reads this storage's check-ins: on PostgreSQL its own queries
    (server/checkins/postgres_tracer.py), elsewhere this module's."""
    if storage.sql.dialect != SQLITE:
        from server.checkins.postgres_tracer import PostgresTracer  # psycopg is an optional extra

        return PostgresTracer(storage)
    return Tracer(storage)
