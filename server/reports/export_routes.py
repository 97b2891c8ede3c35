"""Web routes for exports of a venue's check-ins (CSV or XLSX, with a progress page for
large ones) and for its weekly reports (on demand, and the ones kept by the schedule).

Exports need ``checkins.export``, reports ``reports.view`` (owners and managers). Export
jobs belong to the account that started them: anyone else gets 404 for their status
and their file. The right is checked again whenever a job is looked at or its file
fetched: a member whose role was revoked after starting an export gets nothing more
(404 for a former member, 403 for one whose role no longer exports), and the file is
deleted. Rows are masked as for every venue role.
"""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from server.reports.export import (CHECKIN_COLUMNS, FORMATS, MEDIA_TYPES, count_venue_rows, csv_stream,
                                   export_filename, venue_export_rows)
from server.reports.export_jobs import ExportJob, ExportRefused
from server.reports.reports import (COUNT_FIELDS, DAY_NAMES, build_weekly_report, report_csv, report_filename,
                                    report_pdf, week_bounds, week_of)
from server.reports.service import Reports, ReportServices
from server.venues.access import venue_for
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import render

MAX_DAYS = 400  # one export covers at most this many days
# Days an export may name: wide enough for any real check-in, narrow enough that every
# day converts to a time (9999-12-31 has no next day to end on).
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2099, 12, 31)
ALL_TIME_MS = 2 ** 62
WEEK_ID = re.compile(r"^(\d{4})-W(\d{2})$")

i18n.register({
    "export.title": ("Tải dữ liệu ra vào", "Export check-ins"),
    "export.explain": ("Dữ liệu được che bớt như trên trang địa điểm. Tệp lớn được tạo dần; trang sẽ báo tiến độ"
                       " rồi hiện đường dẫn tải. Tệp bị xóa sau khi tải hoặc sau một giờ.",
                       "Rows are masked as on the venue page. Large files are made in the background; this page shows"
                       " the progress, then a download link. Files are deleted once downloaded or after an hour."),
    "export.from": ("Từ ngày", "From"),
    "export.to": ("Đến ngày (tính cả ngày này)", "To (included)"),
    "export.format": ("Định dạng", "Format"),
    "export.start": ("Tạo tệp", "Make the file"),
    "export.quick": ("Tải ngay CSV (cho khoảng ngắn)", "Download CSV now (short periods)"),
    "export.jobs": ("Các tệp bạn đã yêu cầu", "Files you asked for"),
    "export.rows": ("{done} / {total} dòng", "{done} / {total} rows"),
    "export.progress": ("Đang tạo tệp", "Making the file"),
    "export.download": ("Tải tệp", "Download the file"),
    "export.state.queued": ("Đang chờ", "Waiting"),
    "export.state.running": ("Đang tạo", "Running"),
    "export.state.done": ("Sẵn sàng", "Ready"),
    "export.state.failed": ("Lỗi", "Failed"),
    "export.state.downloaded": ("Đã tải, tệp đã xóa", "Downloaded, file deleted"),
    "export.state.expired": ("Hết hạn, tệp đã xóa", "Expired, file deleted"),
    "export.bad_date": ("Ngày không hợp lệ: dùng dạng 2026-11-22.", "Not a valid date: use 2026-11-22."),
    "export.bad_range": ("Ngày kết thúc phải sau ngày bắt đầu, tối đa {days} ngày.",
                         "The end must follow the start, at most {days} days."),
    "export.bad_format": ("Chọn CSV hoặc XLSX.", "Choose CSV or XLSX."),
    "export.out_of_range": ("Ngày phải trong khoảng {first} đến {last}.", "Days must be from {first} to {last}."),
    "export.back": ("Quay lại", "Back"),
    "report.title": ("Báo cáo tuần", "Weekly report"),
    "report.week": ("Tuần", "Week"),
    "report.show": ("Xem", "Show"),
    "report.explain": ("Chỉ gồm số đếm, không có thông tin cá nhân. Báo cáo được lập tự động mỗi tuần theo lịch.",
                       "Counts only, no personal data. A report is also made every week on a schedule."),
    "report.day": ("Ngày", "Day"),
    "report.total": ("Cả tuần", "Whole week"),
    "report.scans_in": ("Lượt vào", "Scans in"),
    "report.scans_out": ("Lượt ra", "Scans out"),
    "report.people": ("Số người", "People"),
    "report.without_exit": ("Chưa quét ra", "No exit scan"),
    "report.self_declared": ("Tự khai báo", "Self-declared"),
    "report.clock_corrected": ("Giờ hiệu chỉnh", "Time corrected"),
    "report.time_uncertain": ("Giờ chưa chắc", "Time uncertain"),
    "report.stations": ("Trạm quét", "Stations"),
    "report.last_contact": ("Liên lạc cuối", "Last contact"),
    "report.scans": ("Lượt quét trong tuần", "Scans this week"),
    "report.kept": ("Báo cáo đã lập theo lịch", "Reports made on schedule"),
    "report.none_kept": ("Chưa có báo cáo nào được lập theo lịch.", "No scheduled reports yet."),
    "report.until": ("Số liệu đến {time}", "Data up to {time}"),
    "report.bad_week": ("Tuần không hợp lệ: dùng dạng 2026-W47.", "Not a valid week: use 2026-W47."),
})


class ExportBody(BaseModel):
    start: str = Field(max_length=20, examples=["2026-11-16"], description="first day, YYYY-MM-DD (server time zone)")
    end: str = Field(max_length=20, examples=["2026-11-22"], description="last day, included")
    format: str = Field("xlsx", max_length=10, examples=["xlsx"])


class RangeError(ValueError):
    """A date range or format a person typed wrong; the message is a text key."""


router = APIRouter()


def today(svc: Services) -> dt.date:
    return dt.datetime.fromtimestamp(svc.clock(), svc.tz).date()


def parse_range(tz: ZoneInfo, start: str, end: str, fmt: str = "csv") -> tuple[dt.date, dt.date, int, int]:
    try:
        first, last = dt.date.fromisoformat(start.strip()), dt.date.fromisoformat(end.strip())
    except ValueError:
        raise RangeError("export.bad_date") from None
    if not (FIRST_DAY <= first <= LAST_DAY and FIRST_DAY <= last <= LAST_DAY):
        raise RangeError("export.out_of_range")
    if last < first or (last - first).days >= MAX_DAYS:
        raise RangeError("export.bad_range")
    if fmt not in FORMATS:
        raise RangeError("export.bad_format")
    start_ms = int(dt.datetime.combine(first, dt.time(), tz).timestamp() * 1000)
    end_ms = int(dt.datetime.combine(last + dt.timedelta(days=1), dt.time(), tz).timestamp() * 1000)
    return first, last, start_ms, end_ms


def range_text(lang: str, exc: RangeError) -> str:
    return i18n.translate(lang, str(exc), days=MAX_DAYS, first=FIRST_DAY.isoformat(), last=LAST_DAY.isoformat())


def own_job(svc: Services, rep: ReportServices, who: Visitor, job_id: str) -> ExportJob:
    """This account's job, if it may still export the job's venue (404 otherwise, or
    403 for a member whose role no longer exports); a file it may no longer have
    is deleted."""
    job = rep.jobs.get(job_id, who.account.id)
    if job is None:
        raise HTTPException(404)
    try:
        venue_for(svc, who, job.venue_id, "checkins.export")
    except HTTPException:
        rep.jobs.withdraw(job.id, who.account.id)
        raise
    return job


def job_json(job: ExportJob) -> dict:
    out = job.as_dict()
    out["status_url"] = f"/api/exports/{job.id}"
    out["download_url"] = f"/exports/{job.id}/download" if job.state == "done" else None
    return out


def export_page(request: Request, svc: Services, rep: ReportServices, who: Visitor, venue, status_code: int = 200,
                error: str = "", values=None):
    day = today(svc)
    values = values or {"start": (day - dt.timedelta(days=6)).isoformat(), "end": day.isoformat(), "format": "xlsx"}
    return render(request, who, "export.html", status_code, venue=venue, values=values, error=error,
                  max_days=MAX_DAYS, jobs=rep.jobs.for_account(who.account.id, venue.id))


def start_job(svc: Services, rep: ReportServices, who: Visitor, venue, start: str, end: str, fmt: str) -> ExportJob:
    first, last, start_ms, end_ms = parse_range(svc.tz, start, end, fmt)
    job = rep.jobs.start(who.account.id, venue.id, fmt, start_ms, end_ms, export_filename(venue.id, first, last, fmt))
    svc.audit.record("qrgate.venue.checkins.exported", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name, rows=job.total, format=fmt, start=first.isoformat(), end=last.isoformat())
    return job


def streaming_csv_response(svc: Services, who: Visitor, venue, start_ms: int, end_ms: int, filename: str,
                           **audit_data) -> Response:
    """A venue's masked check-ins in [start_ms, end_ms) as a streamed CSV download; audited."""
    rows = count_venue_rows(svc.storage, venue.id, start_ms, end_ms)
    svc.audit.record("qrgate.venue.checkins.exported", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name, rows=rows, format="csv", **audit_data)
    body = csv_stream(CHECKIN_COLUMNS, venue_export_rows(svc.storage, venue.id, svc.tz, start_ms, end_ms))
    return StreamingResponse(body, media_type=MEDIA_TYPES["csv"],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


# -- exports ------------------------------------------------------------------------


@router.get("/venues/{venue_id}/export", response_class=HTMLResponse, include_in_schema=False)
def export_form(request: Request, venue_id: int, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    return export_page(request, svc, rep, who, venue)


@router.post("/venues/{venue_id}/export", response_class=HTMLResponse, include_in_schema=False)
async def export_submit(request: Request, venue_id: int, svc: Svc, rep: Reports,
                        who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    form = {k: str(v)[:40] for k, v in (await request.form()).items() if k in ("start", "end", "format")}
    try:
        # Counting the rows and claiming a place are database writes: off the event loop.
        job = await run_in_threadpool(start_job, svc, rep, who, venue, form.get("start", ""), form.get("end", ""),
                                      form.get("format", ""))
    except RangeError as exc:
        return export_page(request, svc, rep, who, venue, 400, range_text(who.lang, exc), form)
    except ExportRefused as exc:
        return export_page(request, svc, rep, who, venue, 429, str(exc), form)
    return RedirectResponse(f"/exports/{job.id}", 303)


@router.post("/api/venues/{venue_id}/exports", tags=["exports"], status_code=202)
def api_export_start(venue_id: int, body: ExportBody, svc: Svc, rep: Reports,
                     who: Visitor = Depends(logged_in_csrf)):
    """Start an export of the venue's masked check-ins (owners and managers); poll
    ``status_url`` until ``state`` is ``done``, then fetch ``download_url`` once."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    try:
        job = start_job(svc, rep, who, venue, body.start, body.end, body.format)
    except RangeError as exc:
        raise HTTPException(400, range_text("en", exc)) from None
    except ExportRefused as exc:
        raise HTTPException(429, str(exc)) from None
    return job_json(job)


@router.get("/api/exports/{job_id}", tags=["exports"])
def api_export_status(job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """Progress of one of this account's exports: rows done of total, percent, state."""
    return job_json(own_job(svc, rep, who, job_id))


@router.get("/exports/{job_id}", response_class=HTMLResponse, include_in_schema=False)
def export_progress(request: Request, job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    job = own_job(svc, rep, who, job_id)
    venue = svc.venues.get(job.venue_id)
    return render(request, who, "export_job.html", job=job, venue=venue)


@router.get("/exports/{job_id}/download", include_in_schema=False)
def export_download(job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    own_job(svc, rep, who, job_id)  # the right to export is checked at the download, not only at the start
    job = rep.jobs.take(job_id, who.account.id)
    if job is None:
        raise HTTPException(404)
    return FileResponse(job.path, media_type=MEDIA_TYPES[job.fmt], filename=job.filename,
                        background=BackgroundTask(rep.jobs.discard, job))


@router.get("/venues/{venue_id}/export.csv", tags=["exports"], response_class=Response)
def export_csv_now(venue_id: int, svc: Svc, start: str = Query("", max_length=20, alias="from"),
                   end: str = Query("", max_length=20, alias="to"), who: Visitor = Depends(logged_in)):
    """The venue's masked check-ins from ``from`` to ``to`` (YYYY-MM-DD, default the last
    7 days) as CSV streamed while it is read: fine for short periods."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    day = today(svc)
    try:
        first, last, start_ms, end_ms = parse_range(svc.tz, start or (day - dt.timedelta(days=6)).isoformat(),
                                                    end or day.isoformat())
    except RangeError as exc:
        raise HTTPException(400, range_text("en", exc)) from None
    return streaming_csv_response(svc, who, venue, start_ms, end_ms, export_filename(venue.id, first, last, "csv"),
                                  start=first.isoformat(), end=last.isoformat())


@router.get("/venues/{venue_id}/checkins.csv", tags=["exports"], response_class=Response)
def export_csv_all(venue_id: int, svc: Svc, who: Visitor = Depends(logged_in)):
    """Every check-in the venue still has, masked, as streamed CSV (owners and managers)."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    # Before 1970 too: a station's clock may have said anything.
    return streaming_csv_response(svc, who, venue, -ALL_TIME_MS, ALL_TIME_MS, f"venue-{venue.id}-checkins.csv")


# -- weekly reports -------------------------------------------------------------------


def parse_week(text: str, tz: ZoneInfo) -> tuple[int, int]:
    match = WEEK_ID.match(text or "")
    if not match:
        raise HTTPException(400, "not a valid ISO week: use e.g. 2026-W47")
    year, week = int(match.group(1)), int(match.group(2))
    try:
        week_bounds(year, week, tz)
    except ValueError:
        raise HTTPException(400, "not a valid ISO week: use e.g. 2026-W47") from None
    return year, week


def report_of(svc: Services, venue_id: int, year: int, week: int):
    return build_weekly_report(svc.storage, venue_id, year, week, svc.tz, int(svc.clock() * 1000))


@router.get("/venues/{venue_id}/reports", response_class=HTMLResponse, include_in_schema=False)
def reports_page(request: Request, venue_id: int, svc: Svc, rep: Reports, week: str = Query("", max_length=20),
                 who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    tz = svc.tz
    now = dt.datetime.fromtimestamp(svc.clock(), tz)
    error = ""
    try:
        year, number = parse_week(week, tz) if week else week_of(now)
    except HTTPException:
        year, number = week_of(now)
        error = i18n.translate(who.lang, "report.bad_week")
    report = report_of(svc, venue_id, year, number)
    week_id = f"{year}-W{number:02d}"
    kept = [{"id": k.id, "week": f"{k.year}-W{k.week:02d}", "people": k.summary.get("people", 0),
             "made": dt.datetime.fromtimestamp(k.made_ms / 1000, tz).strftime("%d/%m/%Y %H:%M")}
            for k in rep.archive.for_venue(venue_id)]
    stations = [{"id": s.station_id, "status": s.status, "scans": s.scans,
                 "last": (dt.datetime.fromtimestamp(s.last_contact_ms / 1000, tz).strftime("%d/%m/%Y %H:%M")
                          if s.last_contact_ms else "–")} for s in report.stations]
    return render(request, who, "report.html", 400 if error else 200, venue=venue, report=report,
                  week_id=week_id, kept=kept, error=error, fields=COUNT_FIELDS, day_names=DAY_NAMES,
                  stations=stations,
                  until=dt.datetime.fromtimestamp(report.until_ms / 1000, tz).strftime("%d/%m/%Y %H:%M"))


@router.get("/venues/{venue_id}/reports/{week_id}.{fmt}", tags=["reports"], response_class=Response)
def report_download(venue_id: int, week_id: str, fmt: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """The weekly report of ISO week ``week_id`` (e.g. 2026-W47) as ``csv`` or ``pdf``,
    made now; counts only (owners and managers)."""
    if fmt not in ("csv", "pdf"):
        raise HTTPException(404)
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    year, week = parse_week(week_id, svc.tz)
    report = report_of(svc, venue_id, year, week)
    data = report_csv(report) if fmt == "csv" else report_pdf(report)
    svc.audit.record("qrgate.report.downloaded", account=who.account, ip=who.ip, venue_id=venue.id,
                     week=week_id, format=fmt)
    return Response(data, media_type=MEDIA_TYPES["csv"] if fmt == "csv" else "application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{report_filename(report, fmt)}"'})


@router.get("/venues/{venue_id}/reports/kept/{report_id}.{fmt}", tags=["reports"], response_class=Response)
def report_kept(venue_id: int, report_id: int, fmt: str, svc: Svc, rep: Reports,
                who: Visitor = Depends(logged_in)):
    """A report the schedule made and kept, as ``csv`` or ``pdf``."""
    if fmt not in ("csv", "pdf"):
        raise HTTPException(404)
    venue, _ = venue_for(svc, who, venue_id, "reports.view")
    kept = rep.archive.get(report_id)
    if kept is None or kept.venue_id != venue_id:
        raise HTTPException(404)
    path = Path(kept.csv_file if fmt == "csv" else kept.pdf_file)
    if not path.is_file():
        raise HTTPException(404)
    week_id = f"{kept.year}-W{kept.week:02d}"
    svc.audit.record("qrgate.report.downloaded", account=who.account, ip=who.ip, venue_id=venue.id,
                     week=week_id, format=fmt)
    return FileResponse(path, media_type=MEDIA_TYPES["csv"] if fmt == "csv" else "application/pdf",
                        filename=path.name)


@router.get("/api/venues/{venue_id}/reports/{week_id}", tags=["reports"])
def api_report(venue_id: int, week_id: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """The weekly report of ISO week ``week_id`` as JSON (counts only)."""
    venue_for(svc, who, venue_id, "reports.view")
    year, week = parse_week(week_id, svc.tz)
    return report_of(svc, venue_id, year, week).as_dict()


@router.get("/api/venues/{venue_id}/reports", tags=["reports"])
def api_reports_kept(venue_id: int, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """Reports the schedule made for this venue, newest first."""
    venue_for(svc, who, venue_id, "reports.view")
    return {"reports": [{"id": k.id, "week": f"{k.year}-W{k.week:02d}", "made_ms": k.made_ms,
                         "summary": k.summary, "csv_url": f"/venues/{venue_id}/reports/kept/{k.id}.csv",
                         "pdf_url": f"/venues/{venue_id}/reports/kept/{k.id}.pdf"}
                        for k in rep.archive.for_venue(venue_id)]}
