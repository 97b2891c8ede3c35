"""Web pages and JSON API for rosters and "not checked in today" (docs/roster.md): upload
a roster, list it (masked by role), see who has not checked in today. The printed
passes' pages and API are server.roster.pass_routes.

Permissions (server/venues/permissions.py): ``roster.view`` lists and shows the "not checked
in" view, ``roster.manage`` uploads (and revokes passes), ``passes.print`` issues and
prints. Owners and managers see full names (they keep the roster); gate controllers see
masked names. ID numbers are masked for every venue role. Every full-name read and upload
is written to the audit trail (server.roster.service).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse
from starlette.concurrency import run_in_threadpool

from server.roster import words
from server.roster.parsing import MAX_UPLOAD_BYTES, RosterError
from server.roster.passes import MAX_DAYS
from server.roster.roster import MODES, ImportResult
from server.roster.service import RosterService, RosterSvc
from server.venues.access import venue_for
from server.venues.permissions import allowed
from server.web import i18n
from server.web.deps import Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import render

router = APIRouter()

PAGE_SIZE = 200
MAX_ID = 2**62  # ids past SQLite's integer range are refused as input, not by the database
VenueId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
DEFAULT_DAYS = 180

words.register()


def _problem_rows(result: ImportResult, lang: str) -> list[dict[str, Any]]:
    return [{"row": p.row, "column": i18n.translate(lang, f"roster.col.{p.column}") if p.column else "",
             "text": p.text(lang)} for p in result.problems[:200]]


def _roster_page_context(svc: Svc, rs: RosterService, request: Request, who: Visitor, venue_id: int,
                         offset: int) -> dict[str, Any]:
    venue, role = venue_for(svc, who, venue_id, "roster.view")
    people = rs.roster.people(venue_id, offset, PAGE_SIZE)
    return {"venue": venue, "role": role, "rows": rs.shown_rows(who, venue_id, role, people, request.url.path),
            "total": rs.roster.count(venue_id), "offset": offset, "page_size": PAGE_SIZE,
            "can_manage": allowed(role, "roster.manage"), "can_print": allowed(role, "passes.print"),
            "passes": rs.active_passes(venue_id) if allowed(role, "passes.print") else {},
            "modes": MODES, "max_days": MAX_DAYS, "default_days": DEFAULT_DAYS,
            "result": None, "problems": [], "error": ""}


async def _read_upload(file: UploadFile) -> bytes:
    # One byte past the limit is enough to refuse the file as too big.
    return await file.read(MAX_UPLOAD_BYTES + 1)


@router.get("/venues/{venue_id}/roster", response_class=HTMLResponse, include_in_schema=False)
def roster_page(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId,
                offset: int = Query(0, ge=0, le=10**6), who: Visitor = Depends(logged_in)):
    return render(request, who, "roster.html", **_roster_page_context(svc, rs, request, who, venue_id, offset))


@router.post("/venues/{venue_id}/roster", response_class=HTMLResponse, include_in_schema=False)
async def roster_upload(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, file: UploadFile = File(...),
                        mode: str = Form("merge", max_length=20), who: Visitor = Depends(logged_in_csrf)):
    venue_for(svc, who, venue_id, "roster.manage")
    if mode not in MODES:
        raise HTTPException(400, RosterError("bad_mode").text(who.lang))
    data = await _read_upload(file)
    result, error, revoked = await run_in_threadpool(rs.upload, who, venue_id, data, (file.filename or "")[:200], mode)
    context = await run_in_threadpool(_roster_page_context, svc, rs, request, who, venue_id, 0)
    status = 200
    if error is not None:
        context["error"] = error.text(who.lang)
        status = 400
    elif not result.ok:
        context["problems"] = _problem_rows(result, who.lang)
        context["problems_more"] = max(0, len(result.problems) - len(context["problems"]))
        status = 400
    else:
        context["result"] = {**result.as_dict(), "revoked": len(revoked)}
    return render(request, who, "roster.html", status, **context)


@router.get("/api/venues/{venue_id}/roster", tags=["roster"])
def api_roster(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, offset: int = Query(0, ge=0, le=10**6),
               limit: int = Query(PAGE_SIZE, ge=1, le=1000), who: Visitor = Depends(logged_in)):
    """The venue's roster, ID numbers masked; names in full for owners and managers."""
    _, role = venue_for(svc, who, venue_id, "roster.view")
    people = rs.roster.people(venue_id, offset, limit)
    return {"total": rs.roster.count(venue_id), "offset": offset,
            "people": rs.shown_rows(who, venue_id, role, people, request.url.path)}


@router.post("/api/venues/{venue_id}/roster", tags=["roster"])
async def api_roster_upload(svc: Svc, rs: RosterSvc, venue_id: VenueId,
                            file: UploadFile = File(..., description=f"CSV (UTF-8) or XLSX, at most "
                                                                     f"{MAX_UPLOAD_BYTES // 1048576} MB"),
                            mode: str = Query("merge", pattern="^(merge|replace)$"),
                            who: Visitor = Depends(logged_in_csrf)):
    """Upload a roster. Any bad row refuses the whole file (400 with one problem per row)."""
    venue_for(svc, who, venue_id, "roster.manage")
    data = await _read_upload(file)
    result, error, revoked = await run_in_threadpool(rs.upload, who, venue_id, data, (file.filename or "")[:200], mode)
    if error is not None:
        status = 413 if error.code == "file_too_big" else 400
        return JSONResponse({"detail": str(error), "code": error.code}, status)
    body = {**result.as_dict(), "revoked_passes": revoked}
    return JSONResponse(body, 200 if result.ok else 400)


# -- not checked in today ----------------------------------------------------------------

@router.get("/venues/{venue_id}/roster/absent", response_class=HTMLResponse, include_in_schema=False)
def absent_page(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, who: Visitor = Depends(logged_in)):
    venue, role = venue_for(svc, who, venue_id, "roster.view")
    people, midnight = rs.absent(venue_id)
    return render(request, who, "roster_absent.html", venue=venue, role=role,
                  rows=rs.shown_rows(who, venue_id, role, people, request.url.path), total=rs.roster.count(venue_id),
                  since=midnight.strftime("%H:%M %d/%m/%Y"))


@router.get("/api/venues/{venue_id}/roster/absent", tags=["roster"])
def api_absent(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, who: Visitor = Depends(logged_in)):
    """Roster people with no check-in here (or within this venue) since local midnight."""
    _, role = venue_for(svc, who, venue_id, "roster.view")
    people, midnight = rs.absent(venue_id)
    return {"since": midnight.isoformat(), "total": rs.roster.count(venue_id),
            "absent": rs.shown_rows(who, venue_id, role, people, request.url.path)}
