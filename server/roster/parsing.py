"""Reading and checking an uploaded roster file (docs/roster.md): CSV (UTF-8) or XLSX,
one person per row, the first non-empty row naming the columns.

Every row is checked before anything is stored; one bad row refuses the whole file with a
message per row (RowProblem), so a roster is never half imported. A file that cannot be
read at all (format, size, header) raises RosterError. Only what the compliance view and
the passes need comes out of a row (RosterRow): the employee number, the name, the
department, the birth year, the person key of the ID card (``cccd:<12 digits>``,
``bhyt:...`` or ``bhxh:<10 digits>``, the same key the check-ins carry) and whether the
person has a phone; not the phone number itself. Storing the rows is
server.roster.roster's job.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import logging
import re
import unicodedata
import zipfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from qrgate.errors import UserError
from qrgate.persons import person_key

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_XLSX_UNPACKED = 60 * 1024 * 1024  # a zip bomb is refused before openpyxl opens it
MAX_ROWS = 20_000
MAX_CELL_BYTES = 4096
MAX_ERRORS_SHOWN = 200

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
# the web UI's words by server.roster.routes, so a page says them in the visitor's language.
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


def row_problem(at: int, column: str, code: str, **values: Any) -> RowProblem:
    """A RowProblem at row ``at``, its values in a fixed (sorted) order."""
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
            problems.append(row_problem(number, column, code, limit=MAX_CELL_BYTES))
    if problems:
        return None, problems

    employee_no = cells.get("employee_no", "").strip()
    if not employee_no:
        problems.append(row_problem(number, "employee_no", "empty"))
    elif employee_no.startswith(_FORMULA_START):
        problems.append(row_problem(number, "employee_no", "formula"))
    elif not _EMPLOYEE_NO.fullmatch(employee_no):
        problems.append(row_problem(number, "employee_no", "employee_no"))
    name, code = check_name(cells.get("name", ""))
    if code:
        problems.append(row_problem(number, "name", code, limit=100))
    key, code = check_id_number(cells.get("id_number", ""))
    if code:
        problems.append(row_problem(number, "id_number", code))
    birth = cells.get("birth_year", "").strip()
    if birth and not (birth.isascii() and birth.isdigit() and len(birth) == 4 and 1900 <= int(birth) <= this_year):
        problems.append(row_problem(number, "birth_year", "birth_year", year=this_year))
    department = _clean(cells.get("department", ""))
    if department.startswith(_FORMULA_START):
        problems.append(row_problem(number, "department", "formula"))
    elif len(department) > 100:
        problems.append(row_problem(number, "department", "length", limit=100))
    elif "<" in department or ">" in department:
        problems.append(row_problem(number, "department", "markup"))
    phone = cells.get("phone", "").strip()
    if phone and not (_PHONE.fullmatch(phone) and 9 <= sum(c.isdigit() for c in phone) <= 15):
        problems.append(row_problem(number, "phone", "phone"))
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
            problems.append(row_problem(number, "", "repeat", row=seen_rows[identical]))
            continue
        seen_rows[identical] = number
        row, row_problems = _check_row(number, cells, this_year)
        if row is None:
            problems.extend(row_problems)
            continue
        folded_no = row.employee_no.upper()
        if folded_no in seen_numbers:
            problems.append(row_problem(number, "employee_no", "duplicate_no", number=row.employee_no,
                                     row=seen_numbers[folded_no]))
            continue
        seen_numbers[folded_no] = number
        if row.person_key:
            if row.person_key in seen_keys:
                problems.append(row_problem(number, "id_number", "duplicate_id", row=seen_keys[row.person_key]))
                continue
            seen_keys[row.person_key] = number
        checked.append(row)
    if header is None:
        raise RosterError("file_empty")
    if not data_rows:
        raise RosterError("no_people")
    return checked, problems
