"""Health officers: accounts that see check-ins in full, trace contacts and read the
dashboards, but only inside the administrative areas they were given.

An officer's area is a province, a district or a ward code from the areas file; it
covers every venue registered in that area or below it. Operators grant and withdraw
the role (``qrgate-server officer-add`` / ``officer-remove``); both are audited.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from qrgate.errors import UserError
from server.accounts.accounts import Accounts
from server.areas.areas import AreaDirectory
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
    level: str  # province / district / ward
    name: str


class Officers:
    """Who is a health officer where, on the server's database."""

    def __init__(self, storage, areas: AreaDirectory, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.areas = areas
        self.clock = clock
        storage.sql.schema(
            """
            CREATE TABLE IF NOT EXISTS area_officers (
                account_id BIGINT NOT NULL REFERENCES accounts(id), area_code TEXT NOT NULL,
                granted_ms BIGINT NOT NULL, PRIMARY KEY (account_id, area_code))
            """
        )

    def level_of(self, code: str) -> str | None:
        for level, table in (("province", self.areas.provinces), ("district", self.areas.districts),
                             ("ward", self.areas.wards)):
            if code in table:
                return level
        return None

    def grant(self, accounts: Accounts, phone: str, area_code: str, audit: AuditLog | None = None,
              by=None) -> OfficerArea:
        level = self.level_of(area_code)
        if level is None:
            raise UserError(f"no area with code {area_code!r} in the areas file")
        account = accounts.account_for_phone(phone)
        self.storage.sql.execute(
            "INSERT INTO area_officers (account_id, area_code, granted_ms) VALUES (?, ?, ?)"
            " ON CONFLICT (account_id, area_code) DO NOTHING",
            [account.id, area_code, int(self.clock() * 1000)])
        area = self._area(area_code)
        if audit is not None:
            audit.record("qrgate.officer.granted", account=by, officer=account.phone, area=area.name)
        return area

    def revoke(self, accounts: Accounts, phone: str, area_code: str, audit: AuditLog | None = None,
               by=None) -> bool:
        account = accounts.account_for_phone(phone)
        removed = self.storage.sql.execute("DELETE FROM area_officers WHERE account_id = ? AND area_code = ?",
                                           [account.id, area_code])
        if removed and audit is not None:
            audit.record("qrgate.officer.revoked", account=by, officer=account.phone,
                         area=self._area(area_code).name)
        return bool(removed)

    def _area(self, code: str) -> OfficerArea:
        level = self.level_of(code) or "unknown"
        table = {"province": self.areas.provinces, "district": self.areas.districts, "ward": self.areas.wards}
        area = table.get(level, {}).get(code)
        return OfficerArea(code, level, area.name if area else code)

    def areas_of(self, account_id: int | None) -> list[OfficerArea]:
        """The areas this account is a health officer for (empty: not an officer)."""
        if account_id is None:
            return []
        # Area codes are digits: the same order under any collation.
        rows = self.storage.sql.rows(
            "SELECT area_code FROM area_officers WHERE account_id = ? ORDER BY area_code", [account_id])
        return [self._area(r[0]) for r in rows]

    def is_officer(self, account_id: int | None) -> bool:
        return bool(self.areas_of(account_id))

    def covers(self, account_id: int | None, venue) -> bool:
        """Is ``venue`` (with .province, .district, .ward) inside one of the account's areas?"""
        codes = {a.code for a in self.areas_of(account_id)}
        return bool(codes) and bool(codes & {venue.province, venue.district, venue.ward} - {""})

    def venue_filter(self, account_id: int | None, alias: str = "v") -> tuple[str, list[str]]:
        """An SQL condition on the venues table (aliased ``alias``) selecting the venues
        this officer covers, with its parameters; matches nothing for a non-officer."""
        areas = self.areas_of(account_id)
        if not areas:
            return "1 = 0", []
        parts, params = [], []
        for a in areas:
            column = {"province": "province", "district": "district", "ward": "ward"}.get(a.level)
            if column:
                parts.append(f"{alias}.{column} = ?")
                params.append(a.code)
        return ("(" + " OR ".join(parts) + ")") if parts else "1 = 0", params

    def venue_ids(self, account_id: int | None, area_code: str | None = None) -> list[int]:
        """Ids of the venues this officer covers (only inside ``area_code``, which must be
        one of their own areas, when given); empty for a non-officer or another area."""
        if area_code is None:
            cond, params = self.venue_filter(account_id, "v")
        else:
            area = next((a for a in self.areas_of(account_id) if a.code == area_code), None)
            if area is None or area.level not in ("province", "district", "ward"):
                return []
            cond, params = f"v.{area.level} = ?", [area.code]
        return [r[0] for r in self.storage.sql.rows(f"SELECT v.id FROM venues v WHERE {cond} ORDER BY v.id", params)]
