"""Venues: the list, creating and editing one, its page, its poster, and their JSON API;
the administrative areas a venue is placed in."""

from __future__ import annotations

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from server.checkins.views import venue_checkins
from server.venues.access import venue_for
from server.venues.permissions import ROLES, allowed, may_share
from server.venues.poster import poster_pdf, poster_png
from server.venues.venues import Venue, VenueError, VenueInput, VENUE_KINDS
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf, public_base
from server.web import i18n
from server.web.pages import flash, render

router = APIRouter()

i18n.register({"flash.venue_created": ("Đã tạo địa điểm.", "Venue created.")})


class VenueBody(BaseModel):
    name: str = Field("", max_length=2000)
    kind: str = Field(max_length=40, examples=["market"])
    label: str = Field("", max_length=2000)
    address: str = Field("", max_length=2000)
    province: str = Field(max_length=10, examples=["79"])
    district: str = Field("", max_length=10, examples=["760"])
    ward: str = Field(max_length=10, examples=["26743"])
    parent_id: int | None = None
    plate: str = Field("", max_length=40)


def selfcheckin_url(svc: Services, request: Request, venue: Venue) -> str:
    """The address a venue's poster QR carries."""
    return f"{public_base(request)}/c/{svc.venues.ensure_public_token(venue.id)}"


def venue_json(svc: Services, venue: Venue, role: str | None = None) -> dict:
    data = venue.as_dict()
    data.pop("public_token")
    data["area"] = svc.venues.area_text(venue)
    if role:
        data["role"] = role
    return data


def venue_input(form: dict) -> VenueInput:
    parent = str(form.get("parent_id") or "").strip()
    try:
        parent_id = int(parent) if parent else None
    except ValueError:
        raise VenueError({"parent_id": "Hãy chọn một địa điểm bạn quản lý."}) from None
    return VenueInput(**{k: str(form.get(k) or "") for k in ("name", "kind", "label", "address", "province",
                                                             "district", "ward", "plate")},
                      parent_id=parent_id)


def form_context(svc: Services, who: Visitor, values: dict, errors: dict, venue_id: int | None = None) -> dict:
    parents = [(v, r) for v, r in svc.venues.for_account(who.account.id)
               if r in ("owner", "manager") and v.id != venue_id]
    return {"values": values, "errors": errors, "kinds": VENUE_KINDS, "areas": svc.areas,
            "parents": parents, "venue_id": venue_id}


@router.get("/venues", response_class=HTMLResponse, include_in_schema=False)
def venues_page(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    return render(request, who, "venues.html", venues=svc.venues.for_account(who.account.id),
                  invitations=svc.venues.invitations_waiting(who.account.phone), area_text=svc.venues.area_text)


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
    can = {action: allowed(role, action) for action in ("venue.edit", "poster.download", "checkins.export",
                                                        "history.view", "members.view", "stations.enrol",
                                                        "roster.view", "reports.view", "passes.print")}
    can["share"] = any(may_share(role, r) for r in ROLES)
    members = svc.venues.members(venue_id) if can["members.view"] else []
    pending = svc.venues.pending_for_venue(venue_id) if can["members.view"] else []
    return render(request, who, "venue.html", venue=venue, role=role, can=can, parent=parent,
                  area=svc.venues.area_text(venue), members=members, pending=pending,
                  may_share=lambda r: may_share(role, r),
                  rows=venue_checkins(svc.storage, venue_id, svc.tz, 50), timezone=svc.timezone,
                  selfcheckin_url=selfcheckin_url(svc, request, venue))


@router.get("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
def venue_edit_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, "venue.edit")
    values = venue.as_dict()
    values["parent_id"] = venue.parent_id or ""
    return render(request, who, "venue_form.html", **form_context(svc, who, values, {}, venue_id))


@router.post("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
async def venue_edit(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "venue.edit")
    form = dict(await request.form())
    try:
        venue = svc.venues.update(venue_id, venue_input(form), who.account)
    except VenueError as exc:
        return render(request, who, "venue_form.html", 400, **form_context(svc, who, form, exc.problems, venue_id))
    svc.audit.record("qrgate.venue.updated", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name)
    return RedirectResponse(f"/venues/{venue.id}", 303)


@router.get("/api/areas", tags=["venues"])
def api_areas(svc: Svc):
    """Provinces, their districts (where used) and wards, with their codes."""
    return {"provinces": svc.areas.as_tree()}


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
    venue_for(svc, who, venue_id, "venue.edit")
    try:
        venue = svc.venues.update(venue_id, VenueInput(**body.model_dump()), who.account)
    except VenueError as exc:
        return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
    svc.audit.record("qrgate.venue.updated", account=who.account, ip=who.ip, venue_id=venue.id,
                     venue=venue.name)
    return venue_json(svc, venue)


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
    return Response(data, media_type="image/png" if fmt == "png" else "application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="venue-{venue.id}-poster.{fmt}"'})
