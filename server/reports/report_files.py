"""A weekly report as files, in the reader's language (Vietnamese first): the CSV and a
one-page A4 PDF on the template of docs/reports.md, the words of the week ("Tuần 47
(16/11–22/11/2026)") and the files' names.

The template: a heading (the unit or area, its address, the week, when the data ends),
I. the installation (venues registered, vehicles among them, venues with scans, stations
in service and in contact), II. the use, day by day (scans in and out, people, people
without an exit scan, self-declared, corrected and uncertain times) with the week's
totals, III. a line per venue (a unit) or per unit (an area), IV. a unit's stations.
"""

from __future__ import annotations

import datetime as dt
import io
from typing import Any
from zoneinfo import ZoneInfo

from PIL import Image, ImageDraw

from server.reports.export import TIME_FORMAT, csv_stream
from server.reports.reports import COUNT_FIELDS, WeeklyReport
from server.venues.poster import _font, _wrap
from server.web import i18n

DPI = 150
A4_PORTRAIT = (round(210 / 25.4 * DPI), round(297 / 25.4 * DPI))  # 1240 x 1754 pixels
DAY_NAMES = ("Thứ Hai", "Thứ Ba", "Thứ Tư", "Thứ Năm", "Thứ Sáu", "Thứ Bảy", "Chủ Nhật")
DAY_NAMES_EN = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
COUNT_TITLES = ("Lượt vào", "Lượt ra", "Số người", "Chưa quét ra", "Tự khai báo", "Giờ hiệu chỉnh",
                "Giờ chưa chắc")
COUNT_TITLES_EN = ("Scans in", "Scans out", "People", "No exit scan", "Self-declared", "Time corrected",
                   "Time uncertain")

i18n.register({
    **{f"report.{name}": (vi, en) for name, vi, en in zip(COUNT_FIELDS, COUNT_TITLES, COUNT_TITLES_EN)},
    **{f"report.weekday.{i}": (vi, en) for i, (vi, en) in enumerate(zip(DAY_NAMES, DAY_NAMES_EN))},
    "report.heading": ("BÁO CÁO TUẦN", "WEEKLY REPORT"),
    "report.purpose": ("Kết quả cài đặt, sử dụng hệ thống ghi nhận ra/vào bằng mã QR",
                       "Installation and use of the QR check-in system"),
    "report.scope.unit": ("Đơn vị", "Unit"),
    "report.scope.venue": ("Địa điểm", "Venue"),
    "report.scope.area": ("Khu vực", "Area"),
    "report.address": ("Địa chỉ", "Address"),
    "report.week_text": ("Tuần {week} ({span})", "Week {week} ({span})"),
    "report.period": ("Kỳ báo cáo", "Period"),
    "report.until": ("Số liệu đến {time}", "Data up to {time}"),
    "report.made": ("Lập lúc {time}", "Made at {time}"),
    "report.section.install": ("I. Tình hình cài đặt", "I. Installation"),
    "report.section.days": ("II. Kết quả sử dụng theo ngày", "II. Use, day by day"),
    "report.section.venues": ("III. Chi tiết theo điểm kiểm soát", "III. By venue"),
    "report.section.units": ("III. Chi tiết theo đơn vị", "III. By unit"),
    "report.section.stations": ("IV. Trạm quét", "IV. Stations"),
    "report.units": ("Số đơn vị có điểm kiểm soát trong khu vực", "Units with venues in the area"),
    "report.venues_registered": ("Số điểm kiểm soát đã đăng ký", "Venues registered"),
    "report.vehicles": ("trong đó phương tiện (xe đưa đón)", "of which vehicles (shuttles)"),
    "report.venues_active": ("Số điểm có lượt quét trong tuần", "Venues with scans this week"),
    "report.stations_active": ("Số trạm quét đang dùng", "Stations in service"),
    "report.stations_recent": ("trong đó có liên lạc trong 24 giờ qua", "of which in contact in the last 24 hours"),
    "report.day": ("Ngày", "Day"),
    "report.weekday": ("Thứ", "Weekday"),
    "report.total": ("Cả tuần", "Whole week"),
    "report.place": ("Điểm kiểm soát", "Venue"),
    "report.unit": ("Đơn vị", "Unit"),
    "report.kind": ("Loại", "Type"),
    "report.venues": ("Số điểm", "Venues"),
    "report.venues_with_scans": ("Điểm có lượt quét", "With scans"),
    "report.stations_count": ("Số trạm", "Stations"),
    "report.people_week": ("Số người trong tuần", "People this week"),
    "report.station": ("Trạm quét", "Station"),
    "report.station_venue": ("Địa điểm", "Venue"),
    "report.status": ("Trạng thái", "State"),
    "report.status.active": ("Đang dùng", "In service"),
    "report.status.retired": ("Đã ngừng", "Retired"),
    "report.last_contact": ("Liên lạc cuối", "Last contact"),
    "report.scans": ("Lượt quét trong tuần", "Scans this week"),
    "report.no_stations": ("Chưa có trạm nào.", "No stations yet."),
    "report.more_lines": ("… và {n} dòng khác (xem tệp CSV)", "… and {n} more lines (see the CSV file)"),
    "report.notes": ("Số người: số người khác nhau trong ngày (dòng cả tuần: trong tuần). Chưa quét ra: người có"
                     " lượt quét cuối ngày tại một điểm là lượt vào. Giờ hiệu chỉnh: giờ đã sửa khi đồng hồ trạm"
                     " đồng bộ; giờ chưa chắc: trạm chưa từng đồng bộ đồng hồ.",
                     "People: distinct people that day (the week's line: in the week). No exit scan: people whose"
                     " last scan of the day at a venue was an entry. Time corrected: fixed once the station's clock"
                     " synced; time uncertain: the station's clock never synced."),
    "report.footer": ("Báo cáo chỉ gồm số đếm, không chứa thông tin cá nhân. Lập bởi hệ thống QR gate.",
                      "Counts only, no personal data. Made by QR gate."),
})


def t(lang: str, key: str, **values: Any) -> str:
    return i18n.translate(lang, key, **values)


def day_text(day: dt.date) -> str:
    return f"{day:%d/%m/%Y}"


def time_text(ms: int | None, tz: ZoneInfo) -> str:
    """dd/mm/yyyy HH:MM in ``tz``; "–" for no time."""
    return dt.datetime.fromtimestamp(ms / 1000, tz).strftime(TIME_FORMAT) if ms else "–"


def week_span(year: int, week: int) -> str:
    """``16/11–22/11/2026``; across a new year ``29/12/2025–04/01/2026``."""
    monday = dt.date.fromisocalendar(year, week, 1)
    sunday = monday + dt.timedelta(days=6)
    first = f"{monday:%d/%m}" if monday.year == sunday.year else f"{monday:%d/%m/%Y}"
    return f"{first}–{sunday:%d/%m/%Y}"


def week_words(year: int, week: int) -> str:
    """``47 (16/11–22/11/2026)``: what follows "Tuần" in a sentence (the audit trail's)."""
    return f"{week} ({week_span(year, week)})"


def week_text(lang: str, year: int, week: int) -> str:
    """``Tuần 47 (16/11–22/11/2026)``: a week as people read it, never ``2026-W47``."""
    return t(lang, "report.week_text", week=week, span=week_span(year, week))


def weekday_name(lang: str, day: dt.date) -> str:
    return t(lang, f"report.weekday.{day.weekday()}")


def count_titles(lang: str) -> list[str]:
    return [t(lang, f"report.{name}") for name in COUNT_FIELDS]


def station_name(lang: str, status: str) -> str:
    return t(lang, f"report.status.{status}") if status in ("active", "retired") else status


def station_text(lang: str, line) -> str:
    """A station of the report (a StationLine) by its name; a phone by its number."""
    return t(lang, "checkins.phone_short", number=line.phone) if line.phone else line.station_id


# -- CSV ----------------------------------------------------------------------------

def report_rows(report: WeeklyReport, lang: str = "vi") -> list[list[Any]]:
    """The report as one table (after the heading row csv_stream writes): who and when,
    the installation, a line per day and the week's totals, the detail lines, the
    stations; sections apart by an empty line."""
    tz = ZoneInfo(report.timezone)
    rows: list[list[Any]] = [
        [t(lang, f"report.scope.{report.scope}"), report.name],
        *([[t(lang, "report.address"), report.address]] if report.address and report.scope != "area" else []),
        [t(lang, "report.period"), f"{day_text(report.first_day)} – {day_text(report.last_day)}"],
        [t(lang, "report.until", time=time_text(report.until_ms, tz))],
        [t(lang, "report.made", time=time_text(report.made_ms, tz))],
        [],
        [t(lang, "report.section.install")],
        *([[t(lang, "report.units"), report.units]] if report.scope == "area" else []),
        [t(lang, "report.venues_registered"), report.venues_registered],
        [t(lang, "report.vehicles"), report.vehicles],
        [t(lang, "report.venues_active"), report.venues_active],
        [t(lang, "report.stations_active"), report.stations_active],
        [t(lang, "report.stations_recent"), report.stations_recent],
        [],
        [t(lang, "report.section.days")],
        [t(lang, "report.day"), t(lang, "report.weekday"), *count_titles(lang)],
    ]
    for d in report.days:
        rows.append([day_text(d.day), weekday_name(lang, d.day),
                     *(("" if d.future else getattr(d, name)) for name in COUNT_FIELDS)])
    rows.append(["", t(lang, "report.total"), *(report.total(name) for name in COUNT_FIELDS)])
    rows.append([])
    if report.scope == "area":
        rows.append([t(lang, "report.section.units")])
        rows.append([t(lang, "report.unit"), t(lang, "report.venues"), t(lang, "report.venues_with_scans"),
                     t(lang, "report.stations_count"), t(lang, "report.scans_in"), t(lang, "report.scans_out")])
        rows.extend([p.name, p.venues, p.venues_active, p.stations, p.scans_in, p.scans_out] for p in report.places)
    else:
        rows.append([t(lang, "report.section.venues")])
        rows.append([t(lang, "report.place"), t(lang, "report.kind"), t(lang, "report.stations_count"),
                     t(lang, "report.scans_in"), t(lang, "report.scans_out"), t(lang, "report.people_week")])
        rows.extend([p.name, i18n.kind_name(lang, p.kind) if p.kind else "", p.stations, p.scans_in, p.scans_out,
                     p.people if p.people is not None else ""] for p in report.places)
        rows.append([])
        rows.append([t(lang, "report.section.stations")])
        rows.append([t(lang, "report.station"), t(lang, "report.station_venue"), t(lang, "report.status"),
                     t(lang, "report.last_contact"), t(lang, "report.scans")])
        rows.extend([station_text(lang, s), s.venue, station_name(lang, s.status), time_text(s.last_contact_ms, tz),
                     s.scans] for s in report.stations)
    return rows


def report_csv(report: WeeklyReport, lang: str = "vi") -> bytes:
    heading = (t(lang, "report.heading"), week_text(lang, report.year, report.week))
    return b"".join(csv_stream(heading, report_rows(report, lang)))


def report_filename(report: WeeklyReport, fmt: str, lang: str = "vi") -> str:
    """ASCII names, in the reader's language: ``bao-cao-tuan-47-2026-don-vi-12.pdf``."""
    if lang == "en":
        return f"weekly-report-week-{report.week:02d}-{report.year}-{report.scope}-{report.subject}.{fmt}"
    what = {"unit": "don-vi", "venue": "dia-diem", "area": "khu-vuc"}[report.scope]
    return f"bao-cao-tuan-{report.week:02d}-{report.year}-{what}-{report.subject}.{fmt}"


# -- PDF ----------------------------------------------------------------------------

GREEN, DARK, GREY, LINE = (11, 94, 64), (20, 20, 20), (90, 90, 90), (220, 220, 220)
MARGIN = 80


class _Page:
    """One A4 page drawn top to bottom; ``room(h)`` says whether ``h`` more pixels fit
    above the footer."""

    def __init__(self):
        self.width, self.height = A4_PORTRAIT
        self.image = Image.new("RGB", (self.width, self.height), "white")
        self.draw = ImageDraw.Draw(self.image)
        self.y = 0

    def room(self, height: int) -> bool:
        return self.y + height <= self.height - 130

    def text(self, text: str, size: int, bold: bool = False, fill=DARK, lines: int = 1, step: int | None = None,
             x: int = MARGIN) -> None:
        font = _font(size, bold)
        for line in _wrap(self.draw, text, font, self.width - MARGIN - x, lines):
            self.draw.text((x, self.y), line, font=font, fill=fill)
            self.y += step or round(size * 1.35)

    def table(self, titles: list[str], widths: list[int], rows: list[list[str]], *, total: list[str] | None = None,
              more: str = "") -> None:
        """Columns of ``widths`` (the first left-aligned, the others right-aligned numbers)."""
        head, cell, bold = _font(19, True), _font(23), _font(23, True)
        xs = [MARGIN]
        for w in widths[:-1]:
            xs.append(xs[-1] + w)
        self.draw.rectangle((MARGIN, self.y, self.width - MARGIN, self.y + 62), fill=(232, 238, 240))
        for i, title in enumerate(titles):
            for j, part in enumerate(_wrap(self.draw, title, head, widths[i] - 10, 2)):
                if i == 0:
                    self.draw.text((xs[i] + 8, self.y + 8 + j * 24), part, font=head, fill=DARK)
                else:
                    self.draw.text((xs[i] + widths[i] - 8, self.y + 8 + j * 24), part, font=head, fill=DARK,
                                   anchor="ra")
        self.y += 62
        shown = 0
        for row in rows:
            if not self.room(44 + (44 if total else 0) + 40):
                break
            self._row(row, xs, widths, cell)
            shown += 1
        if total:
            self._row(total, xs, widths, bold)
            self.draw.line((MARGIN, self.y, self.width - MARGIN, self.y), fill=GREEN, width=3)
        if shown < len(rows) and more:
            self.y += 6
            self.text(more.format(n=len(rows) - shown), 21, fill=GREY)

    def _row(self, row: list[str], xs: list[int], widths: list[int], font) -> None:
        for i, value in enumerate(row):
            if i == 0:
                text = _wrap(self.draw, value, font, widths[0] - 12, 1)
                self.draw.text((xs[0] + 8, self.y + 10), text[0] if text else "", font=font, fill=DARK)
            else:
                self.draw.text((xs[i] + widths[i] - 8, self.y + 10), value, font=font, fill=DARK, anchor="ra")
        self.y += 44
        self.draw.line((MARGIN, self.y, self.width - MARGIN, self.y), fill=LINE, width=1)


def render_report(report: WeeklyReport, lang: str = "vi") -> Image.Image:
    """The report on one A4 portrait page at 150 dpi."""
    tz = ZoneInfo(report.timezone)
    page = _Page()
    inner = page.width - 2 * MARGIN
    page.draw.rectangle((0, 0, page.width, 150), fill=GREEN)
    page.y = 28
    page.text(t(lang, "report.heading"), 50, True, fill="white", step=62)
    page.text(t(lang, "report.purpose"), 24, fill="white")
    page.y = 180
    page.text(f"{t(lang, f'report.scope.{report.scope}')}: {report.name}", 36, True, lines=2, step=46)
    if report.address and report.scope != "area":
        page.text(report.address, 24, fill=GREY, lines=2)
    page.text(week_text(lang, report.year, report.week), 28, step=42)
    page.text(f"{t(lang, 'report.until', time=time_text(report.until_ms, tz))} · "
              f"{t(lang, 'report.made', time=time_text(report.made_ms, tz))}", 22, fill=GREY)
    page.y += 14

    page.text(t(lang, "report.section.install"), 28, True, fill=GREEN, step=42)
    facts = [("report.units", report.units)] if report.scope == "area" else []
    facts += [("report.venues_registered", report.venues_registered), ("report.vehicles", report.vehicles),
              ("report.venues_active", report.venues_active), ("report.stations_active", report.stations_active),
              ("report.stations_recent", report.stations_recent)]
    for key, value in facts:
        indent = 40 if key in ("report.vehicles", "report.stations_recent") else 0
        page.draw.text((MARGIN + indent, page.y), t(lang, key), font=_font(23), fill=DARK)
        page.draw.text((page.width - MARGIN, page.y), str(value), font=_font(23, True), fill=DARK, anchor="ra")
        page.y += 34
    page.y += 14

    page.text(t(lang, "report.section.days"), 28, True, fill=GREEN, step=42)
    first = 230
    col = (inner - first) // len(COUNT_FIELDS)
    page.table([t(lang, "report.day"), *count_titles(lang)], [first] + [col] * len(COUNT_FIELDS),
               [[f"{weekday_name(lang, d.day)} {d.day:%d/%m}",
                 *("–" if d.future else str(getattr(d, name)) for name in COUNT_FIELDS)] for d in report.days],
               total=[t(lang, "report.total"), *(str(report.total(name)) for name in COUNT_FIELDS)])
    page.y += 8
    page.text(t(lang, "report.notes"), 19, fill=GREY, lines=4, step=26)
    page.y += 16

    more = t(lang, "report.more_lines", n="{n}")
    if page.room(150):
        if report.scope == "area":
            page.text(t(lang, "report.section.units"), 28, True, fill=GREEN, step=42)
            widths = [inner - 5 * 130, 130, 130, 130, 130, 130]
            page.table([t(lang, "report.unit"), t(lang, "report.venues"), t(lang, "report.venues_with_scans"),
                        t(lang, "report.stations_count"), t(lang, "report.scans_in"), t(lang, "report.scans_out")],
                       widths, [[p.name, str(p.venues), str(p.venues_active), str(p.stations), str(p.scans_in),
                                 str(p.scans_out)] for p in report.places], more=more)
        else:
            page.text(t(lang, "report.section.venues"), 28, True, fill=GREEN, step=42)
            widths = [inner - 4 * 140, 140, 140, 140, 140]
            page.table([t(lang, "report.place"), t(lang, "report.stations_count"), t(lang, "report.scans_in"),
                        t(lang, "report.scans_out"), t(lang, "report.people_week")],
                       widths, [[p.name, str(p.stations), str(p.scans_in), str(p.scans_out),
                                 "" if p.people is None else str(p.people)] for p in report.places], more=more)
        page.y += 16
    if report.scope != "area" and page.room(150):
        page.text(t(lang, "report.section.stations"), 28, True, fill=GREEN, step=42)
        if not report.stations:
            page.text(t(lang, "report.no_stations"), 23, fill=GREY)
        else:
            widths = [inner - 3 * 220, 300, 200, 160]
            page.table([t(lang, "report.station"), t(lang, "report.last_contact"), t(lang, "report.status"),
                        t(lang, "report.scans")], widths,
                       [[station_text(lang, s), time_text(s.last_contact_ms, tz), station_name(lang, s.status),
                         str(s.scans)]
                        for s in report.stations], more=more)
    page.draw.text((MARGIN, page.height - 80), t(lang, "report.footer"), font=_font(21), fill=GREY)
    return page.image


def report_pdf(report: WeeklyReport, lang: str = "vi") -> bytes:
    out = io.BytesIO()
    title = f"{t(lang, 'report.heading')} {week_text(lang, report.year, report.week)} {report.name[:80]}"
    render_report(report, lang).save(out, "PDF", resolution=DPI, title=title)
    return out.getvalue()
