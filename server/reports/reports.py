"""The weekly report of a unit (venue): counts per day of an ISO week, no personal data.

Provinces asked every unit for a weekly report (Bac Kan: every Friday before 16:00). A
report covers Monday 00:00 to Sunday 24:00 in the server's time zone, or up to the time
it was made when the week is not over. Per day: scans in and out, distinct people,
people whose last scan of the day was an entry (no exit scan), self-declared scans,
scans whose time was corrected after the station's clock synced, and scans whose time
is uncertain (clock never synced). Per station: its last contact and its scans that week.

Reports are made on demand (build_weekly_report, report_csv, report_pdf) and by the
scheduler (ReportArchive.generate_week), which keeps each as a row in ``weekly_reports``
and a CSV and PDF file beside the database.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw

from server.web import i18n
from server.audit import register_actions
from server.reports.export import csv_stream
from server.venues.poster import _font, _wrap
from server.storage.sql import POSTGRESQL, SQLITE

logger = logging.getLogger(__name__)

register_actions("qrgate.report.generated", "qrgate.report.downloaded")
i18n.register({}, history={
    "qrgate.report.generated": ("Lập báo cáo tuần {week} theo lịch ({people} người)",
                                "Weekly report {week} made on schedule ({people} people)"),
    "qrgate.report.downloaded": ("Tải báo cáo tuần {week} ({format})", "Downloaded weekly report {week} ({format})"),
})

DAY_NAMES = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật")
DPI = 150
A4_PORTRAIT = (round(210 / 25.4 * DPI), round(297 / 25.4 * DPI))  # 1240 x 1754 pixels
COUNT_FIELDS = ("scans_in", "scans_out", "people", "without_exit", "self_declared", "clock_corrected",
                "time_uncertain")
COUNT_TITLES = ("Lượt vào", "Lượt ra", "Số người", "Chưa quét ra", "Tự khai báo", "Giờ hiệu chỉnh",
                "Giờ chưa chắc")


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


@dataclass(frozen=True)
class WeeklyReport:
    venue_id: int
    venue_name: str
    venue_address: str
    year: int
    week: int
    timezone: str
    made_ms: int
    until_ms: int  # data up to here (the end of the week, or when it was made)
    days: tuple[DayCounts, ...]
    people_week: int
    stations: tuple[StationLine, ...] = field(default=())

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


def build_weekly_report(storage, venue_id: int, year: int, week: int, tz: ZoneInfo, now_ms: int) -> WeeklyReport:
    """Count the venue's scans of ISO week ``year``-W``week`` up to ``now_ms``."""
    db = storage.sql
    venue = db.one("SELECT name, address FROM venues WHERE id = ?", [venue_id]) if 0 < venue_id < 2**63 else None
    if venue is None:
        raise LookupError(f"no venue with id {venue_id}")
    bounds = week_bounds(year, week, tz)
    has_self = db.has_table("self_stations")
    self_sum = "sum(CASE WHEN s.station_id IS NOT NULL THEN 1 ELSE 0 END)" if has_self else "0"
    join = "LEFT JOIN self_stations s ON s.station_id = c.station_id" if has_self else ""
    days = []
    for start, end in zip(bounds, bounds[1:]):
        lo, hi = _ms(start), min(_ms(end), now_ms)
        if lo >= now_ms:
            days.append(DayCounts(start.date(), True))
            continue
        # clock_synced and time_corrected are 0/1 on SQLite and booleans on PostgreSQL:
        # tested, never added up.
        row = db.one(
            "SELECT sum(CASE WHEN c.direction = 'in' THEN 1 ELSE 0 END),"
            " sum(CASE WHEN c.direction = 'out' THEN 1 ELSE 0 END), count(DISTINCT c.person_key), "
            f"{self_sum}, sum(CASE WHEN c.time_corrected THEN 1 ELSE 0 END),"
            " sum(CASE WHEN NOT c.clock_synced AND NOT c.time_corrected THEN 1 ELSE 0 END)"
            f" FROM checkins c {join} WHERE c.venue_id = ? AND c.wall_ms >= ? AND c.wall_ms < ?",
            [venue_id, lo, hi])
        open_people = db.value(_LAST_SCAN_IS_ENTRY[db.dialect], [venue_id, lo, hi], 0)
        scans_in, scans_out, people, self_declared, corrected, uncertain = (int(v or 0) for v in row)
        days.append(DayCounts(start.date(), False, scans_in, scans_out, people, open_people, self_declared,
                              corrected, uncertain))
    lo, hi = _ms(bounds[0]), min(_ms(bounds[-1]), now_ms)
    people_week = db.value(
        "SELECT count(DISTINCT person_key) FROM checkins WHERE venue_id = ? AND wall_ms >= ? AND wall_ms < ?",
        [venue_id, lo, hi], 0)
    return WeeklyReport(venue_id, venue[0], venue[1] or "", year, week, tz.key, now_ms, max(lo, hi), tuple(days),
                        int(people_week), tuple(_stations(db, venue_id, lo, hi)))


# How many people's last scan in [lo, hi) at the venue is an entry. SQLite takes the bare
# column from the row holding the max; PostgreSQL picks that row with DISTINCT ON.
_LAST_SCAN_IS_ENTRY = {
    SQLITE: "SELECT count(*) FROM (SELECT direction, max(wall_ms) FROM checkins"
            " WHERE venue_id = ? AND wall_ms >= ? AND wall_ms < ? GROUP BY person_key) WHERE direction = 'in'",
    POSTGRESQL: "SELECT count(*) FROM (SELECT DISTINCT ON (person_key) direction FROM checkins"
                " WHERE venue_id = ? AND wall_ms >= ? AND wall_ms < ? ORDER BY person_key, wall_ms DESC, id DESC)"
                " AS last WHERE direction = 'in'",
}


def _stations(db, venue_id: int, lo: int, hi: int) -> list[StationLine]:
    has_status = db.has_table("station_status")
    seen = "(SELECT last_seen_ms FROM station_status t WHERE t.station_id = s.station_id)" if has_status else "NULL"
    rows = db.rows(
        f"SELECT s.station_id, s.status, {seen},"
        " (SELECT max(received_ms) FROM checkins c WHERE c.station_id = s.station_id),"
        " (SELECT count(*) FROM checkins c WHERE c.station_id = s.station_id AND c.venue_id = ?"
        "  AND c.wall_ms >= ? AND c.wall_ms < ?)"
        " FROM stations s WHERE s.venue_id = ?", [venue_id, lo, hi, venue_id])
    lines = []
    # Sorted here, in code point order on both engines (PostgreSQL would use its collation).
    for station_id, status, seen_ms, received_ms, scans in sorted(rows, key=lambda r: r[0]):
        last = max((v for v in (seen_ms, received_ms) if v), default=None)
        lines.append(StationLine(station_id, status or "active", last, int(scans)))
    return lines


# -- CSV and PDF ----------------------------------------------------------------------

def _local(ms: int | None, tz: ZoneInfo, fmt: str = "%d/%m/%Y %H:%M") -> str:
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime(fmt) if ms else "–"


def report_rows(report: WeeklyReport) -> list[list[Any]]:
    """The report as one table: a line per day, the week's totals, then the stations."""
    rows: list[list[Any]] = []
    for d in report.days:
        rows.append([d.day.isoformat(), DAY_NAMES[d.day.weekday()],
                     *(("" if d.future else getattr(d, name)) for name in COUNT_FIELDS)])
    rows.append(["", "Cả tuần", *(report.total(name) for name in COUNT_FIELDS)])
    tz = ZoneInfo(report.timezone)
    rows.append([])
    rows.append(["station", "status", "last_contact", "scans_week"])
    for s in report.stations:
        rows.append([s.station_id, s.status, _local(s.last_contact_ms, tz, "%Y-%m-%d %H:%M"), s.scans])
    return rows


def report_csv(report: WeeklyReport) -> bytes:
    columns = ("date", "weekday", *COUNT_FIELDS)
    return b"".join(csv_stream(columns, report_rows(report)))


def report_filename(report: WeeklyReport, fmt: str) -> str:
    return f"venue-{report.venue_id}-report-{report.year}-W{report.week:02d}.{fmt}"


def render_report(report: WeeklyReport) -> Image.Image:
    """One A4 portrait page at 150 dpi."""
    width, height = A4_PORTRAIT
    tz = ZoneInfo(report.timezone)
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    margin = 80
    green, dark, grey = (11, 94, 64), (20, 20, 20), (90, 90, 90)
    draw.rectangle((0, 0, width, 130), fill=green)
    draw.text((margin, 38), f"BÁO CÁO TUẦN {report.week:02d}/{report.year}", font=_font(52, True), fill="white")
    y = 170
    for line in _wrap(draw, report.venue_name, _font(40, True), width - 2 * margin, 2):
        draw.text((margin, y), line, font=_font(40, True), fill=dark)
        y += 52
    for line in _wrap(draw, report.venue_address, _font(26), width - 2 * margin, 2):
        draw.text((margin, y), line, font=_font(26), fill=grey)
        y += 36
    span = f"Từ {report.first_day:%d/%m/%Y} đến {report.last_day:%d/%m/%Y}"
    draw.text((margin, y + 10), span, font=_font(28), fill=dark)
    y += 50
    draw.text((margin, y), f"Số liệu đến {_local(report.until_ms, tz)} · lập lúc {_local(report.made_ms, tz)}"
              f" ({report.timezone})", font=_font(24), fill=grey)
    y += 60

    # The day table: the first column is the day, then one column per count.
    first = 230
    col = (width - 2 * margin - first) // len(COUNT_FIELDS)
    head_font, cell_font, bold = _font(20, True), _font(26), _font(26, True)
    draw.rectangle((margin, y, width - margin, y + 80), fill=(232, 238, 240))
    draw.text((margin + 10, y + 28), "Ngày", font=head_font, fill=dark)
    for i, title in enumerate(COUNT_TITLES):
        x = margin + first + i * col
        for j, part in enumerate(_wrap(draw, title, head_font, col - 10, 2)):
            draw.text((x + col - 8, y + 16 + j * 26), part, font=head_font, fill=dark, anchor="ra")
    y += 80
    for d in report.days:
        draw.text((margin + 10, y + 14), f"{DAY_NAMES[d.day.weekday()]} {d.day:%d/%m}", font=cell_font, fill=dark)
        for i, name in enumerate(COUNT_FIELDS):
            value = "–" if d.future else str(getattr(d, name))
            draw.text((margin + first + (i + 1) * col - 8, y + 14), value, font=cell_font, fill=dark, anchor="ra")
        y += 56
        draw.line((margin, y, width - margin, y), fill=(220, 220, 220), width=1)
    draw.text((margin + 10, y + 14), "Cả tuần", font=bold, fill=dark)
    for i, name in enumerate(COUNT_FIELDS):
        draw.text((margin + first + (i + 1) * col - 8, y + 14), str(report.total(name)), font=bold, fill=dark,
                  anchor="ra")
    y += 56
    draw.line((margin, y, width - margin, y), fill=green, width=3)
    y += 20
    notes = ("Số người: số người khác nhau trong ngày (cả tuần: trong tuần). Chưa quét ra: người có lượt quét"
             " cuối ngày là lượt vào. Giờ hiệu chỉnh: giờ đã sửa khi đồng hồ trạm đồng bộ; giờ chưa chắc: trạm"
             " chưa từng đồng bộ đồng hồ.")
    for line in _wrap(draw, notes, _font(22), width - 2 * margin, 4):
        draw.text((margin, y), line, font=_font(22), fill=grey)
        y += 30
    y += 30

    draw.text((margin, y), "Trạm quét", font=_font(32, True), fill=green)
    y += 52
    room = (height - 140 - y) // 44
    shown = report.stations[:max(room - 1, 0)] if len(report.stations) > room else report.stations
    if not report.stations:
        draw.text((margin, y), "Chưa có trạm nào.", font=cell_font, fill=grey)
    for s in shown:
        state = "đã ngừng" if s.status != "active" else ""
        draw.text((margin, y), s.station_id[:40], font=cell_font, fill=dark)
        draw.text((margin + 560, y), f"liên lạc cuối {_local(s.last_contact_ms, tz)} {state}".rstrip(),
                  font=_font(24), fill=dark)
        draw.text((width - margin, y), f"{s.scans} lượt", font=cell_font, fill=dark, anchor="ra")
        y += 44
    if len(shown) < len(report.stations):
        draw.text((margin, y), f"… và {len(report.stations) - len(shown)} trạm khác (xem tệp CSV)", font=_font(24),
                  fill=grey)
    footer = "Báo cáo chỉ gồm số đếm, không chứa thông tin cá nhân. Tạo bởi QR gate."
    draw.text((margin, height - 80), footer, font=_font(22), fill=grey)
    return image


def report_pdf(report: WeeklyReport) -> bytes:
    out = io.BytesIO()
    render_report(report).save(out, "PDF", resolution=DPI,
                               title=f"Báo cáo tuần {report.week:02d}/{report.year} {report.venue_name[:80]}")
    return out.getvalue()


# -- kept reports ----------------------------------------------------------------------

@dataclass(frozen=True)
class StoredReport:
    id: int
    venue_id: int
    year: int
    week: int
    made_ms: int
    trigger: str
    csv_file: str
    pdf_file: str
    summary: dict[str, Any]


class ReportArchive:
    """Reports made by the schedule: a row in ``weekly_reports`` and two files each."""

    def __init__(self, storage, folder: str | Path | None = None):
        self.storage = storage
        if folder is None:
            base = getattr(storage, "data_dir", None)  # the server's local folder
            if base is None:
                raise ValueError("weekly reports need a folder: the storage has no local data folder")
            folder = Path(base) / "reports"
        self.folder = Path(folder)
        storage.sql.schema(
            """
            CREATE TABLE IF NOT EXISTS weekly_reports (
                id {pk}, venue_id BIGINT NOT NULL, year BIGINT NOT NULL, week BIGINT NOT NULL,
                made_ms BIGINT NOT NULL, trigger TEXT NOT NULL, csv_file TEXT NOT NULL, pdf_file TEXT NOT NULL,
                summary TEXT NOT NULL DEFAULT '{}', UNIQUE (venue_id, year, week, trigger));
            CREATE INDEX IF NOT EXISTS weekly_reports_venue ON weekly_reports (venue_id, year, week)
            """
        )

    def keep(self, report: WeeklyReport, trigger: str = "schedule") -> StoredReport:
        """Write the report's files and its row; a second report of the same venue, week
        and trigger replaces the first (the files are rewritten, the row updated)."""
        folder = self.folder / f"venue-{report.venue_id}"
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, pdf_path = folder / report_filename(report, "csv"), folder / report_filename(report, "pdf")
        csv_path.write_bytes(report_csv(report))
        pdf_path.write_bytes(report_pdf(report))
        summary = {"people": report.people_week, "scans_in": report.total("scans_in"),
                   "scans_out": report.total("scans_out"), "until_ms": report.until_ms}
        self.storage.sql.execute(
            "INSERT INTO weekly_reports (venue_id, year, week, made_ms, trigger, csv_file, pdf_file, summary)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (venue_id, year, week, trigger) DO UPDATE SET"
            " made_ms = excluded.made_ms, csv_file = excluded.csv_file, pdf_file = excluded.pdf_file,"
            " summary = excluded.summary",
            [report.venue_id, report.year, report.week, report.made_ms, trigger, str(csv_path), str(pdf_path),
             json.dumps(summary)])
        return self.find(report.venue_id, report.year, report.week, trigger)

    def find(self, venue_id: int, year: int, week: int, trigger: str = "schedule") -> StoredReport | None:
        rows = self._select("WHERE venue_id = ? AND year = ? AND week = ? AND trigger = ?",
                            [venue_id, year, week, trigger])
        return rows[0] if rows else None

    def get(self, report_id: int) -> StoredReport | None:
        if not 0 < report_id < 2**63:
            return None
        rows = self._select("WHERE id = ?", [report_id])
        return rows[0] if rows else None

    def for_venue(self, venue_id: int, limit: int = 60) -> list[StoredReport]:
        return self._select("WHERE venue_id = ? ORDER BY year DESC, week DESC, id DESC LIMIT ?", [venue_id, limit])

    def _select(self, where: str, params: list[Any]) -> list[StoredReport]:
        rows = self.storage.sql.rows(
            f"SELECT id, venue_id, year, week, made_ms, trigger, csv_file, pdf_file, summary FROM weekly_reports {where}",
            params)
        return [StoredReport(*r[:8], json.loads(r[8])) for r in rows]

    def generate_week(self, now: dt.datetime, audit=None) -> list[StoredReport]:
        """The scheduled run: the report of the week containing ``now`` for every venue,
        kept, and written to the audit trail (one entry per venue)."""
        tz = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else ZoneInfo("UTC")
        year, week = week_of(now)
        now_ms = _ms(now)
        kept = []
        for (venue_id,) in self.storage.sql.rows("SELECT id FROM venues ORDER BY id"):
            try:
                report = build_weekly_report(self.storage, venue_id, year, week, tz, now_ms)
                stored = self.keep(report)
            except Exception:  # one venue's failure must not stop the others' reports
                logger.exception("weekly report of venue %s failed", venue_id)
                continue
            kept.append(stored)
            if audit is not None:
                audit.record("qrgate.report.generated", ip="scheduler", venue_id=venue_id,
                             week=f"{year}-W{week:02d}", people=report.people_week)
        logger.info("weekly reports %d-W%02d: %d venues", year, week, len(kept))
        return kept
