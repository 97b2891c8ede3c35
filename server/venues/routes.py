"""Venues: the list, creating, editing, closing and reopening one, its page, its
poster, and their JSON API; the administrative areas a venue is placed in."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from server.audit import register_actions
from server.checkins.views import venue_checkins
from server.venues.access import venue_for
from server.venues.permissions import ROLES, allowed, may_share, role_rights
from server.venues.poster import poster_pdf, poster_png
from server.venues.venues import Venue, VenueError, VenueInput, VENUE_KINDS, change_words
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf, public_base
from server.web import i18n
from server.web.pages import flash, render

router = APIRouter()

i18n.register({
    "flash.venue_created": ("Đã tạo địa điểm.", "Venue created."),
    "flash.venue_saved": ("Đã lưu thay đổi của địa điểm.", "Venue saved."),
    "flash.venue_closed": ("Đã đóng cửa địa điểm: không nhận thêm lượt khai báo, dữ liệu cũ vẫn được giữ.",
                           "Venue closed: no new check-ins; its data is kept."),
    "flash.venue_reopened": ("Đã mở lại địa điểm.", "Venue reopened."),
    "venue.main_actions": ("Thao tác chính", "Main actions"),
    "venue.group_manage": ("Quản lý", "Manage"),
    "venue.group_people": ("Người lao động", "Workers"),
    "venue.group_records": ("Số liệu và nhật ký", "Records"),
    "venue.poster_png": ("Mã QR dạng ảnh (PNG)", "Poster as an image (PNG)"),
    "venue.dashboard": ("Số liệu theo ngày", "Scans per day"),
    "venue.audit": ("Nhật ký thay đổi", "Change log"),
    "venue.audit_hint": ("Ai đã sửa, chia sẻ, tải dữ liệu của địa điểm và khi nào (không phải lượt quét)",
                         "Who edited, shared or exported the venue's data, and when (not the scans)"),
    "venue.legacy_area": ("Địa chỉ hành chính của địa điểm theo địa giới cũ (trước 01/07/2025), cần chuyển sang"
                          " tỉnh và xã/phường mới.",
                          "The venue's area is an old code (before 1 July 2025): it needs converting to the new"
                          " province and commune."),
    "venue.legacy_fix": ("Chọn lại xã/phường", "Choose the commune again"),
    "venue.closed_since": ("Địa điểm đã đóng cửa từ ngày {day}: không nhận khai báo mới, dữ liệu cũ vẫn được giữ.",
                           "This venue closed on {day}: it takes no new check-ins; its data is kept."),
    "venue.late_scans": ("Các trạm vẫn gửi {count} lượt quét sau khi đóng cửa (lần cuối {last}): hãy ngừng hoặc"
                         " chuyển các trạm này.",
                         "Its stations still sent {count} scans after it closed (last at {last}): retire or move"
                         " them."),
    "venue.selfcheckin_closed": ("Trang tự khai báo đang tắt vì địa điểm đã đóng cửa.",
                                 "The self check-in page is off while the venue is closed."),
    "venue.contact": ("Người liên hệ với cơ quan y tế", "Contact person for the authorities"),
    "venue.contact_none": ("Chưa có người liên hệ.", "No contact person yet."),
    "venue.contact_hint": ("Cán bộ y tế phụ trách khu vực thấy người liên hệ khi truy vết.",
                           "Health officers of the area see the contact person when they trace."),
    "venue.contact_name": ("Họ tên người liên hệ", "Contact person's name"),
    "venue.contact_role": ("Chức vụ", "Position"),
    "venue.contact_phone": ("Số điện thoại liên hệ", "Contact phone number"),
    "venue.leave": ("Rời địa điểm", "Leave"),
    "venue.leave_confirm": ("Rời địa điểm này? Bạn sẽ không còn quyền truy cập.",
                            "Leave this venue? You will lose access to it."),
    "venue.revoke_confirm": ("Hủy quyền truy cập của {phone}?", "Remove {phone}'s access?"),
    "venue.cancel_confirm": ("Hủy lời mời gửi tới {phone}?", "Cancel the invitation to {phone}?"),
    "venue.rights_title": ("Mỗi vai trò được làm gì", "What each role may do"),
    "venue.close_title": ("Đóng cửa địa điểm", "Close the venue"),
    "venue.close_hint": ("Khi đóng cửa: trang tự khai báo và mã cài đặt trạm ngừng hoạt động; dữ liệu đã có vẫn được"
                         " giữ theo thời gian lưu trữ và vẫn truy vết được. Có thể mở lại.",
                         "Closed, the self check-in page and station setup codes stop working; the data is kept for"
                         " the retention period and can still be traced. It can be reopened."),
    "venue.close": ("Đóng cửa địa điểm", "Close the venue"),
    "venue.close_confirm": ("Đóng cửa địa điểm {venue}? Người đến sẽ không tự khai báo được nữa.",
                            "Close {venue}? People will no longer be able to check in themselves."),
    "venue.reopen_hint": ("Mở lại để nhận khai báo và cài đặt trạm như trước.",
                          "Reopen to take check-ins and set up stations again."),
    "venue.reopen": ("Mở lại địa điểm", "Reopen the venue"),
    "venue.closed_tag": ("Đã đóng cửa", "Closed"),
    "venue.old_area": ("Địa chỉ hành chính cũ: {area}. Hãy chọn tỉnh và xã/phường theo địa giới mới.",
                       "Old area: {area}. Choose the province and commune on the new map."),
    "venue.commune": ("Xã/Phường/Đặc khu", "Commune/Ward"),
    "venue.commune_hint": ("Theo địa giới hành chính từ 01/07/2025 (34 tỉnh, thành phố; không còn cấp huyện).",
                           "As the map stands since 1 July 2025 (34 provinces; no district level)."),
}, history={
    "qrgate.venue.edited": ("Chỉnh sửa địa điểm {venue}: {fields_vi}", "Edited venue {venue}: {fields_en}"),
    "qrgate.venue.closed": ("Đóng cửa địa điểm {venue}", "Closed venue {venue}"),
    "qrgate.venue.reopened": ("Mở lại địa điểm {venue}", "Reopened venue {venue}"),
})
register_actions("qrgate.venue.edited", "qrgate.venue.closed", "qrgate.venue.reopened")


class VenueBody(BaseModel):
    name: str = Field("", max_length=2000)
    kind: str = Field(max_length=40, examples=["market"])
    label: str = Field("", max_length=2000)
    address: str = Field("", max_length=2000)
    province: str = Field(max_length=10, examples=["79"], description="2 digits, the 2025 map")
    ward: str = Field(max_length=10, examples=["26743"], description="a commune or ward of the province, 5 digits")
    parent_id: int | None = None
    plate: str = Field("", max_length=40)
    contact_name: str = Field("", max_length=2000, description="the contact person for the authorities")
    contact_role: str = Field("", max_length=2000)
    contact_phone: str = Field("", max_length=40)


def selfcheckin_url(svc: Services, request: Request, venue: Venue) -> str:
    """The address a venue's poster QR carries."""
    return f"{public_base(request)}/c/{svc.venues.ensure_public_token(venue.id)}"


def venue_json(svc: Services, venue: Venue, role: str | None = None) -> dict:
    data = venue.as_dict()
    data.pop("public_token")
    data["area"] = svc.venues.area_text(venue)
    data["area_needs_conversion"] = venue.legacy_area
    data["closed"] = venue.closed
    if role:
        data["role"] = role
    if not allowed(role, "venue.edit"):  # the contact person is for owners, managers and officers
        for key in ("contact_name", "contact_role", "contact_phone"):
            data.pop(key)
    return data


def venue_input(form: dict) -> VenueInput:
    parent = str(form.get("parent_id") or "").strip()
    try:
        parent_id = int(parent) if parent else None
    except ValueError:
        raise VenueError({"parent_id": "Hãy chọn một địa điểm bạn quản lý."}) from None
    return VenueInput(**{k: str(form.get(k) or "") for k in VenueInput.TEXT_FIELDS}, parent_id=parent_id)


def form_context(svc: Services, who: Visitor, values: dict, errors: dict, venue: Venue | None = None) -> dict:
    venue_id = venue.id if venue else None
    parents = [(v, r) for v, r in svc.venues.for_account(who.account.id)
               if r in ("owner", "manager") and v.id != venue_id]
    province = str(values.get("province") or "")
    return {"values": values, "errors": errors, "kinds": VENUE_KINDS, "provinces": svc.areas.provinces.values(),
            "wards": svc.areas.wards_of(province), "parents": parents, "venue_id": venue_id,
            "old_area": svc.venues.area_text(venue) if venue is not None and venue.legacy_area else ""}


@router.get("/venues", response_class=HTMLResponse, include_in_schema=False)
def venues_page(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    return render(request, who, "venues.html", venues=svc.venues.for_account(who.account.id),
                  invitations=svc.venues.invitations_waiting(who.account.phone),
                  address_text=svc.venues.address_text)


@router.get("/venues/new", response_class=HTMLResponse, include_in_schema=False)
def venue_new_page(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    return render(request, who, "venue_form.html", **form_context(svc, who, {}, {}))


@router.post("/venues/new", response_class=HTMLResponse, include_in_schema=False)
async def venue_create(svc: Svc, request: Request, who: Visitor = Depends(logged_in_csrf)):
    form = dict(await request.form())
    try:
        venue = svc.venues.create(venue_input(form), who.account)
    except VenueError as exc:
        return render(request, who, "venue_form.html", 400, **form_context(svc, who, form, exc.problems))
    svc.audit.record("qrgate.venue.created", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name)
    return flash(request, RedirectResponse(f"/venues/{venue.id}", 303), "flash.venue_created")


@router.get("/venues/{venue_id}", response_class=HTMLResponse, include_in_schema=False)
def venue_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    venue, role = venue_for(svc, who, venue_id, "venue.view")
    parent = svc.venues.get(venue.parent_id) if venue.parent_id else None
    can = {action: allowed(role, action) for action in ("venue.edit", "venue.close", "poster.download",
                                                        "checkins.export", "history.view", "members.view",
                                                        "stations.enrol", "roster.view", "reports.view",
                                                        "passes.print", "phone.scan")}
    can["share"] = any(may_share(role, r) for r in ROLES)
    can["dashboard"] = dashboard_visible(svc, who, venue)
    members = svc.venues.members(venue_id) if can["members.view"] else []
    pending = svc.venues.pending_for_venue(venue_id) if can["members.view"] else []
    late, late_ms = svc.venues.scans_after_closing(venue)
    return render(request, who, "venue.html", venue=venue, role=role, can=can, parent=parent,
                  address=svc.venues.address_text(venue), members=members, pending=pending, may_share=lambda r: may_share(role, r), role_rights=role_rights(),
                  rows=venue_checkins(svc.storage, venue_id, svc.tz, 50), timezone=svc.timezone,
                  selfcheckin_url=selfcheckin_url(svc, request, venue), closed_text=day_text(svc, venue.closed_ms),
                  late_scans=late, late_text=day_text(svc, late_ms, with_time=True))


def day_text(svc: Services, ms: int | None, with_time: bool = False) -> str:
    if ms is None:
        return ""
    return dt.datetime.fromtimestamp(ms / 1000, svc.tz).strftime("%d/%m/%Y %H:%M" if with_time else "%d/%m/%Y")


def dashboard_visible(svc: Services, who: Visitor, venue: Venue) -> bool:
    """Whether the visitor may open the venue's dashboard (operators, officers of its area)."""
    return who.account.is_operator or svc.officers.covers(who.account.id, venue)


@router.get("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
def venue_edit_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "venue.edit")
    values = venue.as_dict()
    values["parent_id"] = venue.parent_id or ""
    if venue.legacy_area:  # an old code: the owner chooses the commune again on the 2025 map
        values["province"] = values["ward"] = ""
    return render(request, who, "venue_form.html", **form_context(svc, who, values, {}, venue))


def save_edit(svc: Services, who: Visitor, venue_id: int, data: VenueInput) -> Venue:
    venue, changes = svc.venues.update(venue_id, data, who.account)
    svc.audit.record("qrgate.venue.edited", account=who.account, ip=who.ip, venue_id=venue.id, venue=venue.name,
                     changed=changes, **change_words(changes))
    return venue


@router.post("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
async def venue_edit(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "venue.edit")
    form = dict(await request.form())
    try:
        venue = save_edit(svc, who, venue_id, venue_input(form))
    except VenueError as exc:
        return render(request, who, "venue_form.html", 400, **form_context(svc, who, form, exc.problems, venue))
    return flash(request, RedirectResponse(f"/venues/{venue.id}", 303), "flash.venue_saved")


def set_closed(svc: Services, who: Visitor, venue_id: int, closed: bool) -> tuple[Venue, str]:
    """Close or reopen a venue (audited, once); the venue as it is now and the visitor's role."""
    venue, role = venue_for(svc, who, venue_id, "venue.close")
    if venue.closed == closed:
        return venue, role
    venue = svc.venues.close(venue_id) if closed else svc.venues.reopen(venue_id)
    svc.audit.record("qrgate.venue.closed" if closed else "qrgate.venue.reopened", account=who.account, ip=who.ip,
                     venue_id=venue.id, venue=venue.name)
    return venue, role


@router.post("/venues/{venue_id}/close", include_in_schema=False)
def venue_close(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    set_closed(svc, who, venue_id, True)
    return flash(request, RedirectResponse(f"/venues/{venue_id}", 303), "flash.venue_closed")


@router.post("/venues/{venue_id}/reopen", include_in_schema=False)
def venue_reopen(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    set_closed(svc, who, venue_id, False)
    return flash(request, RedirectResponse(f"/venues/{venue_id}", 303), "flash.venue_reopened")


@router.post("/api/venues/{venue_id}/close", tags=["venues"])
def api_venue_close(svc: Svc, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    """Close a venue (owners): its data is kept for the retention period; self check-in
    and enrolment codes are refused until it is reopened. Audited."""
    return venue_json(svc, *set_closed(svc, who, venue_id, True))


@router.post("/api/venues/{venue_id}/reopen", tags=["venues"])
def api_venue_reopen(svc: Svc, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    """Reopen a closed venue (owners). Audited."""
    return venue_json(svc, *set_closed(svc, who, venue_id, False))


@router.get("/api/areas", tags=["venues"])
def api_areas(svc: Svc):
    """The 2025 map: every province with its communes and wards, and their codes."""
    return {"source": svc.areas.source, "provinces": svc.areas.as_tree()}


@router.get("/api/areas/{province}", tags=["venues"])
def api_province(svc: Svc, province: str):
    """One province's communes and wards, by name (the venue form asks for them)."""
    area = svc.areas.provinces.get(province)
    if area is None:
        raise HTTPException(404)
    return {"code": area.code, "name": area.name, "wards": svc.areas.wards_json(province)}


@router.get("/api/venues", tags=["venues"])
def api_venues(svc: Svc, who: Visitor = Depends(logged_in)):
    """The venues this account has a role at."""
    return {"venues": [venue_json(svc, v, r) for v, r in svc.venues.for_account(who.account.id)]}


@router.post("/api/venues", tags=["venues"], status_code=201)
def api_venue_create(svc: Svc, body: VenueBody, who: Visitor = Depends(logged_in_csrf)):
    """Register a venue; the caller becomes its owner. 422 lists the problems per field."""
    try:
        venue = svc.venues.create(VenueInput(**body.model_dump()), who.account)
    except VenueError as exc:
        return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
    svc.audit.record("qrgate.venue.created", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name)
    return venue_json(svc, venue, "owner")


@router.get("/api/venues/{venue_id}", tags=["venues"])
def api_venue(svc: Svc, venue_id: int, request: Request, who: Visitor = Depends(logged_in)):
    """One venue, with the caller's role and its self check-in URL."""
    venue, role = venue_for(svc, who, venue_id, "venue.view")
    return {**venue_json(svc, venue, role), "selfcheckin_url": selfcheckin_url(svc, request, venue)}


@router.put("/api/venues/{venue_id}", tags=["venues"])
def api_venue_update(svc: Svc, venue_id: int, body: VenueBody, who: Visitor = Depends(logged_in_csrf)):
    """Change a venue (owners and managers)."""
    _, role = venue_for(svc, who, venue_id, "venue.edit")
    try:
        venue = save_edit(svc, who, venue_id, VenueInput(**body.model_dump()))
    except VenueError as exc:
        return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
    return venue_json(svc, venue, role)


@router.get("/api/venues/{venue_id}/checkins", tags=["venues"])
def api_venue_checkins(svc: Svc, venue_id: int, limit: int = Query(50, ge=1, le=500),
                       before_id: int | None = Query(None, ge=1), who: Visitor = Depends(logged_in)):
    """The venue's latest check-ins, masked, newest first."""
    venue_for(svc, who, venue_id, "checkins.view")
    rows = venue_checkins(svc.storage, venue_id, svc.tz, limit, before_id)
    return {"checkins": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


@router.get("/venues/{venue_id}/poster.{fmt}", tags=["venues"], response_class=Response)
def venue_poster(svc: Svc, venue_id: int, fmt: str, request: Request, who: Visitor = Depends(logged_in)):
    """The A4 landscape poster with the venue's self check-in QR, as ``png`` or ``pdf``."""
    if fmt not in ("png", "pdf"):
        raise HTTPException(404)
    venue, _ = venue_for(svc, who, venue_id, "poster.download")
    make = poster_png if fmt == "png" else poster_pdf
    data = make(selfcheckin_url(svc, request, venue), venue.name, venue.address, svc.venues.area_text(venue))
    svc.audit.record("qrgate.venue.poster.downloaded", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name, format=fmt.upper())
    name = poster_filename(venue.id, fmt, who.lang)
    return Response(data, media_type="image/png" if fmt == "png" else "application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def poster_filename(venue_id: int, fmt: str, lang: str) -> str:
    """ASCII, in the reader's words: ``ma-qr-dia-diem-3.pdf`` (``venue-3-poster.pdf``)."""
    return f"venue-{venue_id}-poster.{fmt}" if lang == "en" else f"ma-qr-dia-diem-{venue_id}.{fmt}"
