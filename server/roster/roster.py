"""Enterprise rosters: who is enrolled at a venue (the people it employs or enrols), and
who has not checked in today.

RosterStore keeps every venue's roster in the server database (table ``roster_people``).
An upload is read and checked first (server.roster.parsing: one bad row refuses the whole
file, so a roster is never half imported, docs/roster.md), then stored in one
transaction. What is kept: the employee number, the name, the department, the birth
year, the person key of the ID card (``cccd:<12 digits>`` or ``bhxh:<10 digits>``, the
same key the check-ins carry) and whether the person has a phone. The phone number itself
is not stored, nor the full BHYT card code.

Two modes: ``merge`` (default) adds new employee numbers and updates known ones;
``replace`` makes the roster exactly the file, and people who are no longer in it are
removed (their active passes are revoked by the caller, server.roster.passes).
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from qrgate.errors import UserError
from qrgate.masking import mask_id_number, mask_person_name
from server.roster.parsing import (MAX_ERRORS_SHOWN, MAX_UPLOAD_BYTES, RosterError, RosterRow, RowProblem,
                                   parse_roster, read_table, row_problem)
from server.storage.sql import code_point_order

# MAX_UPLOAD_BYTES is read from here by server.web.app (the upload's body limit).
__all__ = ["MAX_UPLOAD_BYTES", "MODES", "ImportResult", "RosterPerson", "RosterStore"]

MODES = ("merge", "replace")


def _fits_bigint(number: int) -> bool:
    return -(2**63) <= number < 2**63


@dataclass(frozen=True)
class RosterPerson:
    id: int
    venue_id: int
    employee_no: str
    name: str
    person_key: str
    birth_year: str
    department: str
    has_phone: bool

    def as_masked(self, full_name: bool) -> dict[str, Any]:
        """What a venue role sees: the ID number always masked, the name unless ``full_name``."""
        kind, _, number = self.person_key.partition(":")
        return {
            "id": self.id,
            "employee_no": self.employee_no,
            "name": self.name if full_name else mask_person_name(self.name),
            "id_kind": kind,
            "id_number": mask_id_number(number) if number else "",
            "birth_year": self.birth_year,
            "department": self.department,
            "has_phone": self.has_phone,
        }


@dataclass
class ImportResult:
    """What an upload did (or, with ``problems``, why it did nothing)."""

    rows: int = 0
    added: int = 0
    updated: int = 0
    unchanged: int = 0
    removed_ids: list[int] = field(default_factory=list)
    problems: list[RowProblem] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "rows": self.rows, "added": self.added, "updated": self.updated,
                "unchanged": self.unchanged, "removed": len(self.removed_ids),
                "problems": [{"row": p.row, "column": p.column, "code": p.code, "message": p.message}
                             for p in self.problems[:MAX_ERRORS_SHOWN]],
                "problems_total": len(self.problems)}


# -- storing --------------------------------------------------------------------------

_ROSTER_TABLE = """
    CREATE TABLE IF NOT EXISTS roster_people (
        id {id}, venue_id BIGINT NOT NULL, employee_no TEXT NOT NULL,
        employee_no_folded TEXT NOT NULL, name TEXT NOT NULL, person_key TEXT NOT NULL DEFAULT '',
        birth_year TEXT NOT NULL DEFAULT '', department TEXT NOT NULL DEFAULT '',
        has_phone BIGINT NOT NULL DEFAULT 0, updated_ms BIGINT NOT NULL);
    CREATE UNIQUE INDEX IF NOT EXISTS roster_people_number ON roster_people (venue_id, employee_no_folded);
    CREATE INDEX IF NOT EXISTS roster_people_key ON roster_people (venue_id, person_key)
"""


class _Refused(Exception):
    """Raised inside the import's transaction to roll it back with the file's problems."""


class RosterStore:
    """Rosters of all venues, in the server database (table ``roster_people``).

    Ids are never reused (SQLite's AUTOINCREMENT, PostgreSQL's identity): passes keep the
    id of a person who left, and it must not come to name somebody else."""

    def __init__(self, storage, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.db = storage.sql
        self.clock = clock
        if not self.db.has_table("roster_people"):
            self.db.schema({"sqlite": _ROSTER_TABLE.format(id="INTEGER PRIMARY KEY AUTOINCREMENT"),
                            "postgresql": _ROSTER_TABLE.format(id="{pk}")})

    @staticmethod
    def _person(row) -> RosterPerson:
        return RosterPerson(row[0], row[1], row[2], row[3], row[4], row[5], row[6], bool(row[7]))

    _COLUMNS = "id, venue_id, employee_no, name, person_key, birth_year, department, has_phone"

    def people(self, venue_id: int, offset: int = 0, limit: int | None = None) -> list[RosterPerson]:
        sql = (f"SELECT {self._COLUMNS} FROM roster_people WHERE venue_id = ?"
               f" ORDER BY {code_point_order(self.db, 'department')}, {code_point_order(self.db, 'employee_no_folded')}")
        params: list[Any] = [venue_id]
        if limit is not None:
            sql += " LIMIT ? OFFSET ?"
            params += [limit, offset]
        return [self._person(r) for r in self.db.rows(sql, params)]

    def count(self, venue_id: int) -> int:
        return self.db.value("SELECT count(*) FROM roster_people WHERE venue_id = ?", [venue_id], 0)

    def get(self, venue_id: int, person_id: int) -> RosterPerson | None:
        if not _fits_bigint(person_id):
            return None
        row = self.db.one(f"SELECT {self._COLUMNS} FROM roster_people WHERE venue_id = ? AND id = ?",
                          [venue_id, person_id])
        return self._person(row) if row else None

    def import_rows(self, venue_id: int, rows: list[RosterRow], mode: str = "merge") -> ImportResult:
        """Store checked rows in one transaction (see the module docstring for the modes)."""
        if mode not in MODES:
            raise UserError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
        result = ImportResult(rows=len(rows))
        now = int(self.clock() * 1000)
        db = self.db
        try:
            # One upload of a venue at a time: the read of the roster and the writes
            # after it must not interleave with another upload's.
            with db.transaction(serial=f"roster:{venue_id}"):
                self._import(db, venue_id, rows, mode, now, result)
        except _Refused:
            result.added = result.updated = result.unchanged = 0
            result.removed_ids.clear()
        return result

    def _import(self, db, venue_id: int, rows: list[RosterRow], mode: str, now: int, result: ImportResult) -> None:
        existing = {r[1]: r for r in db.rows(
            "SELECT id, employee_no_folded, employee_no, name, person_key, birth_year, department, has_phone"
            " FROM roster_people WHERE venue_id = ?", [venue_id])}
        in_file = set()
        if mode == "replace":
            # A person key may move from one employee number to another within the
            # file; delete the leavers first so the uniqueness check sees the new state.
            in_file = {row.employee_no.upper() for row in rows}
            for folded, old in existing.items():
                if folded not in in_file:
                    db.execute("DELETE FROM roster_people WHERE id = ?", [old[0]])
                    result.removed_ids.append(old[0])
        for row in rows:
            folded = row.employee_no.upper()
            values = (row.employee_no, row.name, row.person_key, row.birth_year, row.department, int(row.has_phone))
            old = existing.get(folded)
            if old is None:
                db.execute(
                    "INSERT INTO roster_people (venue_id, employee_no, employee_no_folded, name, person_key,"
                    " birth_year, department, has_phone, updated_ms) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                    [venue_id, row.employee_no, folded, *values[1:], now])
                result.added += 1
            elif tuple(old[2:]) == values:
                result.unchanged += 1
            else:
                db.execute(
                    "UPDATE roster_people SET employee_no = ?, name = ?, person_key = ?, birth_year = ?,"
                    " department = ?, has_phone = ?, updated_ms = ? WHERE id = ?", [*values, now, old[0]])
                result.updated += 1
        # In merge mode an ID number may now sit on two employee numbers (one from the
        # file, one kept from before): that is one person twice, so refuse the file.
        keys = [r[0] for r in db.rows(
            "SELECT person_key FROM roster_people WHERE venue_id = ? AND person_key != ''"
            f" GROUP BY person_key HAVING count(*) > 1 ORDER BY {code_point_order(db, 'person_key')} LIMIT 5",
            [venue_id])]
        if not keys:
            return
        numbers_of: dict[str, list[str]] = {key: [] for key in keys}
        for key, number in db.rows(
                f"SELECT person_key, employee_no FROM roster_people WHERE venue_id = ?"
                f" AND person_key IN ({','.join('?' * len(keys))}) ORDER BY id", [venue_id, *keys]):
            numbers_of[key].append(number)
        by_number = {row.employee_no.upper(): row.row for row in rows}
        for key in keys:
            rows_hit = [by_number[n.upper()] for n in numbers_of[key] if n.upper() in by_number]
            result.problems.append(row_problem(min(rows_hit) if rows_hit else 0, "id_number", "on_roster_id",
                                            numbers=", ".join(numbers_of[key])))
        raise _Refused

    def upload(self, venue_id: int, data: bytes, filename: str = "", mode: str = "merge",
               this_year: int | None = None) -> ImportResult:
        """Read, check and store a file; with problems, nothing is stored."""
        if mode not in MODES:
            raise RosterError("bad_mode")
        year = this_year or dt.datetime.fromtimestamp(self.clock()).year
        rows, problems = parse_roster(read_table(data, filename), year)
        if problems:
            return ImportResult(rows=len(rows) + len(problems), problems=problems)
        return self.import_rows(venue_id, rows, mode)

    def venue_tree(self, venue_id: int) -> list[int]:
        """The venue and every venue or vehicle located within it, at any depth."""
        return [r[0] for r in self.db.rows(
            """WITH RECURSIVE tree(id) AS (
                   SELECT CAST(? AS BIGINT) UNION SELECT v.id FROM venues v JOIN tree ON v.parent_id = tree.id)
               SELECT id FROM tree""", [venue_id])]

    def person_keys_seen(self, venue_ids: list[int], since_ms: int) -> set[str]:
        """Distinct person keys of check-ins at these venues since ``since_ms``."""
        marks = ",".join("?" * len(venue_ids))
        return {r[0] for r in self.db.rows(
            f"SELECT DISTINCT person_key FROM checkins WHERE venue_id IN ({marks}) AND wall_ms >= ?",
            [*venue_ids, since_ms])}

    def absent_today(self, venue_id: int, tz: ZoneInfo, now: float | None = None,
                     pass_keys: dict[int, list[str]] | None = None) -> tuple[list[RosterPerson], dt.datetime]:
        """Roster people with no check-in at the venue (or a venue within it) since local
        midnight, matched by their ID person key and the keys of passes issued to them
        (``pass_keys``: person id -> ["pass:<pid>", ...]). Returns them and the midnight."""
        now = self.clock() if now is None else now
        local = dt.datetime.fromtimestamp(now, tz)
        midnight = local.replace(hour=0, minute=0, second=0, microsecond=0)
        # fold/zone: a local midnight exists every day in Vietnam; replace() keeps tz.
        since_ms = int(midnight.timestamp() * 1000)
        present = self.person_keys_seen(self.venue_tree(venue_id), since_ms)
        absent = []
        for person in self.people(venue_id):
            keys = set(pass_keys.get(person.id, ())) if pass_keys else set()
            if person.person_key:
                keys.add(person.person_key)
            if not keys & present:
                absent.append(person)
        return absent, midnight
