"""The e-mail of a kept weekly report, in the recipient's language: a subject that names
the week and the unit or area, a short text with the main figures, and the report's
PDF and CSV attached (server.reports.mail sends it)."""

from __future__ import annotations

from collections.abc import Callable
from email.message import EmailMessage
from zoneinfo import ZoneInfo

from server.reports.mail import Delivery, new_message
from server.reports.report_archive import ReportArchive
from server.reports.report_files import day_text, t, time_text, week_words, weekday_name
from server.reports.reports import WeeklyReport
from server.web import i18n

BODY_PLACES = 10  # detail lines in the text; the attachments have them all

i18n.register({
    "mail.subject.unit": ("Báo cáo tuần {week}: {name}", "Weekly report, week {week}: {name}"),
    "mail.subject.area": ("Báo cáo tuần {week}: khu vực {name}", "Weekly report, week {week}: area {name}"),
    "mail.greeting": ("Kính gửi Quý cơ quan, đơn vị,", "Hello,"),
    "mail.intro.unit": ("Hệ thống QR gate gửi báo cáo tuần {week} của đơn vị {name}. {until}.",
                        "QR gate sends the report of week {week} of the unit {name}. {until}."),
    "mail.intro.area": ("Hệ thống QR gate gửi báo cáo tuần {week} của khu vực {name}. {until}.",
                        "QR gate sends the report of week {week} of the area {name}. {until}."),
    "mail.week_totals": ("Trong tuần: {scans_in} lượt vào, {scans_out} lượt ra, {people} người.",
                         "This week: {scans_in} scans in, {scans_out} scans out, {people} people."),
    "mail.day": ("{day}: {scans_in} lượt vào, {scans_out} lượt ra, {people} người",
                 "{day}: {scans_in} in, {scans_out} out, {people} people"),
    "mail.day_future": ("{day}: chưa đến", "{day}: not yet"),
    "mail.place": ("{name}: {scans_in} lượt vào, {scans_out} lượt ra", "{name}: {scans_in} in, {scans_out} out"),
    "mail.attached": ("Báo cáo đầy đủ theo mẫu nằm trong tệp PDF và CSV đính kèm. Báo cáo chỉ gồm số đếm,"
                      " không chứa thông tin cá nhân.",
                      "The full report is in the attached PDF and CSV files. It holds counts only, no personal"
                      " data."),
    "mail.online": ("Xem trên máy chủ: {url}", "On the server: {url}"),
    "mail.why.unit": ("Bạn nhận thư này vì chủ sở hữu hoặc người quản lý đơn vị đã đăng ký địa chỉ này nhận báo"
                      " cáo tuần. Để thôi nhận, hãy nhờ họ xóa địa chỉ trên trang Báo cáo tuần của đơn vị.",
                      "You receive this because an owner or manager of the unit listed this address for its weekly"
                      " reports. To stop, ask them to remove it on the unit's weekly report page."),
    "mail.why.area": ("Bạn nhận thư này vì bạn là cán bộ y tế của khu vực và đã đăng ký địa chỉ này. Để thôi"
                      " nhận, hãy xóa địa chỉ trên trang Báo cáo khu vực.",
                      "You receive this as a health officer of the area who listed this address. To stop, remove"
                      " it on the area reports page."),
})


def subject_of(report: WeeklyReport, lang: str) -> str:
    week = week_words(report.year, report.week)
    key = "mail.subject.area" if report.scope == "area" else "mail.subject.unit"
    return t(lang, key, week=week, name=" ".join(report.name.split())[:120])


def body_of(report: WeeklyReport, lang: str, url: str = "") -> str:
    tz = ZoneInfo(report.timezone)
    scope = "area" if report.scope == "area" else "unit"
    lines = [t(lang, "mail.greeting"), "",
             t(lang, f"mail.intro.{scope}", name=report.name, week=week_words(report.year, report.week),
               until=t(lang, "report.until", time=time_text(report.until_ms, tz))), "",
             t(lang, "report.section.install")]
    facts = [("report.units", report.units)] if report.scope == "area" else []
    facts += [("report.venues_registered", report.venues_registered), ("report.vehicles", report.vehicles),
              ("report.venues_active", report.venues_active), ("report.stations_active", report.stations_active),
              ("report.stations_recent", report.stations_recent)]
    lines += [f"- {t(lang, key)}: {value}" for key, value in facts]
    lines += ["", t(lang, "report.section.days"),
              t(lang, "mail.week_totals", scans_in=report.total("scans_in"), scans_out=report.total("scans_out"),
                people=report.people_week)]
    for d in report.days:
        day = f"{weekday_name(lang, d.day)} {day_text(d.day)}"
        lines.append("- " + (t(lang, "mail.day_future", day=day) if d.future else
                             t(lang, "mail.day", day=day, scans_in=d.scans_in, scans_out=d.scans_out,
                               people=d.people)))
    if report.places:
        lines += ["", t(lang, "report.section.units" if report.scope == "area" else "report.section.venues")]
        lines += ["- " + t(lang, "mail.place", name=p.name, scans_in=p.scans_in, scans_out=p.scans_out)
                  for p in report.places[:BODY_PLACES]]
        if len(report.places) > BODY_PLACES:
            lines.append(t(lang, "report.more_lines", n=len(report.places) - BODY_PLACES))
    lines += ["", t(lang, "mail.attached")]
    if url:
        lines.append(t(lang, "mail.online", url=url))
    lines += ["", "--", t(lang, f"mail.why.{scope}")]
    return "\n".join(lines) + "\n"


def report_url(public_url: str, report: WeeklyReport) -> str:
    """Where the report is read on the server ([web] public_url; "" when it is not set)."""
    if not public_url:
        return ""
    week = f"{report.year}-W{report.week:02d}"
    if report.scope == "area":
        return f"{public_url}/reports/areas/{report.subject}?week={week}"
    return f"{public_url}/venues/{report.subject}/reports?week={week}"


def composer(archive: ReportArchive, public_url: str = "") -> Callable[[Delivery, str], EmailMessage]:
    """What ReportMail calls to turn a queued delivery into its message."""

    def compose(delivery: Delivery, from_address: str) -> EmailMessage:
        stored = archive.get(delivery.report_id)
        report = stored.report if stored is not None else None
        if report is None:
            raise LookupError(f"kept report {delivery.report_id} has no numbers to send")
        lang = delivery.lang
        attachments = []
        for fmt, mime in (("pdf", "application/pdf"), ("csv", "text/csv")):
            found = stored.file(fmt, lang)
            if found is None:
                raise LookupError(f"kept report {delivery.report_id}: its {fmt} file is missing")
            attachments.append((found[0], mime, found[1]))
        return new_message(from_address, delivery.email, subject_of(report, lang),
                           body_of(report, lang, report_url(public_url.rstrip("/"), report)), attachments)

    return compose
