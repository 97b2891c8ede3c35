"""Health officers: accounts that see check-ins in full, trace contacts and read the
dashboards, but only inside the administrative areas they were given.

An officer's area is a province or a commune/ward of the 2025 map (server/areas/areas.py);
it covers every venue registered in it. Operators grant and withdraw the role
(``qrgate-server officer-add`` / ``officer-remove``); both are audited. A grant made
before the 2025 map keeps its old code, marked ``legacy``: it still covers the venues that
hold the same old codes (and no venue of the new map, whose codes may be the same digits
with another meaning) until ``qrgate-server areas-migrate`` converts it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from qrgate.errors import UserError
from server.accounts.accounts import Accounts
from server.areas.areas import CURRENT, LEGACY, AreaDirectory, mark_legacy
from server.audit import AuditLog, register_actions
from server.web import i18n

register_actions("qrgate.officer.granted", "qrgate.officer.revoked")
i18n.register({}, history={
    "qrgate.officer.granted": ("Cấp quyền cán bộ y tế khu vực {area} cho {officer}",
                               "Made {officer} a health officer for {area}"),
    "qrgate.officer.revoked": ("Thu hồi quyền cán bộ y tế khu vực {area} của {officer}",
                               "Withdrew {officer}'s health-officer role for {area}"),
})


@dataclass(frozen=True, slots=True)
class OfficerArea:
    code: str
    level: str  # province / ward (legacy grants: province / district / ward)
    name: str
    legacy: bool = False  # an old three-level code, waiting for `areas-migrate`


# A venue row is on the legacy map when its area_map says so; any other value (the
# current map, or a row written without one) is the current map.
VENUE_IS_LEGACY = "coalesce({alias}.area_map, '') = 'legacy'"
VENUE_IS_CURRENT = "coalesce({alias}.area_map, '') <> 'legacy'"


class Officers:
    """Who is a health officer where, on the server's database."""

    def __init__(self, storage, areas: AreaDirectory, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.areas = areas
        self.clock = clock
        db = storage.sql
        existed = db.has_table("area_officers")
        db.schema(
            """
            CREATE TABLE IF NOT EXISTS area_officers (
                account_id BIGINT NOT NULL REFERENCES accounts(id), area_code TEXT NOT NULL,
                granted_ms BIGINT NOT NULL, area_map TEXT, PRIMARY KEY (account_id, area_code))
            """
        )
        if existed and "area_map" not in db.columns("area_officers"):
            mark_legacy(db, "area_officers", "1 = 1")  # every grant so far holds an old code

    def grant(self, accounts: Accounts, phone: str, area_code: str, audit: AuditLog | None = None,
              by=None) -> OfficerArea:
        """Make ``phone`` a health officer for a province or commune/ward of the 2025 map
        (replacing an old grant with the same digits, which meant another place)."""
        if self.areas.level_of(area_code) is None:
            raise UserError(f"no province or commune with code {area_code!r} on the map"
                            f" ({self.areas.source}): provinces have 2 digits, communes and wards 5")
        account = accounts.account_for_phone(phone)
        self.storage.sql.execute(
            "INSERT INTO area_officers (account_id, area_code, granted_ms, area_map) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (account_id, area_code) DO UPDATE SET area_map = excluded.area_map,"
            " granted_ms = excluded.granted_ms",
            [account.id, area_code, int(self.clock() * 1000), CURRENT])
        area = self._area(area_code, CURRENT)
        if audit is not None:
            audit.record("qrgate.officer.granted", account=by, officer=account.phone, area=area.name)
        return area

    def revoke(self, accounts: Accounts, phone: str, area_code: str, audit: AuditLog | None = None,
               by=None) -> bool:
        account = accounts.account_for_phone(phone)
        area_map = self.storage.sql.value("SELECT area_map FROM area_officers WHERE account_id = ? AND area_code = ?",
                                          [account.id, area_code])
        removed = self.storage.sql.execute("DELETE FROM area_officers WHERE account_id = ? AND area_code = ?",
                                           [account.id, area_code])
        if removed and audit is not None:
            audit.record("qrgate.officer.revoked", account=by, officer=account.phone,
                         area=self._area(area_code, area_map).name)
        return bool(removed)

    def _area(self, code: str, area_map: str | None) -> OfficerArea:
        """A granted code as words, read on the map the grant belongs to."""
        legacy = area_map == LEGACY
        table = self.areas.legacy if legacy else self.areas
        return OfficerArea(code, table.level_of(code) or "unknown", table.name_of(code) or code, legacy)

    def areas_of(self, account_id: int | None) -> list[OfficerArea]:
        """The areas this account is a health officer for (empty: not an officer)."""
        if account_id is None:
            return []
        # Area codes are digits: the same order under any collation.
        rows = self.storage.sql.rows(
            "SELECT area_code, area_map FROM area_officers WHERE account_id = ? ORDER BY area_code", [account_id])
        return [self._area(r[0], r[1]) for r in rows]

    def is_officer(self, account_id: int | None) -> bool:
        return bool(self.areas_of(account_id))

    def covers(self, account_id: int | None, venue) -> bool:
        """Is ``venue`` (with .province, .district, .ward, .area_map) inside one of the
        account's areas, on the map its codes belong to?"""
        venue_legacy = getattr(venue, "area_map", "") == LEGACY
        for a in self.areas_of(account_id):
            if a.legacy == venue_legacy and a.level in ("province", "district", "ward") \
                    and getattr(venue, a.level, "") == a.code:
                return True
        return False

    def venue_filter(self, account_id: int | None, alias: str = "v") -> tuple[str, list[str]]:
        """An SQL condition on the venues table (aliased ``alias``) selecting the venues
        this officer covers, with its parameters; matches nothing for a non-officer."""
        parts, params = [], []
        for a in self.areas_of(account_id):
            condition = _area_condition(a, alias)
            if condition:
                parts.append(condition)
                params.append(a.code)
        return ("(" + " OR ".join(parts) + ")") if parts else "1 = 0", params

    def venue_ids(self, account_id: int | None, area_code: str | None = None) -> list[int]:
        """Ids of the venues this officer covers (only inside ``area_code``, which must be
        one of their own areas, when given); empty for a non-officer or another area."""
        if area_code is None:
            cond, params = self.venue_filter(account_id, "v")
        else:
            area = next((a for a in self.areas_of(account_id) if a.code == area_code), None)
            cond = _area_condition(area, "v") if area is not None else ""
            if not cond:
                return []
            params = [area.code]
        return [r[0] for r in self.storage.sql.rows(f"SELECT v.id FROM venues v WHERE {cond} ORDER BY v.id", params)]


def _area_condition(area: OfficerArea, alias: str) -> str:
    """The venues inside one officer area, on the same map (one parameter: the code)."""
    levels = ("province", "district", "ward") if area.legacy else ("province", "ward")
    if area.level not in levels:
        return ""
    same_map = (VENUE_IS_LEGACY if area.legacy else VENUE_IS_CURRENT).format(alias=alias)
    return f"({same_map} AND {alias}.{area.level} = ?)"
