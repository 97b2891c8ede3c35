# Enterprise rosters: who is enrolled at a venue, and who has not checked in today.
"""A venue's roster (the people it employs or enrols) and the "not checked in today" view.

A roster is uploaded as CSV (UTF-8) or XLSX with one person per row. Every row is checked
before anything is stored; one bad row refuses the whole file with a message per row, so
a roster is never half imported (docs/roster.md). Only what the compliance view and the
passes need is kept: the employee number, the name, the department, the birth year, the
person key of the ID card (``cccd:<12 digits>`` or ``bhxh:<10 digits>``, the same key the
check-ins carry) and whether the person has a phone. The phone number itself is not
stored, nor the full BHYT card code.

Two modes: ``merge`` (default) adds new employee numbers and updates known ones;
``replace`` makes the roster exactly the file, and people who are no longer in it are
removed (their active passes are revoked by the caller, server.passes).
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
import time
import unicodedata
import zipfile
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any
from zoneinfo import ZoneInfo

from qrgate.errors import UserError
from qrgate.masking import mask_id_number, mask_person_name
from qrgate.persons import person_key
from server.storage.sql import code_point_order

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_XLSX_UNPACKED = 60 * 1024 * 1024  # a zip bomb is refused before openpyxl opens it
MAX_ROWS = 20_000
MAX_CELL_BYTES = 4096
MAX_ERRORS_SHOWN = 200
MODES = ("merge", "replace")

# Column names as people write them (Vietnamese with or without marks, English), folded
# by _fold_header; the first name of each tuple is the canonical one.
COLUMNS: dict[str, tuple[str, ...]] = {
    "employee_no": ("employee_no", "ma_nv", "ma_nhan_vien", "ma_so", "msnv", "employee_number", "employee_id",
                    "staff_no", "so_the"),
    "name": ("name", "ho_ten", "ho_va_ten", "full_name", "ten"),
    "id_number": ("id_number", "cccd", "so_cccd", "so_giay_to", "giay_to", "can_cuoc", "bhyt", "so_bhyt",
                  "ma_bhxh", "id"),
    "birth_year": ("birth_year", "nam_sinh", "year_of_birth", "birth"),
    "department": ("department", "bo_phan", "phong_ban", "don_vi", "to", "unit"),
    "phone": ("phone", "dien_thoai", "so_dien_thoai", "sdt", "dt", "mobile"),
}
REQUIRED = ("employee_no", "name")

_EMPLOYEE_NO = re.compile(r"[A-Za-z0-9][A-Za-z0-9._/-]{0,31}", re.ASCII)
_CCCD = re.compile(r"\d{12}", re.ASCII)
_BHYT = re.compile(r"[A-Z]{2}\d{13}", re.ASCII)
_BHXH = re.compile(r"\d{10}", re.ASCII)
_PHONE = re.compile(r"\+?[0-9][0-9 .()-]{7,20}", re.ASCII)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_NAME_PUNCT = set(" '.-")


# Every refusal has a code; the words (Vietnamese, English) are here and registered with
# the web UI's words by server.web_roster, so a page says them in the visitor's language.
MESSAGES: dict[str, tuple[str, str]] = {
    "too_long": ("dài quá {limit} byte", "over {limit} bytes"),
    "control": ("chứa ký tự điều khiển", "contains control characters"),
    "empty": ("đang để trống", "is empty"),
    "formula": ("trông như công thức bảng tính", "looks like a spreadsheet formula"),
    "length": ("dài quá {limit} ký tự", "is longer than {limit} characters"),
    "name_chars": ("chỉ được có chữ cái, dấu cách, dấu nháy, dấu chấm và gạch nối",
                   "may hold only letters, spaces, apostrophes, dots and hyphens"),
    "employee_no": ("phải gồm 1-32 chữ cái hoặc chữ số (và . _ / -), bắt đầu bằng chữ cái hoặc chữ số",
                    "must be 1-32 letters or digits (and . _ / -), starting with a letter or digit"),
    "id_zeros": ("đang được lưu dạng số nên mất số 0 ở đầu: hãy định dạng cột là Văn bản (Text)",
                 "was stored as a number and lost its leading zeros: format the column as Text"),
    "id_format": ("phải là số CCCD (12 chữ số), mã thẻ BHYT (2 chữ cái và 13 chữ số) hoặc mã số BHXH (10 chữ số)",
                  "must be a CCCD (12 digits), a BHYT card code (2 letters and 13 digits) or a 10-digit BHXH number"),
    "birth_year": ("phải là năm từ 1900 đến {year}", "must be a year from 1900 to {year}"),
    "markup": ("không được chứa < hoặc >", "must not contain < or >"),
    "phone": ("không phải số điện thoại (để trống nếu không có)", "is not a phone number (leave it empty for no phone)"),
    "repeat": ("trùng hoàn toàn với dòng {row}", "repeats row {row}"),
    "duplicate_no": ("{number} đã có ở dòng {row}", "{number} is already used in row {row}"),
    "duplicate_id": ("số giấy tờ này đã có ở dòng {row}", "the same ID number is already used in row {row}"),
    "on_roster_id": ("số giấy tờ này đã có trong danh sách, mã NV {numbers}",
                     "the same ID number is already on the roster for employee {numbers}"),
    # Whole-file refusals (RosterError)
    "file_too_big": ("tệp lớn hơn {limit} MB", "the file is over {limit} MB"),
    "file_empty": ("tệp trống", "the file is empty"),
    "not_utf8": ("tệp CSV không phải UTF-8 (byte {at}): hãy lưu dạng \"CSV UTF-8\"",
                 "the CSV file is not UTF-8 (byte {at}): save it as 'CSV UTF-8'"),
    "bad_csv": ("không đọc được tệp CSV: {detail}", "the CSV file cannot be read: {detail}"),
    "not_xlsx": ("tệp không phải sổ tính XLSX đọc được", "the file is not a readable XLSX workbook"),
    "xls": ("không đọc tệp .xls cũ: hãy lưu thành .xlsx hoặc CSV UTF-8",
            "old .xls workbooks are not read: save it as .xlsx or CSV UTF-8"),
    "xlsx_too_big": ("sổ tính giải nén ra {size} MB, quá giới hạn {limit} MB",
                     "the workbook unpacks to {size} MB, over the {limit} MB limit"),
    "header_cell": ("dòng tiêu đề có ô chứa ký tự điều khiển hoặc dài quá {limit} byte",
                    "the header row has a cell with control characters or over {limit} bytes"),
    "header_twice": ("dòng tiêu đề có cột {column} hai lần", "the header names the {column} column twice"),
    "header_missing": ("dòng đầu phải là tên cột; còn thiếu: {columns} (ví dụ ma_nv, ho_ten, cccd, nam_sinh, bo_phan, dien_thoai)",
                       "the first row must name the columns; missing: {columns} (e.g. ma_nv, ho_ten, cccd, nam_sinh, bo_phan, dien_thoai)"),
    "no_people": ("tệp chỉ có dòng tiêu đề, chưa có người nào", "the file has a header but no people"),
    "too_many_rows": ("danh sách có hơn {limit} dòng: hãy chia theo bộ phận",
                      "the roster has more than {limit} rows: split it by department"),
    "bad_mode": ("cách nhập phải là merge hoặc replace", "the mode must be merge or replace"),
}


def _fits_bigint(number: int) -> bool:
    return -(2**63) <= number < 2**63


def message(code: str, lang: str = "en", **values: Any) -> str:
    pair = MESSAGES[code]
    return (pair[1] if lang == "en" else pair[0]).format(**values)


class RosterError(UserError):
    """An upload that cannot be read at all (format, size, header); rows get RowProblems."""

    def __init__(self, code: str, **values: Any):
        super().__init__(message(code, **values))
        self.code = code
        self.values = values

    def text(self, lang: str) -> str:
        return message(self.code, lang, **self.values)


@dataclass(frozen=True)
class RowProblem:
    row: int  # the line or sheet row number as the uploader sees it (header is row 1)
    column: str  # "" for the whole row
    code: str
    values: tuple[tuple[str, Any], ...] = ()

    @property
    def message(self) -> str:
        return self.text("en")

    def text(self, lang: str) -> str:
        return message(self.code, lang, **dict(self.values))

    def __str__(self) -> str:
        where = f"row {self.row}, {self.column}" if self.column else f"row {self.row}"
        return f"{where}: {self.message}"


def _problem(at: int, column: str, code: str, **values: Any) -> RowProblem:
    return RowProblem(at, column, code, tuple(sorted(values.items())))


@dataclass(frozen=True)
class RosterRow:
    """One checked row, ready to store."""

    row: int
    employee_no: str
    name: str
    person_key: str  # "" when the row has no ID number (the person will rely on a pass)
    birth_year: str
    department: str
    has_phone: bool


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


# -- reading files -------------------------------------------------------------------

def _fold_header(text: str) -> str:
    """'Mã NV' -> 'ma_nv', 'Họ và tên' -> 'ho_va_ten': no marks, lower case, underscores."""
    text = unicodedata.normalize("NFD", str(text).strip().lower().replace("đ", "d"))
    text = "".join(c for c in text if not unicodedata.combining(c))
    return re.sub(r"[^a-z0-9]+", "_", text).strip("_")


_HEADER_NAMES = {alias: canonical for canonical, aliases in COLUMNS.items() for alias in aliases}


def _map_header(cells: list[str]) -> dict[str, int]:
    """Column name -> index; RosterError when a required column is missing or doubled."""
    found: dict[str, int] = {}
    for index, cell in enumerate(cells):
        canonical = _HEADER_NAMES.get(_fold_header(cell))
        if canonical is None:
            continue  # extra columns (notes, shift...) are ignored, never stored
        if canonical in found:
            raise RosterError("header_twice", column=canonical)
        found[canonical] = index
    missing = [c for c in REQUIRED if c not in found]
    if missing:
        raise RosterError("header_missing", columns=", ".join(missing))
    return found


def _csv_rows(data: bytes) -> Iterator[list[str]]:
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise RosterError("not_utf8", at=exc.start) from None
    sample = text[:8192]
    try:
        dialect = csv.Sniffer().sniff(sample, delimiters=",;\t")
    except csv.Error:
        dialect = csv.excel
    try:
        for row in csv.reader(io.StringIO(text, newline=""), dialect):
            yield row
    except csv.Error as exc:
        raise RosterError("bad_csv", detail=str(exc)[:200]) from None


def _xlsx_cell(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, (dt.datetime, dt.date)):
        return value.isoformat()
    return str(value)


def _xlsx_rows(data: bytes) -> Iterator[list[str]]:
    import openpyxl

    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
        unpacked = sum(info.file_size for info in archive.infolist())
    except (zipfile.BadZipFile, ValueError):
        raise RosterError("not_xlsx") from None
    if unpacked > MAX_XLSX_UNPACKED:
        raise RosterError("xlsx_too_big", size=unpacked // 1_000_000, limit=MAX_XLSX_UNPACKED // 1_000_000)
    try:
        # data_only=False: a formula comes through as its text ("=..."), which the row
        # checks refuse, rather than as a value Excel cached when it last saved.
        book = openpyxl.load_workbook(io.BytesIO(data), read_only=True, data_only=False)
    except Exception as exc:  # openpyxl raises many kinds for a damaged workbook
        logger.info("unreadable workbook: %s", exc)
        raise RosterError("not_xlsx") from None
    try:
        sheet = book.worksheets[0]
        for row in sheet.iter_rows(values_only=True):
            yield [_number_cell(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else _xlsx_cell(v)
                   for v in row]
    finally:
        book.close()


class _NumberCell(str):
    """A cell Excel stored as a number: the ID check needs to know (leading zeros are lost)."""


def _number_cell(value: int | float) -> str:
    return _NumberCell(_xlsx_cell(value))


def read_table(data: bytes, filename: str = "") -> Iterator[list[str]]:
    """Rows of cells from CSV or XLSX bytes (told apart by content, not by the name)."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise RosterError("file_too_big", limit=MAX_UPLOAD_BYTES // (1024 * 1024))
    if not data.strip():
        raise RosterError("file_empty")
    if data[:4] == b"PK\x03\x04":
        return _xlsx_rows(data)
    if filename.lower().endswith((".xlsx", ".xlsm")):
        raise RosterError("not_xlsx")
    if data[:8] == b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1":
        raise RosterError("xls")
    return _csv_rows(data)


# -- checking rows -------------------------------------------------------------------

def _bad_text(value: str) -> str | None:
    """Why a cell cannot be stored as text (a MESSAGES code), or None."""
    if len(value.encode("utf-8", "surrogatepass")) > MAX_CELL_BYTES:
        return "too_long"
    if any(unicodedata.category(c) in ("Cc", "Cf", "Cs", "Co") for c in value):
        return "control"
    return None


def _clean(value: str) -> str:
    return unicodedata.normalize("NFC", " ".join(value.split()))


def check_name(value: str) -> tuple[str, str | None]:
    """The cleaned name and a MESSAGES code when it is refused."""
    name = _clean(value)
    if not name:
        return name, "empty"
    if name.startswith(_FORMULA_START):
        return name, "formula"
    if len(name) > 100:
        return name, "length"
    if not all(c.isalpha() or unicodedata.category(c).startswith("M") or c in _NAME_PUNCT for c in name):
        return name, "name_chars"
    return name, None


def check_id_number(value: str) -> tuple[str, str | None]:
    """The person key for an ID cell: CCCD (12 digits), BHYT card code (2 letters, 13
    digits) or the 10-digit social-insurance number; ("", None) for an empty cell."""
    text = value.strip().replace(" ", "").upper()
    if not text:
        return "", None
    if isinstance(value, _NumberCell) and len(text) < 12:
        return "", "id_zeros"
    if _CCCD.fullmatch(text):
        return person_key("cccd", text, "", ""), None
    if _BHYT.fullmatch(text):
        return person_key("bhyt", text, "", ""), None
    if _BHXH.fullmatch(text):
        return "bhxh:" + text, None
    return "", "id_format"


def _check_row(number: int, cells: dict[str, str], this_year: int) -> tuple[RosterRow | None, list[RowProblem]]:
    problems: list[RowProblem] = []
    for column, value in cells.items():
        code = _bad_text(value)
        if code:
            problems.append(_problem(number, column, code, limit=MAX_CELL_BYTES))
    if problems:
        return None, problems

    employee_no = cells.get("employee_no", "").strip()
    if not employee_no:
        problems.append(_problem(number, "employee_no", "empty"))
    elif employee_no.startswith(_FORMULA_START):
        problems.append(_problem(number, "employee_no", "formula"))
    elif not _EMPLOYEE_NO.fullmatch(employee_no):
        problems.append(_problem(number, "employee_no", "employee_no"))
    name, code = check_name(cells.get("name", ""))
    if code:
        problems.append(_problem(number, "name", code, limit=100))
    key, code = check_id_number(cells.get("id_number", ""))
    if code:
        problems.append(_problem(number, "id_number", code))
    birth = cells.get("birth_year", "").strip()
    if birth and not (birth.isascii() and birth.isdigit() and len(birth) == 4 and 1900 <= int(birth) <= this_year):
        problems.append(_problem(number, "birth_year", "birth_year", year=this_year))
    department = _clean(cells.get("department", ""))
    if department.startswith(_FORMULA_START):
        problems.append(_problem(number, "department", "formula"))
    elif len(department) > 100:
        problems.append(_problem(number, "department", "length", limit=100))
    elif "<" in department or ">" in department:
        problems.append(_problem(number, "department", "markup"))
    phone = cells.get("phone", "").strip()
    if phone and not (_PHONE.fullmatch(phone) and 9 <= sum(c.isdigit() for c in phone) <= 15):
        problems.append(_problem(number, "phone", "phone"))
    if problems:
        return None, problems
    return RosterRow(number, employee_no, name, key, birth, department, bool(phone)), []


def parse_roster(rows: Iterable[list[str]], this_year: int) -> tuple[list[RosterRow], list[RowProblem]]:
    """Check every row of a table whose first non-empty row is the header."""
    checked: list[RosterRow] = []
    problems: list[RowProblem] = []
    header: dict[str, int] | None = None
    seen_numbers: dict[str, int] = {}
    seen_keys: dict[str, int] = {}
    seen_rows: dict[tuple, int] = {}
    data_rows = 0
    for number, raw in enumerate(rows, start=1):
        cells_raw = [c if isinstance(c, str) else str(c) for c in raw]
        if not any(c.strip() for c in cells_raw):
            continue
        if header is None:
            for cell in cells_raw:
                if _bad_text(cell):
                    raise RosterError("header_cell", limit=MAX_CELL_BYTES)
            header = _map_header(cells_raw)
            continue
        data_rows += 1
        if data_rows > MAX_ROWS:
            raise RosterError("too_many_rows", limit=MAX_ROWS)
        cells = {column: (cells_raw[index] if index < len(cells_raw) else "") for column, index in header.items()}
        identical = tuple(sorted((k, v.strip()) for k, v in cells.items()))
        if identical in seen_rows:
            problems.append(_problem(number, "", "repeat", row=seen_rows[identical]))
            continue
        seen_rows[identical] = number
        row, row_problems = _check_row(number, cells, this_year)
        if row is None:
            problems.extend(row_problems)
            continue
        folded_no = row.employee_no.upper()
        if folded_no in seen_numbers:
            problems.append(_problem(number, "employee_no", "duplicate_no", number=row.employee_no,
                                     row=seen_numbers[folded_no]))
            continue
        seen_numbers[folded_no] = number
        if row.person_key:
            if row.person_key in seen_keys:
                problems.append(_problem(number, "id_number", "duplicate_id", row=seen_keys[row.person_key]))
                continue
            seen_keys[row.person_key] = number
        checked.append(row)
    if header is None:
        raise RosterError("file_empty")
    if not data_rows:
        raise RosterError("no_people")
    return checked, problems


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
            result.problems.append(_problem(min(rows_hit) if rows_hit else 0, "id_number", "on_roster_id",
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
