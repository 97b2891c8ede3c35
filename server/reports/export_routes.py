"""Web routes for exports of check-ins (CSV or XLSX, with a progress page for large
ones), of one venue or of several at once (a company's six venues in one file).

An export needs ``checkins.export`` (owners and managers) at every venue it covers, each
checked: a venue the person may see but not export is refused by name (403, nothing is
made), one they are not a member of is not found (404). Files are in the visitor's
language (Vietnamese unless they chose English) and say which venue each row is from.
Export jobs belong to the account that started them: anyone else gets 404 for their
status and their file. The right is checked again whenever a job is looked at or its
file fetched: a member whose role was revoked after starting an export gets nothing
more (404 for a former member, 403 for one whose role no longer exports), and the file
is deleted. Rows are masked as for every venue role.

Weekly reports are server/reports/report_routes.py.
"""

from __future__ import annotations

import datetime as dt
import re
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import FileResponse, HTMLResponse, RedirectResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool

from server.reports.export import (FORMATS, MEDIA_TYPES, checkin_rows, count_rows_per_venue, csv_stream,
                                   export_columns, export_filename)
from server.reports.export_jobs import ExportJob, ExportRefused
from server.reports.service import Reports, ReportServices
from server.venues.access import venue_for
from server.venues.permissions import allowed
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import flash, render

MAX_DAYS = 400  # one export covers at most this many days
MAX_VENUES = 200  # venues in one export
# Days an export may name: wide enough for any real check-in, narrow enough that every
# day converts to a time (9999-12-31 has no next day to end on).
FIRST_DAY, LAST_DAY = dt.date(2000, 1, 1), dt.date(2099, 12, 31)
ALL_TIME_MS = 2 ** 62
_DAY_VN = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)

i18n.register({
    "export.title": ("Tải dữ liệu ra vào", "Export check-ins"),
    "export.explain": ("Dữ liệu được che bớt như trên trang địa điểm. Tệp lớn được tạo dần; trang sẽ báo tiến độ"
                       " rồi hiện đường dẫn tải. Tệp bị xóa sau khi tải hoặc sau một giờ.",
                       "Rows are masked as on the venue page. Large files are made in the background; this page shows"
                       " the progress, then a download link. Files are deleted once downloaded or after an hour."),
    "export.venues": ("Địa điểm", "Venues"),
    "export.venues_hint": ("Chọn một, vài hoặc tất cả địa điểm của bạn: tệp có cột cho biết mỗi dòng thuộc địa điểm"
                           " nào.", "Choose one, several or all of your venues: a column says which venue each row"
                                    " is from."),
    "export.all": ("Chọn tất cả", "Choose all"),
    "export.none": ("Bỏ chọn tất cả", "Choose none"),
    "export.not_yours": ("vai trò {role}: không được tải dữ liệu", "role {role}: may not export"),
    "export.no_venues": ("Bạn chưa quản lý địa điểm nào để tải dữ liệu.", "You manage no venue to export."),
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
    "export.bad_date": ("Ngày không hợp lệ: hãy chọn ngày trong lịch, ví dụ 22/11/2026.",
                        "Not a valid date: pick it in the calendar, e.g. 22/11/2026."),
    "export.bad_range": ("Ngày kết thúc phải sau ngày bắt đầu, tối đa {days} ngày.",
                         "The end must follow the start, at most {days} days."),
    "export.bad_format": ("Chọn CSV hoặc XLSX.", "Choose CSV or XLSX."),
    "export.out_of_range": ("Ngày phải trong khoảng {first} đến {last}.", "Days must be from {first} to {last}."),
    "export.refused": ("Không tạo tệp: bạn không được tải dữ liệu của {venues}. Hãy bỏ chọn các địa điểm này.",
                       "No file made: you may not export {venues}. Leave these venues out."),
    "export.back": ("Quay lại", "Back"),
    "flash.export_started": ("Đã bắt đầu tạo tệp: trang này báo khi tệp sẵn sàng.",
                             "The file is being made: this page says when it is ready."),
})


class ExportBody(BaseModel):
    start: str = Field(max_length=20, examples=["2026-11-16"], description="first day, YYYY-MM-DD (server time zone)")
    end: str = Field(max_length=20, examples=["2026-11-22"], description="last day, included")
    format: str = Field("xlsx", max_length=10, examples=["xlsx"])


class ExportsBody(ExportBody):
    venues: list[int] = Field(max_length=MAX_VENUES, examples=[[1, 2, 3]],
                              description="the venues to export (each needs checkins.export)")


class RangeError(ValueError):
    """A date range or format a person typed wrong; the message is a text key."""


class VenuesRefused(Exception):
    """Venues of the export the person may see but not export (403): each by name and role."""

    def __init__(self, refused: list[tuple[int, str, str]]):
        super().__init__(", ".join(name for _, name, _ in refused))
        self.refused = refused

    def text(self, lang: str) -> str:
        named = ", ".join(f"{name} ({i18n.role_name(lang, role)})" for _, name, role in self.refused)
        return i18n.translate(lang, "export.refused", venues=named)


router = APIRouter()


def today(svc: Services) -> dt.date:
    return dt.datetime.fromtimestamp(svc.clock(), svc.tz).date()


def parse_day(text: str) -> dt.date:
    """A day as the date field sends it (2026-11-22) or as people type it (22/11/2026)."""
    text = text.strip()
    match = _DAY_VN.fullmatch(text)
    if match:
        return dt.date(int(match.group(3)), int(match.group(2)), int(match.group(1)))
    return dt.date.fromisoformat(text)


def parse_range(tz: ZoneInfo, start: str, end: str, fmt: str = "csv") -> tuple[dt.date, dt.date, int, int]:
    try:
        first, last = parse_day(start), parse_day(end)
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
    return i18n.translate(lang, str(exc), days=MAX_DAYS, first=f"{FIRST_DAY:%d/%m/%Y}", last=f"{LAST_DAY:%d/%m/%Y}")


def exportable(svc: Services, who: Visitor, venue_ids) -> list:
    """The venues, each checked for ``checkins.export``: 404 if one is not the person's
    (they learn nothing about it), VenuesRefused naming those their role may not export."""
    venues, refused = [], []
    for venue_id in sorted(set(venue_ids)):
        try:
            venue, _ = venue_for(svc, who, venue_id, "checkins.export")
        except HTTPException as exc:
            if exc.status_code != 403:
                raise
            venue = svc.venues.get(venue_id)
            refused.append((venue_id, venue.name, svc.venues.role_of(venue_id, who.account.id) or ""))
            continue
        venues.append(venue)
    if refused:
        raise VenuesRefused(refused)
    return venues


def venue_choices(svc: Services, who: Visitor) -> list[dict]:
    """Every venue of the person for the form: those they may export, and the others
    shown with the reason they cannot be chosen."""
    return [{"id": v.id, "name": v.name, "role": role, "may": allowed(role, "checkins.export")}
            for v, role in svc.venues.for_account(who.account.id)]


def own_job(svc: Services, rep: ReportServices, who: Visitor, job_id: str) -> tuple[ExportJob, list]:
    """This account's job and its venues, if it may still export every one of them (404
    otherwise, or 403 for a member whose role no longer exports); a file it may no
    longer have is deleted."""
    job = rep.jobs.get(job_id, who.account.id)
    if job is None:
        raise HTTPException(404)
    try:
        venues = [venue_for(svc, who, venue_id, "checkins.export")[0] for venue_id in job.venue_ids]
    except HTTPException:
        rep.jobs.withdraw(job.id, who.account.id)
        raise
    return job, venues


def job_json(job: ExportJob, lang: str = "en") -> dict:
    out = job.as_dict()
    out["error_text"] = job.error_text(lang)
    out["status_url"] = f"/api/exports/{job.id}"
    out["download_url"] = f"/exports/{job.id}/download" if job.state == "done" else None
    return out


def export_page(request: Request, svc: Services, rep: ReportServices, who: Visitor, chosen: list[int],
                status_code: int = 200, error: str = "", values=None):
    day = today(svc)
    values = values or {"start": (day - dt.timedelta(days=6)).isoformat(), "end": day.isoformat(), "format": "xlsx"}
    choices = venue_choices(svc, who)
    single = svc.venues.get(chosen[0]) if len(chosen) == 1 else None
    return render(request, who, "export.html", status_code, venue=single, choices=choices, chosen=set(chosen),
                  values=values, error=error, max_days=MAX_DAYS, jobs=rep.jobs.for_account(who.account.id))


def start_job(svc: Services, rep: ReportServices, who: Visitor, venues: list, start: str, end: str,
              fmt: str) -> ExportJob:
    """Check the days and format, queue the job and audit it (ExportRefused with no venue)."""
    if not venues:
        raise ExportRefused("export.refused.no_venue")
    first, last, start_ms, end_ms = parse_range(svc.tz, start, end, fmt)
    ids = [v.id for v in venues]
    job = rep.jobs.start(who.account.id, ids, fmt, start_ms, end_ms, export_filename(ids, first, last, fmt, who.lang),
                         who.lang)
    audit_exports(svc, who, venues, start_ms, end_ms, fmt, first, last)
    return job


def audit_exports(svc: Services, who: Visitor, venues: list, start_ms: int, end_ms: int, fmt: str,
                  first: dt.date | None = None, last: dt.date | None = None) -> None:
    """One audit entry per venue, in that venue's trail, with its own row count."""
    days = {"start": first.isoformat(), "end": last.isoformat()} if first and last else {}
    together = {"venues": len(venues)} if len(venues) > 1 else {}
    counts = count_rows_per_venue(svc.storage, [v.id for v in venues], start_ms, end_ms)
    for venue in venues:
        svc.audit.record("qrgate.venue.checkins.exported", account=who.account, ip=who.ip, venue_id=venue.id,
                         venue=venue.name, rows=counts.get(venue.id, 0), format=fmt, **days, **together)


def streaming_csv_response(svc: Services, who: Visitor, venues: list, start_ms: int, end_ms: int, filename: str,
                           first: dt.date | None = None, last: dt.date | None = None) -> Response:
    """The venues' masked check-ins in [start_ms, end_ms) as a streamed CSV download; audited."""
    audit_exports(svc, who, venues, start_ms, end_ms, "csv", first, last)
    names = {v.id: v.name for v in venues}
    body = csv_stream(export_columns(who.lang), checkin_rows(svc.storage, list(names), svc.tz, start_ms, end_ms,
                                                             who.lang, names))
    return StreamingResponse(body, media_type=MEDIA_TYPES["csv"],
                             headers={"Content-Disposition": f'attachment; filename="{filename}"'})


def refused_status(exc: ExportRefused) -> int:
    """400 for an export of no venue; 429 for the others (too many running, too big)."""
    return 400 if exc.key == "export.refused.no_venue" else 429


def _form_venues(form, default: list[int]) -> list[int]:
    ids = [str(v) for v in form.getlist("venue")][:MAX_VENUES]
    if not ids:
        return default
    if not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in ids):
        raise HTTPException(404)
    return [int(v) for v in ids]


async def _submit(request: Request, svc: Services, rep: ReportServices, who: Visitor, default: list[int]):
    raw = await request.form()
    form = {k: str(raw.get(k, ""))[:40] for k in ("start", "end", "format")}
    chosen = _form_venues(raw, default)
    try:
        venues = exportable(svc, who, chosen) if chosen else []
        # Counting the rows and claiming a place are database writes: off the event loop.
        job = await run_in_threadpool(start_job, svc, rep, who, venues, form["start"], form["end"], form["format"])
    except VenuesRefused as exc:
        return export_page(request, svc, rep, who, chosen, 403, exc.text(who.lang), form)
    except RangeError as exc:
        return export_page(request, svc, rep, who, chosen, 400, range_text(who.lang, exc), form)
    except ExportRefused as exc:
        return export_page(request, svc, rep, who, chosen, refused_status(exc), exc.text(who.lang), form)
    return flash(request, RedirectResponse(f"/exports/{job.id}", 303), "flash.export_started")


# -- the pages ------------------------------------------------------------------------

@router.get("/exports", response_class=HTMLResponse, include_in_schema=False)
def exports_form(request: Request, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """The export form with every venue the person may export chosen."""
    chosen = [c["id"] for c in venue_choices(svc, who) if c["may"]]
    return export_page(request, svc, rep, who, chosen)


@router.post("/exports", response_class=HTMLResponse, include_in_schema=False)
async def exports_submit(request: Request, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in_csrf)):
    return await _submit(request, svc, rep, who, [])


@router.get("/venues/{venue_id}/export", response_class=HTMLResponse, include_in_schema=False)
def export_form(request: Request, venue_id: int, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    return export_page(request, svc, rep, who, [venue.id])


@router.post("/venues/{venue_id}/export", response_class=HTMLResponse, include_in_schema=False)
async def export_submit(request: Request, venue_id: int, svc: Svc, rep: Reports,
                        who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    return await _submit(request, svc, rep, who, [venue.id])


# -- the API ----------------------------------------------------------------------------

def _api_start(svc: Services, rep: ReportServices, who: Visitor, venue_ids: list[int], body: ExportBody) -> dict:
    try:
        venues = exportable(svc, who, venue_ids)
        job = start_job(svc, rep, who, venues, body.start, body.end, body.format)
    except VenuesRefused as exc:
        raise HTTPException(403, {"message": exc.text("en"), "refused": [v for v, _, _ in exc.refused]}) from None
    except RangeError as exc:
        raise HTTPException(400, range_text("en", exc)) from None
    except ExportRefused as exc:
        raise HTTPException(refused_status(exc), str(exc)) from None
    return job_json(job, who.lang)


@router.post("/api/exports", tags=["exports"], status_code=202)
def api_exports_start(body: ExportsBody, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in_csrf)):
    """Start one export of several venues' masked check-ins (a column says each row's
    venue). Every venue needs checkins.export: one the account may not export is refused
    (403, ``refused`` lists them, nothing is made); one it does not belong to is 404."""
    if not all(0 < v < 2**63 for v in body.venues):
        raise HTTPException(404)
    return _api_start(svc, rep, who, body.venues, body)


@router.post("/api/venues/{venue_id}/exports", tags=["exports"], status_code=202)
def api_export_start(venue_id: int, body: ExportBody, svc: Svc, rep: Reports,
                     who: Visitor = Depends(logged_in_csrf)):
    """Start an export of the venue's masked check-ins (owners and managers); poll
    ``status_url`` until ``state`` is ``done``, then fetch ``download_url`` once."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    return _api_start(svc, rep, who, [venue.id], body)


@router.get("/api/exports/{job_id}", tags=["exports"])
def api_export_status(job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    """Progress of one of this account's exports: rows done of total, percent, state
    (``error_text``: what went wrong, in the visitor's language)."""
    return job_json(own_job(svc, rep, who, job_id)[0], who.lang)


@router.get("/exports/{job_id}", response_class=HTMLResponse, include_in_schema=False)
def export_progress(request: Request, job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    job, venues = own_job(svc, rep, who, job_id)
    return render(request, who, "export_job.html", job=job, venues=venues,
                  venue=venues[0] if len(venues) == 1 else None, error=job.error_text(who.lang))


@router.get("/exports/{job_id}/download", include_in_schema=False)
def export_download(job_id: str, svc: Svc, rep: Reports, who: Visitor = Depends(logged_in)):
    own_job(svc, rep, who, job_id)  # the right to export is checked at the download, not only at the start
    job = rep.jobs.take(job_id, who.account.id)
    if job is None:
        raise HTTPException(404)
    return FileResponse(job.path, media_type=MEDIA_TYPES[job.fmt], filename=job.filename,
                        background=BackgroundTask(rep.jobs.discard, job))


@router.get("/exports.csv", tags=["exports"], response_class=Response)
def exports_csv_now(svc: Svc, venue: list[str] = Query([], max_length=MAX_VENUES),
                    start: str = Query("", max_length=20, alias="from"),
                    end: str = Query("", max_length=20, alias="to"), who: Visitor = Depends(logged_in)):
    """Several venues' masked check-ins from ``from`` to ``to`` (default the last 7 days)
    as one CSV streamed while it is read; ``venue`` repeated, each needs checkins.export."""
    if not venue or not all(v.isascii() and v.isdigit() and len(v) <= 18 for v in venue):
        raise HTTPException(404)
    try:
        venues = exportable(svc, who, [int(v) for v in venue])
    except VenuesRefused as exc:
        raise HTTPException(403, exc.text(who.lang)) from None
    return _csv_now(svc, who, venues, start, end)


def _csv_now(svc: Services, who: Visitor, venues: list, start: str, end: str) -> Response:
    day = today(svc)
    try:
        first, last, start_ms, end_ms = parse_range(svc.tz, start or (day - dt.timedelta(days=6)).isoformat(),
                                                    end or day.isoformat())
    except RangeError as exc:
        raise HTTPException(400, range_text(who.lang, exc)) from None
    filename = export_filename([v.id for v in venues], first, last, "csv", who.lang)
    return streaming_csv_response(svc, who, venues, start_ms, end_ms, filename, first, last)


@router.get("/venues/{venue_id}/export.csv", tags=["exports"], response_class=Response)
def export_csv_now(venue_id: int, svc: Svc, start: str = Query("", max_length=20, alias="from"),
                   end: str = Query("", max_length=20, alias="to"), who: Visitor = Depends(logged_in)):
    """The venue's masked check-ins from ``from`` to ``to`` (YYYY-MM-DD, default the last
    7 days) as CSV streamed while it is read: fine for short periods."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    return _csv_now(svc, who, [venue], start, end)


@router.get("/venues/{venue_id}/checkins.csv", tags=["exports"], response_class=Response)
def export_csv_all(venue_id: int, svc: Svc, who: Visitor = Depends(logged_in)):
    """Every check-in the venue still has, masked, as streamed CSV (owners and managers)."""
    venue, _ = venue_for(svc, who, venue_id, "checkins.export")
    filename = f"checkins-venue-{venue.id}.csv" if who.lang == "en" else f"luot-ra-vao-dia-diem-{venue.id}.csv"
    # Before 1970 too: a station's clock may have said anything.
    return streaming_csv_response(svc, who, [venue], -ALL_TIME_MS, ALL_TIME_MS, filename)
