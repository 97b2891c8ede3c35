"""Exports of check-ins to CSV and XLSX: the file writers (streamed, safe to open in a
spreadsheet) and the query that reads the masked check-ins of one or several venues for
them, in the reader's language (Vietnamese first: "Vào"/"Ra", "CCCD", "Thẻ BHYT", times
as dd/mm/yyyy HH:MM). Large exports are written by the background jobs of
server.reports.export_jobs.

Formula injection: a spreadsheet runs a cell that starts with =, +, -, @ (and, after
trimming, tab, CR or NUL) as a formula, so a visitor who types ``=cmd|' /C calc'!A0`` as
their name could run a command on the computer of whoever opens the export. CSV has no
cell types, so such a cell gets a leading apostrophe (shown as text, the OWASP advice).
XLSX has types: every text cell is written as a string (never a formula) and a cell that
starts with one of those characters also carries Excel's "quote prefix" style, so editing
it later keeps it text; control characters XML cannot carry become U+FFFD.

XLSX is written with XlsxWriter in ``constant_memory`` mode: each row goes to a temporary
file as soon as the next one starts, so memory does not grow with the row count, and
``write_string`` stores a text cell as text whatever it looks like. (openpyxl's write-only
mode streams too, but turns any string starting with "=" into a formula unless every cell
is typed by hand, and needs more memory per row.)
"""

from __future__ import annotations

import csv
import datetime as dt
import heapq
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import xlsxwriter

from qrgate.errors import UserError
from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server.checkins.views import INVALID_TIME, local_time, masked_phone
from server.phone.devices import STATION_PREFIX, phone_labels
from server.storage.sql import in_list
from server.web import i18n

FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r", "\x00")
# C0 controls other than tab and line feed, and DEL: not allowed (or not safe) in XLSX text.
XML_UNSAFE = re.compile("[\x00-\x08\x0b-\x1f\x7f\ufffe\uffff]")
CHUNK_ROWS = 500  # rows per yielded CSV chunk and between progress reports
XLSX_MAX_ROWS = 1_048_576 - 1  # a sheet's limit, less the header

FORMATS = ("csv", "xlsx")
MEDIA_TYPES = {
    "csv": "text/csv; charset=utf-8",
    "xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
}

# The columns of a check-in export, as keys; their titles in a language are
# export_columns(lang), the rows come from checkin_rows.
CHECKIN_FIELDS = ("time", "venue", "direction", "name", "id_number", "birth", "kind", "station", "record",
                  "self_declared", "clock_corrected")
TIME_FORMAT = "%d/%m/%Y %H:%M"  # a time in a file: 20/11/2026 07:05, never ISO

i18n.register({
    "export.col.time": ("Thời gian", "Time"),
    "export.col.venue": ("Địa điểm", "Venue"),
    "export.col.direction": ("Chiều", "Direction"),
    "export.col.name": ("Họ tên", "Name"),
    "export.col.id_number": ("Số giấy tờ", "ID number"),
    "export.col.birth": ("Năm sinh", "Born"),
    "export.col.kind": ("Loại thẻ", "Card"),
    "export.col.station": ("Trạm quét", "Station"),
    "export.col.record": ("Số thứ tự bản ghi của trạm", "Station's record number"),
    "export.col.self_declared": ("Tự khai báo", "Self-declared"),
    "export.col.clock_corrected": ("Giờ đã hiệu chỉnh", "Time corrected"),
    "export.self_page": ("Trang tự khai báo", "Self check-in page"),
    "export.yes": ("Có", "Yes"),
    "export.sheet": ("Lượt ra vào", "Check-ins"),
})


def export_columns(lang: str, fields: Sequence[str] = CHECKIN_FIELDS) -> list[str]:
    """Column titles in ``lang`` (``export.col.<field>``; an unknown field stays as it is)."""
    return [i18n.translate(lang, f"export.col.{name}") for name in fields]


def file_time(when: dt.datetime | None) -> str:
    """A time as a file shows it to people: ``20/11/2026 07:05`` (INVALID_TIME for None)."""
    return when.strftime(TIME_FORMAT) if when is not None else INVALID_TIME


def yes_no(lang: str, flag: bool) -> str:
    """A yes/no cell: "Có" (or "Yes") when set, empty otherwise."""
    return i18n.translate(lang, "export.yes") if flag else ""


def neutralise(value: Any) -> Any:
    """A CSV cell value a spreadsheet shows as it is: text that would start a formula gets
    a leading apostrophe; numbers stay numbers; None is empty; datetimes are
    dd/mm/yyyy HH:MM in the time they carry."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dt.datetime):
        return file_time(value)
    text = str(value)
    return "'" + text if text.startswith(FORMULA_STARTS) else text


def csv_stream(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> Iterator[bytes]:
    """CSV as UTF-8 chunks: a byte order mark first (so Excel reads Vietnamese as UTF-8),
    then the header and the rows, every text cell neutralised. Holds one chunk at a time."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow([neutralise(c) for c in columns])
    yield ("\ufeff" + buffer.getvalue()).encode("utf-8")
    buffer.seek(0)
    buffer.truncate()
    pending = 0
    for row in rows:
        writer.writerow([neutralise(v) for v in row])
        pending += 1
        if pending >= CHUNK_ROWS:
            yield buffer.getvalue().encode("utf-8")
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    if pending:
        yield buffer.getvalue().encode("utf-8")


def write_csv(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]], *,
              progress: Callable[[int], None] | None = None) -> int:
    """Write csv_stream's output to ``path``; return the number of data rows."""
    counted = _Counted(rows, progress)
    with open(path, "wb") as fh:
        for chunk in csv_stream(columns, counted):
            fh.write(chunk)
    counted.report()
    return counted.count


def xlsx_text(value: str) -> str:
    return XML_UNSAFE.sub("\ufffd", value)


def write_xlsx(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sheet: str = "Lượt ra vào",
               progress: Callable[[int], None] | None = None) -> int:
    """Stream rows into an XLSX file in constant memory; return the number of data rows.

    Text is written as text (a quote-prefixed string where it looks like a formula),
    numbers as numbers, datetimes as dates (shown in the time they carry, without zone).
    ``progress`` is called with the rows written so far every CHUNK_ROWS rows and at the end.
    """
    path = Path(path)
    workbook = xlsxwriter.Workbook(str(path), {
        "constant_memory": True, "tmpdir": str(path.parent), "strings_to_formulas": False,
        "strings_to_numbers": False, "strings_to_urls": False,
    })
    try:
        sheet_obj = workbook.add_worksheet(sheet)
        quoted = workbook.add_format({"quote_prefix": True})
        bold = workbook.add_format({"bold": True})
        when = workbook.add_format({"num_format": "dd/mm/yyyy hh:mm"})
        for col, name in enumerate(columns):
            sheet_obj.write_string(0, col, xlsx_text(str(name)), bold)
        sheet_obj.set_column(0, 0, 20)
        count = 0
        for count, row in enumerate(rows, start=1):
            if count > XLSX_MAX_ROWS:
                raise UserError(f"Một trang XLSX chứa tối đa {XLSX_MAX_ROWS} dòng: hãy chọn khoảng ngày ngắn hơn"
                                " hoặc CSV.")
            for col, value in enumerate(row):
                _write_cell(sheet_obj, count, col, value, quoted, when)
            if progress is not None and count % CHUNK_ROWS == 0:
                progress(count)
    finally:
        workbook.close()
    if progress is not None:
        progress(count)
    return count


def _write_cell(sheet, row: int, col: int, value: Any, quoted, when) -> None:
    if value is None or value == "":
        return
    if isinstance(value, bool):
        sheet.write_number(row, col, int(value))
    elif isinstance(value, (int, float)):
        sheet.write_number(row, col, value)
    elif isinstance(value, dt.datetime):
        sheet.write_datetime(row, col, value.replace(tzinfo=None), when)
    else:
        text = str(value)
        sheet.write_string(row, col, xlsx_text(text), quoted if text.startswith(FORMULA_STARTS) else None)


class _Counted:
    """Pass rows through, counting them and reporting progress every CHUNK_ROWS rows."""

    def __init__(self, rows: Iterable[Sequence[Any]], progress: Callable[[int], None] | None):
        self.rows = rows
        self.progress = progress
        self.count = 0

    def __iter__(self) -> Iterator[Sequence[Any]]:
        for row in self.rows:
            self.count += 1
            if self.progress is not None and self.count % CHUNK_ROWS == 0:
                self.progress(self.count)
            yield row

    def report(self) -> None:
        if self.progress is not None:
            self.progress(self.count)


# -- the check-ins of one or several venues ----------------------------------------------

def _self_sql(db) -> tuple[str, str]:
    has_self = db.has_table("self_stations")
    return (("(s.station_id IS NOT NULL)", "LEFT JOIN self_stations s ON s.station_id = c.station_id")
            if has_self else ("0", ""))


def count_rows(storage, venue_ids: Sequence[int], start_ms: int, end_ms: int) -> int:
    """How many check-ins of these venues fall in [start_ms, end_ms)."""
    if not venue_ids:
        return 0
    db = storage.sql
    venues, params = in_list(db, "venue_id", list(venue_ids))
    return db.value(f"SELECT count(*) FROM checkins WHERE {venues} AND wall_ms >= ? AND wall_ms < ?",
                    [*params, start_ms, end_ms], 0)


def count_rows_per_venue(storage, venue_ids: Sequence[int], start_ms: int, end_ms: int) -> dict[int, int]:
    """count_rows of each venue, in one query (a venue with none is left out)."""
    if not venue_ids:
        return {}
    db = storage.sql
    venues, params = in_list(db, "venue_id", list(venue_ids))
    return {int(v): int(n) for v, n in db.rows(
        f"SELECT venue_id, count(*) FROM checkins WHERE {venues} AND wall_ms >= ? AND wall_ms < ? GROUP BY venue_id",
        [*params, start_ms, end_ms])}


def _venue_rows(storage, venue_id: int, start_ms: int, end_ms: int, batch: int) -> Iterator[tuple]:
    """One venue's stored rows in [start_ms, end_ms) by (wall_ms, id), read in batches,
    each batch a short query of its own that starts where the previous one stopped."""
    db = storage.sql
    self_flag, join = _self_sql(db)
    after: tuple[int, int] = (start_ms - 1, 2 ** 62)
    while True:
        rows = db.rows(
            f"SELECT c.wall_ms, c.id, c.venue_id, c.direction, c.name, c.id_number, c.birth, c.kind, c.station_id,"
            f" c.seq, {self_flag}, c.time_corrected FROM checkins c {join}"
            " WHERE c.venue_id = ? AND c.wall_ms >= ? AND c.wall_ms < ? AND (c.wall_ms, c.id) > (?, ?)"
            " ORDER BY c.wall_ms, c.id LIMIT ?",
            [venue_id, max(start_ms, after[0]), end_ms, after[0], after[1], batch])
        yield from rows
        if len(rows) < batch:
            return
        after = (rows[-1][0], rows[-1][1])


def checkin_rows(storage, venue_ids: Sequence[int], tz: ZoneInfo, start_ms: int, end_ms: int, lang: str = "vi",
                 names: dict[int, str] | None = None, batch: int = 2000) -> Iterator[tuple]:
    """The check-ins of ``venue_ids`` in [start_ms, end_ms), oldest first, personal
    fields masked, as CHECKIN_FIELDS tuples in ``lang``: the time (a datetime, shown
    dd/mm/yyyy HH:MM), the venue's name (``names``, read here when not given), the
    direction and card as words, the station (or "Trang tự khai báo"), its record
    number, and yes/no flags. A time no date holds (a station's clock said year 10000)
    is the text INVALID_TIME, so one such row cannot cut an export short.

    Each venue is read in batches by (wall_ms, id) on its index, each batch a short
    query of its own (on SQLite on the calling thread's connection; on PostgreSQL a
    pooled connection is borrowed per batch), and the venues' streams are merged in
    time order: the iterator may be resumed from any thread, holds at most one batch
    per venue, and neither holds a lock nor pins a connection while a slow client reads."""
    ids = sorted({int(v) for v in venue_ids})
    if names is None:
        names = {}
        if ids:
            condition, params = in_list(storage.sql, "id", ids)
            names = dict(storage.sql.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
    per_venue = max(200, batch // max(1, len(ids)))
    streams = [_venue_rows(storage, v, start_ms, end_ms, per_venue) for v in ids]
    self_page = i18n.translate(lang, "export.self_page")
    phones: dict[str, str] = {}

    def station_text(station_id: str) -> str:
        """A phone by its number and its account, as the history page says it (looked up
        once per phone); any other station by the name it was given."""
        if not station_id.startswith(STATION_PREFIX):
            return station_id
        if station_id not in phones:
            label = phone_labels(storage.sql, [station_id]).get(station_id)
            phones[station_id] = station_id if label is None else i18n.translate(
                lang, "checkins.phone", number=label["number"], account=masked_phone(label["account_phone"]))
        return phones[station_id]

    for (wall_ms, _id, venue_id, direction, name, id_number, birth, kind, station_id, seq, self_declared,
         corrected) in heapq.merge(*streams, key=lambda r: (r[0], r[1])):
        yield (local_time(wall_ms, tz) or INVALID_TIME, names.get(venue_id, ""), i18n.direction_name(lang, direction),
               mask_person_name(name or ""), mask_id_number(id_number or ""), mask_birth(birth or ""),
               i18n.card_name(lang, kind or ""), self_page if self_declared else station_text(station_id), seq,
               yes_no(lang, bool(self_declared)), yes_no(lang, bool(corrected)))


def export_filename(venue_ids: Sequence[int], start: dt.date, end: dt.date, fmt: str, lang: str = "vi") -> str:
    """ASCII file names in the reader's language: ``luot-ra-vao-dia-diem-3-16-11-2026-den-22-11-2026.xlsx``,
    ``luot-ra-vao-6-dia-diem-...`` for several venues."""
    days = f"{start:%d-%m-%Y}-{'to' if lang == 'en' else 'den'}-{end:%d-%m-%Y}"
    if lang == "en":
        what = f"venue-{venue_ids[0]}" if len(venue_ids) == 1 else f"{len(venue_ids)}-venues"
        return f"checkins-{what}-{days}.{fmt}"
    what = f"dia-diem-{venue_ids[0]}" if len(venue_ids) == 1 else f"{len(venue_ids)}-dia-diem"
    return f"luot-ra-vao-{what}-{days}.{fmt}"
