"""Weekly reports: the counts of one ISO week for a unit, an area, or a venue with what
is located within it. Counts only, never personal data.

Bac Kan's circular asks every unit for a weekly report on the installation and use of
the QR system, every Friday before 16:00, on a set template; docs/reports.md describes
the template these reports follow. A week runs Monday 00:00 to Sunday 24:00 in the
server's time zone, or up to the moment the report was made while it runs. Per day:
scans in and out, distinct people, people whose last scan of the day at a venue was an
entry, self-declared scans, scans whose time was corrected after the station's clock
synced, and scans whose time is uncertain (clock never synced). Then the installation
(venues registered, vehicles among them, venues with scans, stations working) and a line
per venue (a unit's report) or per unit (an area's report).

The files (CSV, PDF) are server.reports.report_files; the reports kept and e-mailed by
the schedule are server.reports.report_archive.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import asdict, dataclass, field, fields
from typing import Any
from zoneinfo import ZoneInfo

from server.phone.devices import phone_labels
from server.reports.units import VenueTree
from server.storage.sql import POSTGRESQL, SQLITE, in_list

COUNT_FIELDS = ("scans_in", "scans_out", "people", "without_exit", "self_declared", "clock_corrected",
                "time_uncertain")
RECENT_MS = 24 * 3600 * 1000  # a station in contact within this long before the report is "working"
SCOPES = ("unit", "venue", "area")  # a unit (its head), a venue within a unit, an officer's area


@dataclass(frozen=True)
class DayCounts:
    day: dt.date
    future: bool  # the day had not started when the report was made
    scans_in: int = 0
    scans_out: int = 0
    people: int = 0
    without_exit: int = 0
    self_declared: int = 0
    clock_corrected: int = 0
    time_uncertain: int = 0


@dataclass(frozen=True)
class StationLine:
    station_id: str
    status: str  # active / retired
    last_contact_ms: int | None
    scans: int
    venue: str = ""  # the name of the venue it scans for
    phone: int = 0  # a phone scanning as a station: its number ("Điện thoại số 3"), else 0


@dataclass(frozen=True)
class PlaceLine:
    """A line of the detail table: a venue of a unit, or a unit of an area."""

    id: int  # the venue's id (a unit: its head's)
    name: str
    kind: str  # the venue kind ("" for a unit)
    venues: int  # venues it stands for (a venue: 1; a unit: its venues inside the area)
    venues_active: int  # of which with a scan this week
    stations: int  # stations in service (not retired, not a self check-in page)
    scans_in: int
    scans_out: int
    people: int | None  # distinct people this week (None for a unit of an area: see docs)


@dataclass(frozen=True)
class WeeklyReport:
    scope: str  # one of SCOPES
    subject: str  # the head venue's id (unit, venue) or the area's code
    name: str
    address: str  # the venue's address, or the area's full name
    year: int
    week: int
    timezone: str
    made_ms: int
    until_ms: int  # data up to here (the end of the week, or when it was made)
    days: tuple[DayCounts, ...]
    people_week: int
    venues_registered: int = 0
    vehicles: int = 0
    venues_active: int = 0
    units: int = 0
    stations_active: int = 0
    stations_recent: int = 0
    places: tuple[PlaceLine, ...] = field(default=())
    stations: tuple[StationLine, ...] = field(default=())

    @property
    def venue_id(self) -> int:
        return int(self.subject) if self.scope != "area" else 0

    @property
    def first_day(self) -> dt.date:
        return self.days[0].day

    @property
    def last_day(self) -> dt.date:
        return self.days[-1].day

    def total(self, name: str) -> int:
        return sum(getattr(d, name) for d in self.days) if name != "people" else self.people_week

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["days"] = [{**asdict(d), "day": d.day.isoformat()} for d in self.days]
        out["totals"] = {name: self.total(name) for name in COUNT_FIELDS if name != "people"}
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> WeeklyReport:
        """The report back from ``as_dict`` (a kept report's numbers, frozen when made)."""
        known = {f.name for f in fields(cls)}
        values = {k: v for k, v in data.items() if k in known}
        values["days"] = tuple(DayCounts(**{**d, "day": dt.date.fromisoformat(d["day"])}) for d in data["days"])
        values["places"] = tuple(PlaceLine(**p) for p in data.get("places", ()))
        values["stations"] = tuple(StationLine(**s) for s in data.get("stations", ()))
        return cls(**values)


def week_of(when: dt.datetime) -> tuple[int, int]:
    iso = when.isocalendar()
    return iso.year, iso.week


def week_bounds(year: int, week: int, tz: ZoneInfo) -> list[dt.datetime]:
    """Midnight of each day of the ISO week and of the Monday after: 8 local times."""
    try:
        monday = dt.date.fromisocalendar(year, week, 1)
    except ValueError:
        raise ValueError(f"no ISO week {week} in {year}") from None
    return [dt.datetime.combine(monday + dt.timedelta(days=i), dt.time(), tz) for i in range(8)]


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


# -- the reports -----------------------------------------------------------------------

def build_weekly_report(storage, venue_id: int, year: int, week: int, tz: ZoneInfo, now_ms: int,
                        tree: VenueTree | None = None) -> WeeklyReport:
    """The report of a venue and every venue located within it: its unit's report when
    the venue is a unit's head (scope "unit"), else scope "venue"."""
    tree = tree or VenueTree.read(storage)
    if not (0 < venue_id < 2**63) or venue_id not in tree.venues:
        raise LookupError(f"no venue with id {venue_id}")
    head = tree.venues[venue_id]
    scope = "unit" if tree.is_head(venue_id) else "venue"
    return _build(storage, tree, scope, str(venue_id), head.name, head.address, tree.within(venue_id),
                  year, week, tz, now_ms, by_unit=False)


def build_area_report(storage, area_code: str, area_name: str, venue_ids: list[int], year: int, week: int,
                      tz: ZoneInfo, now_ms: int, tree: VenueTree | None = None) -> WeeklyReport:
    """The report of an area: every venue registered in it (``venue_ids``, as the
    officers' module selects them), with a line per unit."""
    tree = tree or VenueTree.read(storage)
    ids = [v for v in venue_ids if v in tree.venues]
    return _build(storage, tree, "area", area_code, area_name, area_name, ids, year, week, tz, now_ms,
                  by_unit=True)


def _build(storage, tree: VenueTree, scope: str, subject: str, name: str, address: str, venue_ids: list[int],
           year: int, week: int, tz: ZoneInfo, now_ms: int, by_unit: bool) -> WeeklyReport:
    db = storage.sql
    bounds = week_bounds(year, week, tz)
    has_self = db.has_table("self_stations")  # asked once, not for each of the seven days
    days = [_day(db, venue_ids, start, end, now_ms, has_self) for start, end in zip(bounds, bounds[1:])]
    lo, hi = _ms(bounds[0]), min(_ms(bounds[-1]), now_ms)
    hi = max(lo, hi)
    per_venue = _per_venue(db, venue_ids, lo, hi)
    found = _stations(db, tree, venue_ids, lo, hi)
    stations = [line for line, _ in found]
    working = [s for s in stations if s.status == "active"]
    stations_by_venue: dict[int, int] = {}
    for line, venue_id in found:
        if line.status == "active":
            stations_by_venue[venue_id] = stations_by_venue.get(venue_id, 0) + 1
    people_week = _people(db, venue_ids, lo, hi)
    if by_unit:
        places = _unit_lines(tree, venue_ids, per_venue, stations_by_venue)
    else:
        places = [PlaceLine(v, tree.venues[v].name, tree.venues[v].kind, 1, int(v in per_venue),
                            stations_by_venue.get(v, 0), *per_venue.get(v, (0, 0, 0))) for v in venue_ids]
    return WeeklyReport(
        scope=scope, subject=subject, name=name, address=address, year=year, week=week, timezone=tz.key,
        made_ms=now_ms, until_ms=hi, days=tuple(days), people_week=people_week,
        venues_registered=len(venue_ids), vehicles=sum(tree.venues[v].kind == "vehicle" for v in venue_ids),
        venues_active=len(per_venue), units=len(tree.units_of(venue_ids)), stations_active=len(working),
        stations_recent=sum(1 for s in working if s.last_contact_ms and s.last_contact_ms >= now_ms - RECENT_MS),
        places=tuple(places), stations=tuple(stations) if not by_unit else ())


def _day(db, venue_ids: list[int], start: dt.datetime, end: dt.datetime, now_ms: int, has_self: bool) -> DayCounts:
    lo, hi = _ms(start), min(_ms(end), now_ms)
    if lo >= now_ms:
        return DayCounts(start.date(), True)
    if not venue_ids:
        return DayCounts(start.date(), False)
    self_sum = "sum(CASE WHEN s.station_id IS NOT NULL THEN 1 ELSE 0 END)" if has_self else "0"
    join = "LEFT JOIN self_stations s ON s.station_id = c.station_id" if has_self else ""
    venues, params = in_list(db, "c.venue_id", venue_ids)
    # clock_synced and time_corrected are 0/1 on SQLite and booleans on PostgreSQL:
    # tested, never added up.
    row = db.one(
        "SELECT sum(CASE WHEN c.direction = 'in' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN c.direction = 'out' THEN 1 ELSE 0 END), count(DISTINCT c.person_key), "
        f"{self_sum}, sum(CASE WHEN c.time_corrected THEN 1 ELSE 0 END),"
        " sum(CASE WHEN NOT c.clock_synced AND NOT c.time_corrected THEN 1 ELSE 0 END)"
        f" FROM checkins c {join} WHERE {venues} AND c.wall_ms >= ? AND c.wall_ms < ?", [*params, lo, hi])
    venues, params = in_list(db, "venue_id", venue_ids)
    open_people = db.value(_LAST_SCAN_IS_ENTRY[db.dialect].format(venues=venues), [*params, lo, hi], 0)
    scans_in, scans_out, people, self_declared, corrected, uncertain = (int(v or 0) for v in row)
    return DayCounts(start.date(), False, scans_in, scans_out, people, int(open_people), self_declared, corrected,
                     uncertain)


# How many (venue, person) pairs have an entry as their last scan in [lo, hi). SQLite
# takes the bare column from the row holding the max; PostgreSQL picks that row with
# DISTINCT ON.
_LAST_SCAN_IS_ENTRY = {
    SQLITE: "SELECT count(*) FROM (SELECT direction, max(wall_ms) FROM checkins"
            " WHERE {venues} AND wall_ms >= ? AND wall_ms < ? GROUP BY venue_id, person_key) WHERE direction = 'in'",
    POSTGRESQL: "SELECT count(*) FROM (SELECT DISTINCT ON (venue_id, person_key) direction FROM checkins"
                " WHERE {venues} AND wall_ms >= ? AND wall_ms < ?"
                " ORDER BY venue_id, person_key, wall_ms DESC, id DESC) AS last WHERE direction = 'in'",
}


def _people(db, venue_ids: list[int], lo: int, hi: int) -> int:
    if not venue_ids:
        return 0
    venues, params = in_list(db, "venue_id", venue_ids)
    return int(db.value(f"SELECT count(DISTINCT person_key) FROM checkins WHERE {venues} AND wall_ms >= ?"
                        " AND wall_ms < ?", [*params, lo, hi], 0))


def _per_venue(db, venue_ids: list[int], lo: int, hi: int) -> dict[int, tuple[int, int, int]]:
    """(scans in, scans out, distinct people) of each venue with a scan in [lo, hi)."""
    if not venue_ids:
        return {}
    venues, params = in_list(db, "venue_id", venue_ids)
    rows = db.rows(
        "SELECT venue_id, sum(CASE WHEN direction = 'in' THEN 1 ELSE 0 END),"
        " sum(CASE WHEN direction = 'out' THEN 1 ELSE 0 END), count(DISTINCT person_key) FROM checkins"
        f" WHERE {venues} AND wall_ms >= ? AND wall_ms < ? GROUP BY venue_id", [*params, lo, hi])
    return {int(r[0]): (int(r[1] or 0), int(r[2] or 0), int(r[3] or 0)) for r in rows}


def _stations(db, tree: VenueTree, venue_ids: list[int], lo: int, hi: int) -> list[tuple[StationLine, int]]:
    """The stations of these venues (not the self check-in pages, whose scans are counted
    as self-declared) with their last contact and their scans of [lo, hi); each with the
    id of its venue."""
    if not venue_ids:
        return []
    has_status = db.has_table("station_status")
    seen = "(SELECT last_seen_ms FROM station_status t WHERE t.station_id = s.station_id)" if has_status else "NULL"
    not_self = ("AND s.station_id NOT IN (SELECT station_id FROM self_stations)"
                if db.has_table("self_stations") else "")
    venues, params = in_list(db, "s.venue_id", venue_ids)
    rows = db.rows(
        f"SELECT s.station_id, s.status, {seen},"
        " (SELECT max(received_ms) FROM checkins c WHERE c.station_id = s.station_id),"
        " (SELECT count(*) FROM checkins c WHERE c.station_id = s.station_id AND c.venue_id = s.venue_id"
        "  AND c.wall_ms >= ? AND c.wall_ms < ?), s.venue_id"
        f" FROM stations s WHERE {venues} {not_self}", [lo, hi, *params])
    lines = []
    phones = phone_labels(db, [r[0] for r in rows])
    # Sorted here, in code point order on both engines (PostgreSQL would use its collation).
    for station_id, status, seen_ms, received_ms, scans, venue_id in sorted(rows, key=lambda r: r[0]):
        last = max((v for v in (seen_ms, received_ms) if v), default=None)
        venue = tree.venues.get(int(venue_id))
        phone = phones.get(station_id, {}).get("number", 0)
        lines.append((StationLine(station_id, status or "active", last, int(scans), venue.name if venue else "",
                                  phone), int(venue_id)))
    return lines


def _unit_lines(tree: VenueTree, venue_ids: list[int], per_venue: dict, stations_by_venue: dict) -> list[PlaceLine]:
    """A line per unit with venues among ``venue_ids``: most scans first, then by name."""
    lines = []
    for head, members in tree.units_of(venue_ids).items():
        counts = [per_venue.get(v, (0, 0, 0)) for v in members]
        lines.append(PlaceLine(head, tree.venues[head].name, "", len(members), sum(v in per_venue for v in members),
                               sum(stations_by_venue.get(v, 0) for v in members), sum(c[0] for c in counts),
                               sum(c[1] for c in counts), None))
    return sorted(lines, key=lambda p: (-(p.scans_in + p.scans_out), p.name, p.id))
