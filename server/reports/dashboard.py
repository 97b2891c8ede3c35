"""Area dashboards: venues registered, venues with scans and scans per local day, per
province and commune/ward of the 2025 map and per venue, read from the daily roll-up of
the check-ins that server.reports.rollup keeps (see there, and docs/dashboards.md).

Venues whose area is still an old three-level code (server/areas/areas.py) are not on
the 2025 map: the country's dashboard counts them apart, as one row "not converted yet",
until ``qrgate-server areas-migrate`` moves them.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from zoneinfo import ZoneInfo

from qrgate.errors import UserError
from server.areas.areas import Area, AreaDirectory
from server.areas.officers import VENUE_IS_CURRENT, VENUE_IS_LEGACY
from server.reports.rollup import DAY_MS, day_number, day_of_number, ensure_rollup

MAX_PERIOD_DAYS = 366
EARLIEST_DAY = dt.date(2000, 1, 1)
MAX_VENUE_ROWS = 1000  # venues listed on one ward's dashboard (the busiest first)
LEVELS = ("country", "province", "ward", "venue")
CURRENT_MAP = VENUE_IS_CURRENT.format(alias="v")
_ASCII_FOLD = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class DashboardError(UserError):
    """A request the dashboards cannot answer: an unknown area or a period out of bounds
    (the message, in Vietnamese, is shown on the page and in the API's ``detail``)."""


class UnknownArea(DashboardError, LookupError):
    """No area with this code in the areas file (or no such venue)."""


# -- periods -------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Period:
    """Local days ``since`` to ``until``, both included."""

    since: dt.date
    until: dt.date

    def __post_init__(self):
        if self.until < self.since:
            raise DashboardError("ngày cuối trước ngày đầu")
        if self.since < EARLIEST_DAY:
            raise DashboardError(f"khoảng thời gian không được bắt đầu trước ngày {EARLIEST_DAY:%d/%m/%Y}")
        if self.length > MAX_PERIOD_DAYS:
            raise DashboardError(f"tối đa {MAX_PERIOD_DAYS} ngày, không phải {self.length} ngày")

    @property
    def length(self) -> int:
        return (self.until - self.since).days + 1

    @property
    def first(self) -> int:
        return day_number(self.since)

    @property
    def last(self) -> int:
        return day_number(self.until)

    def end_ms(self, offset_s: int) -> int:
        """UTC ms of the local midnight that ends the period."""
        return (self.last + 1) * DAY_MS - offset_s * 1000

    def as_dict(self) -> dict:
        return {"since": self.since.isoformat(), "until": self.until.isoformat(), "days": self.length}


# -- areas ---------------------------------------------------------------------------


def area_path(areas: AreaDirectory, code: str) -> list[tuple[str, Area]]:
    """(level, area) from the province down to ``code``; UnknownArea if not on the map."""
    level = areas.level_of(code)
    if level == "province":
        return [("province", areas.provinces[code])]
    if level == "ward":
        ward = areas.wards[code]
        return [("province", areas.provinces[ward.parent]), ("ward", ward)]
    raise UnknownArea(f"no area with code {code[:40]!r}")


def _children(areas: AreaDirectory, level: str, code: str | None) -> tuple[str, list[Area]]:
    """The child level's venue column and its areas in the map's order."""
    if level == "country":
        return "province", list(areas.provinces.values())
    if level == "province":
        return "ward", areas.wards_of(code)
    return "venue", []


def _describe(level: str, area: Area | None) -> dict:
    return {"code": area.code if area else None, "level": level, "name": area.name if area else ""}


# -- the dashboards ------------------------------------------------------------------


def area_dashboard(storage, areas: AreaDirectory, area_code: str | None, since_day: dt.date,
                   until_day: dt.date, tz: ZoneInfo) -> dict:
    """One area's dashboard over local days ``since_day`` to ``until_day`` (included).

    ``area_code`` None is the whole country, one child per province. The answer (plain
    JSON types) has ``area``, ``path`` (province down to the area), ``period``,
    ``child_level`` (province / district / ward / venue), ``totals`` and ``children``
    (each: venues registered by the end of the period, venues with at least one scan in
    it, scans in it) and ``days`` (scans and venues with scans per local day, every day
    of the period). Venues whose code is not in the areas file are one child with code
    None. Raises UnknownArea or DashboardError.
    """
    period = Period(since_day, until_day)
    if area_code is None:
        level, path = "country", []
    else:
        path = area_path(areas, area_code)
        level = path[-1][0]
    offset_s = ensure_rollup(storage, tz)
    area = path[-1][1] if path else None
    where, params = (CURRENT_MAP, []) if area is None else (f"{CURRENT_MAP} AND v.{level} = ?", [area.code])
    child_level, child_areas = _children(areas, level, area.code if area else None)
    db = storage.sql
    end_ms = period.end_ms(offset_s)

    if child_level == "venue":
        children = _venue_children(db, where, params, period, end_ms)
    else:
        registered = dict(db.rows(
            f"SELECT v.{child_level}, count(*) FROM venues v WHERE {where} AND coalesce(v.created_ms, 0) < ?"
            f" GROUP BY v.{child_level}", [*params, end_ms]))
        activity = {r[0]: (r[1], r[2]) for r in db.rows(
            f"SELECT v.{child_level}, count(DISTINCT d.venue_id), sum(d.scans) FROM venues v"
            " JOIN dashboard_daily d ON d.venue_id = v.id AND d.day BETWEEN ? AND ? AND d.scans > 0"
            f" WHERE {where} GROUP BY v.{child_level}", [period.first, period.last, *params])}
        children = []
        known = set()
        for child in child_areas:
            known.add(child.code)
            active, scans = activity.get(child.code, (0, 0))
            children.append({"code": child.code, "name": child.name, "venues_registered": registered.get(child.code, 0),
                             "venues_with_scans": active, "scans": scans or 0})
        stray_codes = (set(registered) | set(activity)) - known
        if stray_codes:
            children.append({
                "code": None, "name": "",
                "venues_registered": sum(registered.get(c, 0) for c in stray_codes),
                "venues_with_scans": sum(activity.get(c, (0, 0))[0] for c in stray_codes),
                "scans": sum(activity.get(c, (0, 0))[1] or 0 for c in stray_codes),
            })
        if area is None:
            legacy = _legacy_row(db, period, end_ms)
            if legacy is not None:
                children.append(legacy)
    # The country's days count every venue, converted or not, as its rows do.
    day_where = "1 = 1" if area is None else where
    per_day = {r[0]: (r[1], r[2]) for r in db.rows(
        "SELECT d.day, sum(d.scans), count(*) FROM dashboard_daily d JOIN venues v ON v.id = d.venue_id"
        f" WHERE d.day BETWEEN ? AND ? AND d.scans > 0 AND {day_where} GROUP BY d.day",
        [period.first, period.last, *params])}
    totals = {key: sum(c[key] for c in children) for key in ("venues_registered", "venues_with_scans", "scans")}
    listed = len(children)
    children = children[:MAX_VENUE_ROWS]
    return {
        "area": _describe(level, area),
        "path": [_describe(lvl, a) for lvl, a in path],
        "period": period.as_dict(),
        "time_zone": tz.key,
        "utc_offset_s": offset_s,
        "child_level": child_level,
        "totals": totals,
        "children": children,
        "children_total": listed,  # before the cut at MAX_VENUE_ROWS venues
        "days": _days(period, per_day),
    }


def _legacy_row(db, period: Period, end_ms: int) -> dict | None:
    """Venues still on old codes, as one row of the country (code None, ``legacy``)."""
    legacy = VENUE_IS_LEGACY.format(alias="v")
    registered = db.value(f"SELECT count(*) FROM venues v WHERE {legacy} AND coalesce(v.created_ms, 0) < ?",
                          [end_ms], 0)
    row = db.one(f"SELECT count(DISTINCT d.venue_id), sum(d.scans) FROM venues v JOIN dashboard_daily d"
                 f" ON d.venue_id = v.id AND d.day BETWEEN ? AND ? AND d.scans > 0 WHERE {legacy}",
                 [period.first, period.last])
    active, scans = (row[0] or 0, row[1] or 0) if row else (0, 0)
    if not registered and not active:
        return None
    return {"code": None, "name": "", "legacy": True, "venues_registered": registered, "venues_with_scans": active,
            "scans": scans}


def _venue_children(db, where: str, params: list, period: Period, end_ms: int) -> list[dict]:
    rows = db.rows(
        "SELECT id, name, kind, scans, registered FROM (SELECT v.id, v.name, v.kind,"
        " (SELECT coalesce(sum(d.scans), 0) FROM dashboard_daily d WHERE d.venue_id = v.id"
        "  AND d.day BETWEEN ? AND ? AND d.scans > 0) AS scans, coalesce(v.created_ms, 0) < ? AS registered"
        f" FROM venues v WHERE {where}) AS listed WHERE registered OR scans > 0",
        [period.first, period.last, end_ms, *params])
    # Busiest first, then by name with ASCII letters folded (SQLite's NOCASE), the same
    # order whatever the database's collation.
    rows.sort(key=lambda r: (-r[3], (r[1] or "").translate(_ASCII_FOLD), r[0]))
    # A venue made after the period but with scans in it (clock trouble, generated
    # data) is listed, yet not counted as registered by the period's end.
    return [{"venue_id": r[0], "name": r[1] or "", "kind": r[2] or "", "venues_registered": int(r[4]),
             "venues_with_scans": 1 if r[3] > 0 else 0, "scans": r[3]} for r in rows]


def _days(period: Period, per_day: dict[int, tuple[int, int]]) -> list[dict]:
    return [{"day": day_of_number(n).isoformat(), "scans": per_day.get(n, (0, 0))[0],
             "venues_with_scans": per_day.get(n, (0, 0))[1]} for n in range(period.first, period.last + 1)]


def venue_dashboard(storage, areas: AreaDirectory, venue_id: int, since_day: dt.date, until_day: dt.date,
                    tz: ZoneInfo) -> dict:
    """One venue's scans per local day, with the path of its area; UnknownArea if no
    such venue."""
    period = Period(since_day, until_day)
    offset_s = ensure_rollup(storage, tz)
    db = storage.sql
    row = db.one("SELECT v.id, v.name, v.kind, v.province, v.district, v.ward, v.area_map FROM venues v"
                 " WHERE v.id = ?", [venue_id])
    if row is None:
        raise UnknownArea(f"no venue {venue_id}")
    path = []
    legacy = row[6] == "legacy"
    for code in (row[5], row[3]):
        if not legacy and code and areas.level_of(code):
            path = area_path(areas, code)
            break
    per_day = {r[0]: (r[1], 1) for r in db.rows(
        "SELECT day, scans FROM dashboard_daily WHERE venue_id = ? AND day BETWEEN ? AND ? AND scans > 0",
        [venue_id, period.first, period.last])}
    days = _days(period, per_day)
    return {
        "venue": {"id": row[0], "name": row[1] or "", "kind": row[2] or "", "province": row[3] or "",
                  "district": row[4] or "", "ward": row[5] or "", "area_needs_conversion": legacy},
        "path": [_describe(lvl, a) for lvl, a in path],
        "period": period.as_dict(),
        "time_zone": tz.key,
        "utc_offset_s": offset_s,
        "totals": {"scans": sum(d["scans"] for d in days), "days_with_scans": len(per_day)},
        "days": days,
    }
