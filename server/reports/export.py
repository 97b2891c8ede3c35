"""Exports of check-ins to CSV and XLSX: the file writers (streamed, safe to open in a
spreadsheet) and the query that reads a venue's masked check-ins for them. Large
exports are written by the background jobs of server.reports.export_jobs.

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
import io
import re
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import xlsxwriter

from qrgate.errors import UserError
from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server.checkins.views import INVALID_TIME, local_time

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

# The columns of a venue's check-in export; the rows come from venue_export_rows.
CHECKIN_COLUMNS = ("time", "direction", "name", "id_number", "birth", "kind", "station", "self_declared",
                   "clock_corrected")


def neutralise(value: Any) -> Any:
    """A CSV cell value a spreadsheet shows as it is: text that would start a formula gets
    a leading apostrophe; numbers stay numbers; None is empty; datetimes are ISO text."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return int(value)
    if isinstance(value, (int, float)):
        return value
    if isinstance(value, dt.datetime):
        return value.isoformat(sep=" ", timespec="seconds")
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


def write_xlsx(path: str | Path, columns: Sequence[str], rows: Iterable[Sequence[Any]], *, sheet: str = "checkins",
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
        when = workbook.add_format({"num_format": "dd/mm/yyyy hh:mm:ss"})
        for col, name in enumerate(columns):
            sheet_obj.write_string(0, col, xlsx_text(str(name)), bold)
        sheet_obj.set_column(0, 0, 20)
        count = 0
        for count, row in enumerate(rows, start=1):
            if count > XLSX_MAX_ROWS:
                raise UserError(f"an XLSX sheet holds at most {XLSX_MAX_ROWS} rows; export a shorter period")
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


# -- a venue's check-ins ----------------------------------------------------------------

def _venue_sql(db) -> tuple[str, str]:
    has_self = db.has_table("self_stations")
    return (("(s.station_id IS NOT NULL)", "LEFT JOIN self_stations s ON s.station_id = c.station_id")
            if has_self else ("0", ""))


def count_venue_rows(storage, venue_id: int, start_ms: int, end_ms: int) -> int:
    return storage.sql.value(
        "SELECT count(*) FROM checkins WHERE venue_id = ? AND wall_ms >= ? AND wall_ms < ?",
        [venue_id, start_ms, end_ms], 0)


def venue_export_rows(storage, venue_id: int, tz: ZoneInfo, start_ms: int, end_ms: int,
                      batch: int = 2000) -> Iterator[tuple]:
    """The venue's check-ins in [start_ms, end_ms), oldest first, personal fields masked,
    as CHECKIN_COLUMNS tuples; a time no date holds (a station's clock said year 10000)
    is the text INVALID_TIME, so one such row cannot cut an export short. Read in
    batches by (wall_ms, id), each batch a short query of its own (on SQLite on the
    calling thread's connection; on PostgreSQL a pooled connection is borrowed per
    batch), so the iterator may be resumed from any thread, holds at most one batch in
    memory, and neither holds a lock nor pins a connection while a slow client reads. Each batch starts its wall_ms range where the previous one
    stopped: an index range, and on PostgreSQL only the months still to read."""
    db = storage.sql
    self_flag, join = _venue_sql(db)
    after: tuple[int, int] = (start_ms - 1, 2 ** 62)
    while True:
        rows = db.rows(
            f"SELECT c.id, c.wall_ms, c.direction, c.name, c.id_number, c.birth, c.kind, c.station_id, c.seq,"
            f" {self_flag}, c.time_corrected FROM checkins c {join}"
            " WHERE c.venue_id = ? AND c.wall_ms >= ? AND c.wall_ms < ? AND (c.wall_ms, c.id) > (?, ?)"
            " ORDER BY c.wall_ms, c.id LIMIT ?",
            [venue_id, max(start_ms, after[0]), end_ms, after[0], after[1], batch])
        for (cid, wall_ms, direction, name, id_number, birth, kind, station_id, seq, self_declared,
             corrected) in rows:
            yield (local_time(wall_ms, tz) or INVALID_TIME, direction, mask_person_name(name or ""),
                   mask_id_number(id_number or ""), mask_birth(birth or ""), kind, f"{station_id}#{seq}",
                   int(bool(self_declared)), int(bool(corrected)))
        if len(rows) < batch:
            return
        after = (rows[-1][1], rows[-1][0])


def export_filename(venue_id: int, start: dt.date, end: dt.date, fmt: str) -> str:
    return f"venue-{venue_id}-checkins-{start:%Y%m%d}-{end:%Y%m%d}.{fmt}"
