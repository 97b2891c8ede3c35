"""Health officers' areas and contact tracing (F16) on the web: ``/area``, ``/api/area``,
the trace page ``/trace`` (and its CSV, ``/trace.csv``) and ``/api/trace``.

Tracing is for health officers only and only inside their areas; each run (and each
CSV export of one) is audited as ``qrgate.trace.run`` (server/checkins/traces.py);
opening the trace form on a check-in shows that person in full, so it is audited as a
full read (``qrgate.checkins.unmasked.read``) and limited to TRACE_LOOKUPS_PER_HOUR an
hour per account (server/checkins/query.py). Anything outside what a visitor may see
answers 404, so venue and check-in ids reveal nothing; the pages do not exist for
anyone who is not an officer (404).
"""

from __future__ import annotations

import datetime as dt
from typing import Literal

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, StreamingResponse
from pydantic import BaseModel, Field

from server.checkins.query import TRACE_LOOKUPS_PER_HOUR, trace_lookup_allowed
from server.checkins.scope import Scope, scope_of
from server.checkins.traces import (TraceInputError, area_contacts, checkin_card, person_from_card,
                                    person_from_checkin, run_trace, trace_from_form)
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import render

router = APIRouter()

i18n.register({
    "area.title": ("Khu vực phụ trách", "My areas"),
    "area.intro": ("Bạn là cán bộ y tế của các khu vực dưới đây: bạn xem đầy đủ thông tin các lượt quét tại địa điểm trong khu vực và truy vết tiếp xúc. Mọi lần xem đều được ghi nhật ký.",
                   "You are a health officer for the areas below: you read scans at their venues in full and trace contacts. Every reading is recorded."),
    "area.venues": ("{count} địa điểm", "{count} venues"),
    "area.history": ("Lịch sử quét của khu vực", "The area's scan history"),
    "trace.title": ("Truy vết tiếp xúc", "Contact tracing"),
    "trace.from_row": ("Người cần truy vết", "Person to trace"),
    "trace.kind": ("Loại giấy tờ", "Card"),
    "trace.kind.cccd": ("CCCD/CMND", "Citizen ID card"),
    "trace.kind.bhyt": ("Thẻ BHYT", "Health-insurance card"),
    "trace.kind.national": ("Mã QR cá nhân (VNeID)", "National personal QR"),
    "trace.kind.pass": ("Thẻ QR của hệ thống", "QR gate pass"),
    "trace.id": ("Số giấy tờ", "ID number"),
    "trace.name": ("Họ tên (chỉ với mã QR cá nhân có số bị che)", "Name (only for a national QR with a masked id)"),
    "trace.birth": ("Ngày sinh, ví dụ 30/11/2001 (như trên)", "Birth date, e.g. 30/11/2001 (likewise)"),
    "trace.margin": ("Khoảng đệm (phút)", "Margin (minutes)"),
    "trace.stay": ("Thời gian ở mặc định khi thiếu lượt ra (phút)", "Default stay without an exit scan (minutes)"),
    "trace.run": ("Truy vết", "Trace"),
    "trace.csv": ("Tải kết quả (CSV)", "Download (CSV)"),
    "trace.visits": ("Các lượt có mặt", "Visits"),
    "trace.contacts": ("Người tiếp xúc (nhiều thời gian chung nhất trước)", "Contacts (most time together first)"),
    "trace.no_contacts": ("Không có người tiếp xúc.", "No contacts."),
    "trace.no_visits": ("Không có lượt quét nào của người này tại khu vực của bạn trong thời gian đã chọn.",
                        "This person has no scans in your areas in this period."),
    "trace.elsewhere": ("{count} lượt có mặt tại địa điểm ngoài khu vực của bạn không được hiển thị; hãy liên hệ cán bộ y tế khu vực đó.",
                        "{count} visits at venues outside your areas are not shown; contact those areas' health officers."),
    "trace.rank": ("Hạng", "Rank"),
    "trace.overlap": ("Thời gian chung", "Time together"),
    "trace.minutes": ("{n} phút", "{n} min"),
    "trace.under_a_minute": ("dưới 1 phút", "under 1 min"),
    "trace.first": ("Lần đầu tiếp xúc", "First contact"),
    "trace.again": ("Truy vết người này", "Trace this person"),
    "trace.error": ("Không truy vết được: {detail}", "Cannot trace: {detail}"),
    "trace.contact": ("Người liên hệ của địa điểm", "Venue contact person"),
    "trace.box": ("Truy vết nhanh", "Quick trace"),
    "area.today": ("Hôm nay", "Today"),
    "area.today_scans": ("{scans} lượt quét tại {active}/{registered} địa điểm", "{scans} scans at {active} of {registered} venues"),
    "area.legacy": ("Địa giới cũ (trước 01/07/2025): cần chuyển đổi", "Old map (before 1 July 2025): to be converted"),
    "area.dashboard": ("Số liệu khu vực", "Area dashboard"),
    "area.contacts": ("Người liên hệ của các địa điểm", "Venues' contact persons"),
    "area.contacts_more": ("Hiện {shown} trên {total} địa điểm có người liên hệ.", "Showing {shown} of {total} venues with a contact person."),
    "area.my_venues": ("Địa điểm của tôi", "My venues"),
    "trace.csv.rank": ("Hạng", "Rank"),
    "trace.csv.kind": ("Loại giấy tờ", "Card"),
    "trace.csv.minutes": ("Số phút chung", "Minutes together"),
    "trace.csv.venues": ("Địa điểm", "Venues"),
    "trace.csv.first": ("Lần đầu tiếp xúc", "First contact"),
    "trace.limited": ("Bạn đã mở quá {count} lượt truy vết từ lượt quét trong một giờ; hãy thử lại sau.",
                      "You opened more than {count} traces from check-ins in an hour; try again later."),
})


class TraceBody(BaseModel):
    checkin_id: int | None = Field(None, ge=1, le=2**62, description="trace the person of this check-in")
    kind: Literal["cccd", "bhyt", "national", "pass"] | None = Field(None, description="card, with id_number")
    id_number: str = Field("", max_length=40, examples=["024083123451"])
    name: str = Field("", max_length=200, description="only for a national QR whose id is masked")
    birth: str = Field("", max_length=10, description="only for a national QR whose id is masked")
    date_from: dt.date = Field(alias="from", examples=["2026-09-08"])
    date_to: dt.date = Field(alias="to", examples=["2026-09-21"])
    margin_minutes: int = Field(15, ge=0, le=240)
    stay_minutes: int = Field(60, ge=5, le=1440)


def require_officer(svc: Services, who: Visitor) -> Scope:
    scope = scope_of(svc, who)
    if not scope.areas:
        raise HTTPException(404)  # not an officer: the page does not exist for them
    return scope


# -- officers: areas ---------------------------------------------------------------------------

def areas_of(svc: Services, who: Visitor, scope: Scope) -> list[dict]:
    return [{"code": a.code, "name": a.name, "level": a.level, "legacy": a.legacy,
             "venues": len(svc.officers.venue_ids(who.account.id, a.code))} for a in scope.areas]


def today_numbers(svc: Services, areas: list[dict]) -> None:
    """Today's numbers of each area on the 2025 map (venues, venues with scans, scans)."""
    from server.reports.dashboard import area_dashboard

    today = dt.datetime.fromtimestamp(svc.clock(), svc.tz).date()
    for a in areas:
        a["today"] = None if a["legacy"] else area_dashboard(svc.storage, svc.areas, a["code"], today, today,
                                                             svc.tz)["totals"]


AREA_CONTACTS_SHOWN = 200


@router.get("/area", response_class=HTMLResponse, include_in_schema=False)
def area_home(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    """Where an officer lands: their areas with today's numbers, the trace box and the
    venues' contact persons."""
    scope = require_officer(svc, who)
    areas = areas_of(svc, who, scope)
    today_numbers(svc, areas)
    contacts = area_contacts(svc.storage, scope.full_ids)
    return render(request, who, "area_home.html", areas=areas, form=trace_form_defaults(svc),
                  contacts=contacts[:AREA_CONTACTS_SHOWN], contacts_total=len(contacts),
                  has_venues=bool(svc.venues.for_account(who.account.id)))


@router.get("/api/area", tags=["tracing"])
def api_area(svc: Svc, who: Visitor = Depends(logged_in)):
    """Your health-officer areas and how many venues each holds (404: not an officer)."""
    scope = require_officer(svc, who)
    return {"areas": areas_of(svc, who, scope)}


# -- tracing -----------------------------------------------------------------------------------

def trace_form_defaults(svc: Services) -> dict:
    today = dt.datetime.fromtimestamp(svc.clock(), svc.tz).date()
    return {"checkin": "", "kind": "cccd", "id_number": "", "name": "", "birth": "",
            "from": (today - dt.timedelta(days=13)).isoformat(), "to": today.isoformat(), "margin": 15,
            "stay": 60}


@router.get("/trace", response_class=HTMLResponse, include_in_schema=False)
def trace_page(svc: Svc, request: Request, who: Visitor = Depends(logged_in),
               checkin: int | None = Query(None, ge=1, le=2**62)):
    scope = require_officer(svc, who)
    form = trace_form_defaults(svc)
    person = None
    if checkin is not None:
        person_from_checkin(svc.storage, scope, checkin)  # 404 outside the officer's areas
        # The form shows the person in full: a full read like a history page, and
        # check-in ids are sequential, so paging through them is limited too.
        if not trace_lookup_allowed(svc, who):
            error = i18n.translate(who.lang, "trace.limited", count=TRACE_LOOKUPS_PER_HOUR)
            return render(request, who, "trace.html", 429, form=form, person=None, result=None, error=error)
        row = checkin_card(svc.storage, checkin)
        svc.audit.record("qrgate.checkins.unmasked.read", account=who.account, ip=who.ip, venue_id=row[4],
                         rows=1, venues=[row[4]], checkin=checkin, page="trace")
        form["checkin"] = str(checkin)
        person = {"kind": row[0], "id_number": row[1], "name": row[2], "birth": row[3]}
    return render(request, who, "trace.html", form=form, person=person, result=None, error="")


def trace_form_values(checkin: str, kind: str, id_number: str, name: str, birth: str, date_from: str,
                      date_to: str, margin: str, stay: str) -> dict:
    return {"checkin": checkin.strip(), "kind": kind, "id_number": id_number, "name": name, "birth": birth,
            "from": date_from.strip(), "to": date_to.strip(), "margin": margin.strip(), "stay": stay.strip()}


form_fields = dict(
    checkin=Form("", max_length=20), kind=Form("", max_length=20), id_number=Form("", max_length=40),
    name=Form("", max_length=200), birth=Form("", max_length=10), date_from=Form("", alias="from", max_length=10),
    date_to=Form("", alias="to", max_length=10), margin=Form("15", max_length=4), stay=Form("60", max_length=5),
)


@router.post("/trace", response_class=HTMLResponse, include_in_schema=False)
def trace_submit(svc: Svc, request: Request, who: Visitor = Depends(logged_in_csrf),
                 checkin: str = form_fields["checkin"], kind: str = form_fields["kind"],
                 id_number: str = form_fields["id_number"], name: str = form_fields["name"],
                 birth: str = form_fields["birth"], date_from: str = form_fields["date_from"],
                 date_to: str = form_fields["date_to"], margin: str = form_fields["margin"],
                 stay: str = form_fields["stay"]):
    scope = require_officer(svc, who)
    form = trace_form_values(checkin, kind, id_number, name, birth, date_from, date_to, margin, stay)
    try:
        result = trace_from_form(svc, who, scope, form, "page")
    except TraceInputError as exc:
        return render(request, who, "trace.html", 422, form=form, person=None, result=None, error=str(exc))
    return render(request, who, "trace.html", form=form, person=result["person"], result=result, error="")


@router.post("/trace.csv", include_in_schema=False)
def trace_csv(svc: Svc, who: Visitor = Depends(logged_in_csrf), checkin: str = form_fields["checkin"],
              kind: str = form_fields["kind"], id_number: str = form_fields["id_number"],
              name: str = form_fields["name"], birth: str = form_fields["birth"],
              date_from: str = form_fields["date_from"], date_to: str = form_fields["date_to"],
              margin: str = form_fields["margin"], stay: str = form_fields["stay"]):
    scope = require_officer(svc, who)
    form = trace_form_values(checkin, kind, id_number, name, birth, date_from, date_to, margin, stay)
    try:
        result = trace_from_form(svc, who, scope, form, "csv")
    except TraceInputError as exc:
        raise HTTPException(422, str(exc)) from None
    return trace_csv_response(svc, result, who.lang)


def trace_csv_response(svc: Services, result: dict, lang: str) -> StreamingResponse:
    """The ranked contacts as CSV, in the visitor's language (Vietnamese by default)."""
    from server.reports.export import csv_stream

    def t(key: str) -> str:
        return i18n.translate(lang, key)

    columns = (t("trace.csv.rank"), t("checkins.name"), t("checkins.id"), t("trace.csv.kind"), t("checkins.birth"),
               t("trace.csv.minutes"), t("trace.csv.venues"), t("trace.csv.first"))
    rows = ([c["rank"], c["name"], c["id_number"], i18n.card_name(lang, c["kind"]), i18n.birth_text(c["birth"]),
             c["whole_minutes"], "; ".join(c["venue_names"]), c["first_text"]] for c in result["contacts"])
    first, last = (dt.datetime.fromtimestamp(ms / 1000, svc.tz) for ms in (result["from_ms"], result["to_ms"] - 1))
    # ASCII, in the reader's words, dates as people write them: truy-vet-09-11-2026-den-20-11-2026.csv
    name = (f"trace-{first:%d-%m-%Y}-to-{last:%d-%m-%Y}.csv" if lang == "en"
            else f"truy-vet-{first:%d-%m-%Y}-den-{last:%d-%m-%Y}.csv")
    return StreamingResponse(csv_stream(columns, rows), media_type="text/csv; charset=utf-8",
                             headers={"Content-Disposition": f'attachment; filename="{name}"'})


@router.post("/api/trace", tags=["tracing"])
def api_trace(svc: Svc, body: TraceBody, who: Visitor = Depends(logged_in_csrf),
              format: Literal["json", "csv"] = Query("json", description="csv: the ranked contacts as CSV")):
    """Trace one person (by one of their check-ins, or by card kind and id number) over
    at most 62 days inside your health-officer areas: their visits and everyone whose
    presence overlapped, most time together first. Audited; 404 for non-officers."""
    scope = require_officer(svc, who)
    try:
        if body.checkin_id is not None:
            person_key = person_from_checkin(svc.storage, scope, body.checkin_id)
        else:
            person_key = person_from_card(body.kind, body.id_number, body.name, body.birth)
        result = run_trace(svc, who, scope, person_key, body.date_from, body.date_to, body.margin_minutes,
                           body.stay_minutes, format)
    except TraceInputError as exc:
        return JSONResponse({"detail": str(exc)}, 422)
    if format == "csv":
        return trace_csv_response(svc, result, who.lang)
    return result
