"""Moving venues and health officers from old three-level area codes to the 2025 map
(``qrgate-server areas-migrate``), from a mapping file of old code -> new code.

A ward line (five digits) moves every venue and every ward-level officer grant holding
that old ward to the new commune/ward; the venue's province follows from it. A province
line (two digits) moves officers' province grants only. District grants have no place on
the new map: they are listed, for the operator to grant the new areas by hand. Only rows
marked as holding old codes are touched, each once (the mark goes with the move), so a
second run changes nothing; every move is written to the audit trail. The file format is
in docs/web.md; the bundled file maps the bundled legacy sample only.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from pathlib import Path

from qrgate.errors import ConfigError
from server.areas.areas import CURRENT, LEGACY, AreaDirectory
from server.audit import AuditLog, register_actions
from server.web import i18n

DEFAULT_MAPPING_FILE = Path(__file__).with_name("legacy_to_2025.csv")
HEADER = ("old_code", "new_code")

register_actions("qrgate.venue.area_migrated", "qrgate.officer.area_migrated")
i18n.register({}, history={
    "qrgate.venue.area_migrated": ("Chuyển địa chỉ hành chính sang địa giới mới: {old} → {new}",
                                   "Moved the venue's area to the new map: {old} → {new}"),
    "qrgate.officer.area_migrated": ("Chuyển khu vực của cán bộ y tế {officer} sang địa giới mới: {old} → {new}",
                                     "Moved health officer {officer}'s area to the new map: {old} → {new}"),
})


@dataclass(frozen=True)
class AreaMapping:
    """Old ward code -> new commune/ward code; old province -> new province."""

    wards: dict[str, str]
    provinces: dict[str, str]
    path: str


def read_mapping(path: str | Path, areas: AreaDirectory) -> AreaMapping:
    """Read and check a mapping file; ConfigError naming the file and line otherwise."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8-sig")
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"mapping file {path}: {exc}") from None
    wards: dict[str, str] = {}
    provinces: dict[str, str] = {}
    header_seen = False
    for number, line in enumerate(text.splitlines(), 1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        cells = [c.strip() for c in next(csv.reader(io.StringIO(line)))]
        where = f"mapping file {path}, line {number}"
        if not header_seen:
            if tuple(cells[:2]) != HEADER:
                raise ConfigError(f"{where}: the first line must be the header old_code,new_code")
            header_seen = True
            continue
        if len(cells) < 2 or not cells[0] or not cells[1]:
            raise ConfigError(f"{where}: expected old_code,new_code")
        old, new = cells[0], cells[1]
        if not old.isascii() or not old.isdigit() or len(old) not in (2, 5):
            raise ConfigError(f"{where}: old code {old!r} is neither a ward (5 digits) nor a province (2 digits)")
        table, level = (wards, "ward") if len(old) == 5 else (provinces, "province")
        if areas.level_of(new) != level:
            raise ConfigError(f"{where}: new code {new!r} is not a {'commune/ward' if level == 'ward' else level}"
                              f" on the 2025 map ({areas.source})")
        if table.get(old, new) != new:
            raise ConfigError(f"{where}: old code {old} is mapped twice, to {table[old]} and {new}")
        table[old] = new
    if not header_seen:
        raise ConfigError(f"mapping file {path}: empty (expected the header old_code,new_code)")
    return AreaMapping(wards, provinces, str(path))


@dataclass(frozen=True)
class Move:
    """One venue or officer grant, from its old area to its new one (``new_code`` empty:
    no mapping, ``reason`` says why)."""

    what: str          # "venue" / "officer"
    key: tuple         # (venue id,) or (account id, old area code)
    label: str         # the venue's name, or the officer's phone number
    old_code: str
    old_text: str
    new_code: str = ""
    new_province: str = ""
    new_text: str = ""
    reason: str = ""


@dataclass
class Plan:
    moves: list[Move] = field(default_factory=list)
    unmapped: list[Move] = field(default_factory=list)


def plan_migration(storage, areas: AreaDirectory, mapping: AreaMapping) -> Plan:
    """What a migration with ``mapping`` would change, reading only."""
    db = storage.sql
    legacy = areas.legacy
    plan = Plan()
    rows = db.rows("SELECT id, name, province, district, ward FROM venues WHERE area_map = ? ORDER BY id", [LEGACY])
    for venue_id, name, province, district, ward in rows:
        old_text = legacy.describe(province or "", district or "", ward or "") or ward or province or ""
        move = Move("venue", (venue_id,), name or "", ward or "", old_text)
        new = mapping.wards.get(ward or "")
        if new is None:
            plan.unmapped.append(_unmapped(move, "no line for this ward in the mapping file" if ward
                                           else "the venue has no ward: choose its commune in the venue form"))
            continue
        plan.moves.append(_to(move, areas, new, areas.wards[new].parent))
    rows = db.rows("SELECT o.account_id, a.phone, o.area_code FROM area_officers o JOIN accounts a"
                   " ON a.id = o.account_id WHERE o.area_map = ? ORDER BY a.phone, o.area_code", [LEGACY])
    for account_id, phone, code in rows:
        level = legacy.level_of(code) or {2: "province", 3: "district", 5: "ward"}.get(len(code), "")
        move = Move("officer", (account_id, code), phone, code, legacy.name_of(code) or code)
        if level == "ward" and code in mapping.wards:
            new = mapping.wards[code]
            plan.moves.append(_to(move, areas, new, areas.wards[new].parent))
        elif level == "province" and code in mapping.provinces:
            new = mapping.provinces[code]
            plan.moves.append(_to(move, areas, new, new))
        elif level == "district":
            plan.unmapped.append(_unmapped(move, "districts are gone: grant the new province or communes with"
                                                 " officer-add, then officer-remove the old code"))
        else:
            plan.unmapped.append(_unmapped(move, f"no line for this {level or 'code'} in the mapping file"))
    return plan


def _to(move: Move, areas: AreaDirectory, new: str, province: str) -> Move:
    text = areas.describe(province, new if new != province else "")
    return Move(move.what, move.key, move.label, move.old_code, move.old_text, new, province, text)


def _unmapped(move: Move, reason: str) -> Move:
    return Move(move.what, move.key, move.label, move.old_code, move.old_text, reason=reason)


def apply_migration(storage, plan: Plan, audit: AuditLog) -> int:
    """Carry out the moves of ``plan``; how many rows changed (0 on a second run)."""
    db = storage.sql
    changed = 0
    pending = list(plan.moves)
    # A grant can wait for another: an old code may be, with another meaning, the very
    # code another old grant of the same officer moves to. Passes until nothing moves.
    while pending:
        waiting = []
        for move in pending:
            with db.transaction(serial="areas-migrate"):
                done = _apply_one(db, move, audit)
            if done is None:
                waiting.append(move)
            changed += 1 if done else 0
        if len(waiting) == len(pending):
            break
        pending = waiting
    return changed


def _apply_one(db, move: Move, audit: AuditLog) -> bool | None:
    if move.what == "venue":
        done = db.execute("UPDATE venues SET province = ?, district = '', ward = ?, area_map = ?"
                          " WHERE id = ? AND area_map = ?",
                          [move.new_province, move.new_code, CURRENT, move.key[0], LEGACY])
        if done:
            audit.record("qrgate.venue.area_migrated", ip="cli", venue_id=move.key[0], venue=move.label,
                         old=move.old_text, new=move.new_text, old_code=move.old_code, new_code=move.new_code)
        return bool(done)
    account_id, old = move.key
    if not db.value("SELECT 1 FROM area_officers WHERE account_id = ? AND area_code = ? AND area_map = ?",
                    [account_id, old, LEGACY]):
        return False  # moved already
    if old != move.new_code:
        target = db.one("SELECT area_map FROM area_officers WHERE account_id = ? AND area_code = ?",
                        [account_id, move.new_code])
        if target is not None and target[0] == LEGACY:
            return None  # that old grant moves first
        if target is not None:  # the officer holds the new area already (two old wards, one commune)
            db.execute("DELETE FROM area_officers WHERE account_id = ? AND area_code = ?", [account_id, old])
        else:
            db.execute("UPDATE area_officers SET area_code = ?, area_map = ? WHERE account_id = ? AND area_code = ?",
                       [move.new_code, CURRENT, account_id, old])
    else:
        db.execute("UPDATE area_officers SET area_map = ? WHERE account_id = ? AND area_code = ?",
                   [CURRENT, account_id, old])
    audit.record("qrgate.officer.area_migrated", ip="cli", officer=move.label, old=move.old_text,
                 new=move.new_text, old_code=old, new_code=move.new_code)
    return True


def report_lines(plan: Plan, applied: bool) -> list[str]:
    """The plan as the command prints it."""
    verb = "moved" if applied else "would move"
    lines = [f"{m.what} {m.label} ({'#' + str(m.key[0]) if m.what == 'venue' else m.old_code}): {verb}"
             f" {m.old_text} [{m.old_code}] -> {m.new_text} [{m.new_code}]" for m in plan.moves]
    lines += [f"{m.what} {m.label} ({'#' + str(m.key[0]) if m.what == 'venue' else m.old_code}): NO MAPPING for"
              f" {m.old_text} [{m.old_code}]: {m.reason}" for m in plan.unmapped]
    return lines
