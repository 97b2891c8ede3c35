"""Web routes for the weekly reports: a unit's (and a venue's, with what is located
within it), an area's for its health officers, made now or kept by the schedule, in
the reader's language; and who receives them by e-mail.

A venue's report needs ``reports.view`` there (owners and managers); a unit's e-mail
addresses are set on its head venue by the same people. An area's report is for the
health officers of that area only (404 to anyone else); each officer sets one address
of their own for their area reports. Every download is audited
(``qrgate.report.downloaded``), and so is every change of a unit's addresses.
"""

from __future__ import annotations

import datetime as dt
import re

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response

from server.audit import register_actions
from server.reports.export import MEDIA_TYPES
from server.reports.mail import mail_problem
from server.reports.recipients import RecipientError
from server.reports.report_archive import StoredReport
from server.reports.report_files import (count_titles, report_csv, report_filename, report_pdf, station_name,
                                         station_text, time_text, week_text, week_words, weekday_name)
from server.reports.reports import COUNT_FIELDS, build_area_report, build_weekly_report, week_bounds, week_of
from server.reports.service import Reports, ReportServices
from server.reports.units import VenueTree
from server.venues.access import venue_for
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import flash, render

WEEK_ID = re.compile(r"^(\d{4})-W(\d{2})$")
AREA_CODE = re.compile(r"^[A-Za-z0-9_.-]{1,20}$")
FORMATS = ("csv", "pdf")

register_actions("qrgate.report.address.added", "qrgate.report.address.removed")
i18n.register({
    "report.title": ("Báo cáo tuần", "Weekly report"),
    "report.area_title": ("Báo cáo tuần khu vực", "Area weekly report"),
    "report.areas_title": ("Báo cáo tuần các khu vực của bạn", "Weekly reports of your areas"),
    "report.week": ("Tuần", "Week"),
    "report.show": ("Xem", "Show"),
    "report.explain": ("Chỉ gồm số đếm, không có thông tin cá nhân. Báo cáo được lập tự động mỗi tuần theo lịch,"
                       " lưu trên máy chủ và gửi qua thư điện tử tới các địa chỉ đã đăng ký.",
                       "Counts only, no personal data. A report is made every week on a schedule, kept on the server"
                       " and e-mailed to the addresses listed."),
    "report.unit_explain": ("Đơn vị gồm địa điểm này và mọi địa điểm nằm trong nó (xe đưa đón, phân xưởng...).",
                            "The unit is this venue and every venue located within it (shuttles, workshops...)."),
    "report.part_of": ("Địa điểm này thuộc đơn vị {unit}: báo cáo tuần của đơn vị được lập và gửi ở đó.",
                       "This venue belongs to the unit {unit}: the unit's weekly report is made and sent there."),
    "report.kept": ("Báo cáo đã lập theo lịch", "Reports made on schedule"),
    "report.none_kept": ("Chưa có báo cáo nào được lập theo lịch.", "No scheduled reports yet."),
    "report.bad_week": ("Tuần không hợp lệ: hãy chọn tuần trong lịch.", "Not a valid week: pick it in the calendar."),
    "report.made_at": ("lập lúc {time}", "made at {time}"),
    "report.people_short": ("{n} người", "{n} people"),
    "report.mail_title": ("Gửi báo cáo qua thư điện tử", "Reports by e-mail"),
    "report.mail_explain": ("Báo cáo tuần của đơn vị được gửi tới các địa chỉ dưới đây mỗi tuần (tối đa 5 địa chỉ),"
                            " ví dụ địa chỉ của đơn vị hoặc của cơ quan nhận báo cáo.",
                            "The unit's weekly report goes to these addresses every week (at most 5), e.g. the unit's"
                            " own or the office that collects the reports."),
    "report.mail_officer_explain": ("Báo cáo tuần của các khu vực bạn phụ trách được gửi tới địa chỉ này.",
                                    "The weekly reports of your areas are sent to this address."),
    "report.mail_off": ("Máy chủ này chưa được cấu hình gửi thư điện tử: báo cáo vẫn được lập và lưu ở đây.",
                        "This server sends no e-mail yet: the reports are still made and kept here."),
    "report.email": ("Địa chỉ thư điện tử (e-mail)", "E-mail address"),
    "report.email_lang": ("Ngôn ngữ của báo cáo", "Language of the report"),
    "report.lang.vi": ("Tiếng Việt", "Vietnamese"),
    "report.lang.en": ("Tiếng Anh", "English"),
    "report.email_add": ("Thêm địa chỉ", "Add the address"),
    "report.email_save": ("Lưu địa chỉ", "Save the address"),
    "report.email_remove": ("Xóa", "Remove"),
    "report.no_addresses": ("Chưa có địa chỉ nào.", "No addresses yet."),
    "report.mail.sent": ("đã gửi lúc {time}", "sent at {time}"),
    "report.mail.pending": ("đang chờ gửi (đã thử {attempts} lần{error})", "waiting ({attempts} attempts so far{error})"),
    "report.mail.failed": ("không gửi được: {error}", "could not be sent: {error}"),
    "report.area_none": ("Bạn không phụ trách khu vực nào.", "You hold no area."),
    "report.open": ("Xem báo cáo", "Open the report"),
    "flash.report_address_added": ("Đã thêm địa chỉ nhận báo cáo tuần.", "The address will receive the weekly reports."),
    "flash.report_address_removed": ("Đã xóa địa chỉ: địa chỉ này không nhận báo cáo nữa.",
                                     "The address was removed: it receives no more reports."),
    "flash.report_email_saved": ("Đã lưu địa chỉ nhận báo cáo khu vực.", "Your address for the area reports is saved."),
    "flash.report_email_removed": ("Đã xóa địa chỉ: bạn không nhận báo cáo qua thư điện tử nữa.",
                                   "Removed: you receive no more reports by e-mail."),
}, history={
    "qrgate.report.address.added": ("Thêm địa chỉ {email} nhận báo cáo tuần của đơn vị",
                                    "Added {email} to the unit's weekly report addresses"),
    "qrgate.report.address.removed": ("Xóa địa chỉ {email} khỏi danh sách nhận báo cáo tuần của đơn vị",
                                      "Removed {email} from the unit's weekly report addresses"),
})

router = APIRouter()


def parse_week(text: str) -> tuple[int, int]:
    match = WEEK_ID.match(text or "")
    if not match:
        raise HTTPException(400, "not a valid ISO week: use e.g. 2026-W47")
    year, week = int(match.group(1)), int(match.group(2))
    try:
        week_bounds(year, week, dt.timezone.utc)
    except ValueError:
        raise HTTPException(400, "not a valid ISO week: use e.g. 2026-W47") from None
    return year, week


def now_ms(svc: Services) -> int:
    return int(svc.clock() * 1000)


def chosen_week(svc: Services, who: Visitor, week: str) -> tuple[int, int, str]:
    """The week asked for (this week when none), and the error to show for a bad one."""
    if week:
        try:
            year, number = parse_week(week)
            return year, number, ""
        except HTTPException:
            pass
    year, number = week_of(dt.datetime.fromtimestamp(svc.clock(), svc.tz))
    return year, number, i18n.translate(who.lang, "report.bad_week") if week else ""


def delivery_text(lang: str, d, tz) -> str:
    if d.state == "sent":
        return i18n.translate(lang, "report.mail.sent", time=time_text(d.sent_ms, tz))
    if d.state == "failed":
        return i18n.translate(lang, "report.mail.failed", error=mail_problem(lang, d.error))
    return i18n.translate(lang, "report.mail.pending", attempts=d.attempts,
                          error=f": {mail_problem(lang, d.error)}" if d.error else "")


def kept_list(svc: Services, rep: ReportServices, who: Visitor, kept: list[StoredReport], base: str) -> list[dict]:
    mailed = rep.mail.for_reports([k.id for k in kept])
    return [{"id": k.id, "week": week_text(who.lang, k.year, k.week), "made": time_text(k.made_ms, svc.tz),
             "people": k.summary["people"], "pdf": f"{base}/kept/{k.id}.pdf", "csv": f"{base}/kept/{k.id}.csv",
             "deliveries": [{"email": d.email, "state": d.state, "text": delivery_text(who.lang, d, svc.tz)}
                            for d in mailed.get(k.id, [])]} for k in kept]


def page_of(svc: Services, who: Visitor, report) -> dict:
    """What report.html shows of a report, in the visitor's words."""
    lang, tz = who.lang, svc.tz
    return {"report": report, "fields": COUNT_FIELDS, "titles": count_titles(lang),
            "week_text": week_text(lang, report.year, report.week),
            "until": time_text(report.until_ms, tz), "made": time_text(report.made_ms, tz),
            "days": [{"day": d.day.isoformat(), "name": f"{weekday_name(lang, d.day)} {d.day:%d/%m}",
                      "future": d.future, "values": ["–" if d.future else getattr(d, f) for f in COUNT_FIELDS]}
                     for d in report.days],
            "stations": [{"id": station_text(lang, s), "venue": s.venue, "state": station_name(lang, s.status),
                          "retired": s.status != "active", "scans": s.scans,
                          "last": time_text(s.last_contact_ms, tz)} for s in report.stations]}


def file_response(svc: Services, who: Visitor, data: bytes, fmt: str, filename: str, venue_id: int | None,
                  week: str, **extra) -> Response:
    svc.audit.record("qrgate.report.downloaded", account=who.account, ip=who.ip, venue_id=venue_id, week=week,
                     format=fmt, **extra)
    return Response(data, media_type=MEDIA_TYPES["csv"] if fmt == "csv" else "application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def made_now_response(svc: Services, who: Visitor, report, fmt: str, venue_id: int | None, **extra) -> Response:
    """A report made now as a file in the visitor's language; audited."""
    data = report_csv(report, who.lang) if fmt == "csv" else report_pdf(report, who.lang)
    return file_response(svc, who, data, fmt, report_filename(report, fmt, who.lang), venue_id,
                         week_words(report.year, report.week), **extra)


def kept_response(svc: Services, who: Visitor, kept: StoredReport, fmt: str, venue_id: int | None,
                  **extra) -> Response:
    """A kept report's file in the visitor's language (404 if it is gone); audited."""
    found = kept.file(fmt, who.lang)
    if found is None:
        raise HTTPException(404)
    return file_response(svc, who, found[0], fmt, found[1], venue_id, week_words(kept.year, kept.week), **extra)


# -- a unit's (a venue's) reports ---------------------------------------------------------

def unit_page(request: Request, svc: Services, rep: ReportServices, who: Visitor, venue, week: str,
              status_code: int = 200, error: str = "", email: str = ""):
    year, number, week_error = chosen_week(svc, who, week)
    tree = VenueTree.read(svc.storage)
    report = build_weekly_report(svc.storage, venue.id, year, number, svc.tz, now_ms(svc), tree)
    head = tree.head_of(venue.id)
    is_head = head == venue.id
    base = f"/venues/{venue.id}/reports"
    return render(request, who, "report.html", 400 if week_error and status_code == 200 else status_code,
                  venue=venue, week_id=f"{year}-W{number:02d}", error=error or week_error, base=base,
                  is_head=is_head, head_name=tree.venues[head].name, head_id=head, email=email,
                  addresses=rep.recipients.for_unit(venue.id) if is_head else [],
                  kept=kept_list(svc, rep, who, rep.archive.for_unit(venue.id), base) if is_head else [],
                  mail_enabled=rep.mail_enabled, back=(f"/venues/{venue.id}", venue.name), **page_of(svc, who, report))


@router.get("/venues/{venue_id}/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(request: Request, venue_id: int, svc: Svc, rep: Reports, week: str = Query("", max_length=20),
                 who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    return unit_page(request, svc, rep, who, venue, week)


@router.post("/venues/{venue_id}/reports/addresses", response_class=HTMLResponse, include_in_schema=False)
async def address_add(request: Request, venue_id: int, svc: Svc, rep: Reports,
                      who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    form = await request.form()
    email, lang = str(form.get("email", ""))[:300], str(form.get("lang", ""))[:5]
    if not VenueTree.read(svc.storage).is_head(venue.id):
        raise HTTPException(404)
    try:
        kept = rep.recipients.add_unit(venue.id, email, lang, who.account.id)
    except RecipientError as exc:
        return unit_page(request, svc, rep, who, venue, "", 400, i18n.translate(who.lang, exc.key, **exc.values),
                         email)
    svc.audit.record("qrgate.report.address.added", account=who.account, ip=who.ip, venue_id=venue.id, email=kept,
                     lang=lang)
    return flash(request, RedirectResponse(f"/venues/{venue.id}/reports", 303), "flash.report_address_added")


@router.post("/venues/{venue_id}/reports/addresses/remove", include_in_schema=False)
async def address_remove(request: Request, venue_id: int, svc: Svc, rep: Reports,
                         who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    email = str((await request.form()).get("email", ""))[:300]
    if rep.recipients.remove_unit(venue.id, email):
        svc.audit.record("qrgate.report.address.removed", account=who.account, ip=who.ip, venue_id=venue.id,
                         email=email)
    return flash(request, RedirectResponse(f"/venues/{venue.id}/reports", 303), "flash.report_address_removed")


@router.get("/venues/{venue_id}/reports/{week_id}.{fmt}", tags=["reports"], response_class=Response)
def report_download(venue_id: int, week_id: str, fmt: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """The weekly report of ISO week ``week_id`` (e.g. 2026-W47) of the venue and all
    located within it, as ``csv`` or ``pdf``, made now, in your language; counts only."""
    if fmt not in FORMATS:
        raise HTTPException(404)
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    year, week = parse_week(week_id)
    report = build_weekly_report(svc.storage, venue.id, year, week, svc.tz, now_ms(svc))
    return made_now_response(svc, who, report, fmt, venue.id)


@router.get("/venues/{venue_id}/reports/kept/{report_id}.{fmt}", tags=["reports"], response_class=Response)
def report_kept(venue_id: int, report_id: int, fmt: str, svc: Svc, rep: Reports,
                who: Visitor = Depends(logged_in)):
    """A report the schedule made and kept, as ``csv`` or ``pdf`` in your language."""
    if fmt not in FORMATS:
        raise HTTPException(404)
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    kept = rep.archive.get(report_id)
    if kept is None or kept.scope not in ("unit", "legacy") or kept.subject != str(venue.id):
        raise HTTPException(404)
    return kept_response(svc, who, kept, fmt, venue.id)


@router.get("/api/venues/{venue_id}/reports/{week_id}", tags=["reports"])
def api_report(venue_id: int, week_id: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """The weekly report of ISO week ``week_id`` as JSON (counts only)."""
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    year, week = parse_week(week_id)
    return build_weekly_report(svc.storage, venue.id, year, week, svc.tz, now_ms(svc)).as_dict()


@router.get("/api/venues/{venue_id}/reports", tags=["reports"])
def api_reports_kept(venue_id: int, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """Reports the schedule made for this unit, newest first, with how their e-mails went."""
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    kept = rep.archive.for_unit(venue.id)
    mailed = rep.mail.for_reports([k.id for k in kept])
    return {"reports": [{"id": k.id, "week": f"{k.year}-W{k.week:02d}", "made_ms": k.made_ms,
                         "summary": k.summary, "csv_url": f"/venues/{venue.id}/reports/kept/{k.id}.csv",
                         "pdf_url": f"/venues/{venue.id}/reports/kept/{k.id}.pdf",
                         "deliveries": [{"email": d.email, "state": d.state, "attempts": d.attempts,
                                         "sent_ms": d.sent_ms, "error": d.error} for d in mailed.get(k.id, [])]}
                        for k in kept]}


# -- areas --------------------------------------------------------------------------------

def officer_area(svc: Services, who: Visitor, code: str):
    """One of the visitor's officer areas (404 for anything else)."""
    if not AREA_CODE.match(code or ""):
        raise HTTPException(404)
    area = next((a for a in svc.officers.areas_of(who.account.id) if a.code == code), None)
    if area is None:
        raise HTTPException(404)
    return area


def area_report(svc: Services, who: Visitor, area, year: int, week: int):
    return build_area_report(svc.storage, area.code, area.name, svc.officers.venue_ids(who.account.id, area.code),
                             year, week, svc.tz, now_ms(svc))


def areas_page(request: Request, svc: Services, rep: ReportServices, who: Visitor, status_code: int = 200,
               error: str = "", email: str = ""):
    areas = svc.officers.areas_of(who.account.id)
    if not areas:
        raise HTTPException(404)
    return render(request, who, "report_areas.html", status_code, areas=areas, error=error,
                  address=rep.recipients.for_officer(who.account.id), email=email, mail_enabled=rep.mail_enabled)


@router.get("/reports/areas", response_class=HTMLResponse, include_in_schema=False)
def areas_reports(request: Request, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    return areas_page(request, svc, rep, who)


@router.post("/reports/email", include_in_schema=False)
async def officer_email(request: Request, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in_csrf)):
    """An officer sets (or, with ``remove``, clears) the address their area reports go to."""
    if not svc.officers.areas_of(who.account.id):
        raise HTTPException(404)
    form = await request.form()
    if form.get("remove"):
        rep.recipients.clear_officer(who.account.id)
        return flash(request, RedirectResponse("/reports/areas", 303), "flash.report_email_removed")
    email = str(form.get("email", ""))[:300]
    try:
        rep.recipients.set_officer(who.account.id, email, str(form.get("lang", ""))[:5])
    except RecipientError as exc:
        return areas_page(request, svc, rep, who, 400, i18n.translate(who.lang, exc.key, **exc.values), email)
    return flash(request, RedirectResponse("/reports/areas", 303), "flash.report_email_saved")


@router.get("/reports/areas/{code}", response_class=HTMLResponse, include_in_schema=False)
def area_report_page(request: Request, code: str, svc: Svc, rep: Reports, week: str = Query("", max_length=20),
                     who: Visitor = Depends(logged_in)):
    area = officer_area(svc, who, code)
    year, number, error = chosen_week(svc, who, week)
    report = area_report(svc, who, area, year, number)
    base = f"/reports/areas/{area.code}"
    return render(request, who, "report.html", 400 if error else 200, venue=None, area=area,
                  week_id=f"{year}-W{number:02d}", error=error, base=base, is_head=False, head_name="", head_id=None,
                  addresses=[], kept=kept_list(svc, rep, who, rep.archive.for_area(area.code), base),
                  mail_enabled=rep.mail_enabled, back=("/reports/areas", i18n.translate(who.lang, "report.areas_title")),
                  **page_of(svc, who, report))


@router.get("/reports/areas/{code}/{week_id}.{fmt}", tags=["reports"], response_class=Response)
def area_report_download(code: str, week_id: str, fmt: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """An area's weekly report of ISO week ``week_id``, made now (its officers only)."""
    if fmt not in FORMATS:
        raise HTTPException(404)
    area = officer_area(svc, who, code)
    year, week = parse_week(week_id)
    return made_now_response(svc, who, area_report(svc, who, area, year, week), fmt, None, area=area.code)


@router.get("/reports/areas/{code}/kept/{report_id}.{fmt}", tags=["reports"], response_class=Response)
def area_report_kept(code: str, report_id: int, fmt: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """An area's report the schedule made and kept (its officers only)."""
    if fmt not in FORMATS:
        raise HTTPException(404)
    area = officer_area(svc, who, code)
    kept = rep.archive.get(report_id)
    if kept is None or kept.scope != "area" or kept.subject != area.code:
        raise HTTPException(404)
    return kept_response(svc, who, kept, fmt, None, area=area.code)


@router.get("/api/reports/areas/{code}/{week_id}", tags=["reports"])
def api_area_report(code: str, week_id: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """An area's weekly report as JSON (its officers only; counts only)."""
    area = officer_area(svc, who, code)
    year, week = parse_week(week_id)
    return area_report(svc, who, area, year, week).as_dict()
