"""Web pages and JSON API for printed passes (docs/roster.md): issue passes to roster
people, print a batch's A4 sheets, revoke a lost pass (and issue a replacement), and
send the block list to the venue's stations again when a revocation could not.

Permissions (server/venues/permissions.py): ``passes.print`` lists, issues and prints;
``roster.manage`` revokes. The passes page shows full names (only owners and managers
may print). Every full-name read, issue, print and revocation is written to the audit
trail (server.roster.service).
"""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qrgate.errors import UserError
from server.roster import words
from server.roster.passes import MAX_DAYS, MAX_PER_BATCH, PID_ALPHABET, PID_LENGTH
from server.roster.routes import DEFAULT_DAYS, MAX_ID, VenueId
from server.roster.service import RosterService, RosterSvc
from server.venues.access import venue_for
from server.venues.permissions import allowed
from server.web import i18n
from server.web.deps import Svc, Visitor, logged_in, logged_in_csrf
from server.web.pages import render

router = APIRouter()

PersonId = Annotated[int, Field(ge=1, le=MAX_ID)]
PID_PATTERN = f"^[{PID_ALPHABET}]{{{PID_LENGTH}}}$"

words.register()


class IssueBody(BaseModel):
    person_ids: list[PersonId] = Field(default_factory=list, max_length=MAX_PER_BATCH,
                                  description="roster person ids; empty with without_phone=true: all without a phone")
    without_phone: bool = Field(False, description="issue for every roster person without a phone")
    days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="days the pass is valid, today included")


class RevokeBody(BaseModel):
    reason: str = Field("", max_length=200, examples=["lost"])
    reissue_days: int = Field(0, ge=0, le=MAX_DAYS, description="0: no replacement; else its validity in days")


def _passes_context(svc: Svc, rs: RosterService, request: Request, who: Visitor, venue_id: int,
                    **extra: Any) -> dict[str, Any]:
    venue, role = venue_for(svc, who, venue_id, "passes.print")
    desk = rs.office()
    day = rs.today()
    people = {p.id: p.as_masked(True) for p in rs.roster.people(venue_id)}
    records = desk.passes(venue_id)
    rows = []
    for record in records:
        person = people.get(record.person_id) if record.person_id is not None else None
        rows.append({**record.as_dict(day), "name": person["name"] if person else "",
                     "employee_no": person["employee_no"] if person else ""})
    if rows:
        rs.audit(who, "qrgate.roster.names.read", venue_id, rows=len(rows), path=request.url.path)
    batches = [{**b, "created": dt.datetime.fromtimestamp(b["created_ms"] / 1000, svc.tz).strftime("%H:%M %d/%m/%Y")}
               for b in desk.batches(venue_id)]
    return {"venue": venue, "role": role, "rows": rows, "batches": batches, "max_days": MAX_DAYS,
            "can_revoke": allowed(role, "roster.manage"),
            "default_days": DEFAULT_DAYS, "notices": [], "error": "", "push_problem": "", **extra}


def _page(svc: Svc, rs: RosterService, request: Request, who: Visitor, venue_id: int, status_code: int = 200,
          **extra: Any) -> Response:
    """The passes page (with notices or an error), or a page saying this server cannot
    sign passes."""
    if rs.office_or_none() is None:
        venue_for(svc, who, venue_id, "passes.print")
        return render(request, who, "error.html", 503, message="passes.unavailable", back=f"/venues/{venue_id}")
    return render(request, who, "passes.html", status_code,
                  **_passes_context(svc, rs, request, who, venue_id, **extra))


@router.get("/venues/{venue_id}/passes", response_class=HTMLResponse, include_in_schema=False)
def passes_page(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, who: Visitor = Depends(logged_in)):
    return _page(svc, rs, request, who, venue_id)


@router.post("/venues/{venue_id}/passes", response_class=HTMLResponse, include_in_schema=False)
async def passes_issue(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId,
                       who: Visitor = Depends(logged_in_csrf)):
    venue_for(svc, who, venue_id, "passes.print")
    form = await request.form()
    error = ""
    try:
        ids = [int(str(v)[:20]) for v in form.getlist("person")[:MAX_PER_BATCH + 1]]
        days = int(str(form.get("days") or DEFAULT_DAYS)[:20])
    except ValueError:
        ids, days, error = [], 0, "passes.error.numbers"
    if not error and not all(1 <= i <= MAX_ID for i in ids):
        error = "passes.error.person"
    if not error and not 1 <= days <= MAX_DAYS:
        error = "passes.error.numbers"
    if not error:
        without_phone = form.get("without_phone") == "1"
        try:
            result, left = await run_in_threadpool(rs.issue, who, venue_id, ids, without_phone, days)
        except UserError:
            error = "passes.error.person"  # the days were checked above: a person not on this roster
    if error:
        message = i18n.translate(who.lang, error, max_days=MAX_DAYS)
        return await run_in_threadpool(_page, svc, rs, request, who, venue_id, 400, error=message)
    notices = []
    if result is None or not result.issued:
        notices.append(i18n.translate(who.lang, "passes.nothing"))
    else:
        notices.append(i18n.translate(who.lang, "passes.issued", count=len(result.issued), batch=result.batch_id))
    if result is not None and result.skipped:
        notices.append(i18n.translate(who.lang, "passes.skipped", count=len(result.skipped)))
    if left:
        notices.append(i18n.translate(who.lang, "passes.left", count=left))
    return await run_in_threadpool(_page, svc, rs, request, who, venue_id, notices=notices,
                                   new_batch=result.batch_id if result else None)


@router.get("/api/venues/{venue_id}/passes", tags=["passes"])
def api_passes(svc: Svc, rs: RosterSvc, venue_id: VenueId, who: Visitor = Depends(logged_in)):
    """Every pass of the venue with its state, and the print batches."""
    venue_for(svc, who, venue_id, "passes.print")
    desk = rs.office()
    day = rs.today()
    return {"passes": [r.as_dict(day) for r in desk.passes(venue_id)], "batches": desk.batches(venue_id)}


@router.post("/api/venues/{venue_id}/passes", tags=["passes"], status_code=201)
def api_issue(svc: Svc, rs: RosterSvc, venue_id: VenueId, body: IssueBody, who: Visitor = Depends(logged_in_csrf)):
    """Issue passes (one batch); people who hold a valid pass are skipped."""
    venue_for(svc, who, venue_id, "passes.print")
    try:
        result, left = rs.issue(who, venue_id, body.person_ids, body.without_phone, body.days)
    except UserError as exc:
        raise HTTPException(400, str(exc)) from None
    if result is None:
        raise HTTPException(400, "no people chosen (person_ids empty and nobody without a phone)")
    day = rs.today()
    return {"batch_id": result.batch_id, "issued": [r.as_dict(day) for r in result.issued],
            "skipped_person_ids": result.skipped, "left_without_pass": left,
            "pdf": f"/venues/{venue_id}/passes/batches/{result.batch_id}.pdf" if result.batch_id else None}


@router.get("/venues/{venue_id}/passes/batches/{batch_id}.pdf", tags=["passes"],
            response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
def passes_pdf(svc: Svc, rs: RosterSvc, venue_id: VenueId, batch_id: int = PathParam(..., ge=1, le=MAX_ID),
               who: Visitor = Depends(logged_in)):
    """The A4 sheets of a batch's active passes (8 cards a page, cut marks)."""
    venue, _ = venue_for(svc, who, venue_id, "passes.print")
    desk = rs.office()
    items = desk.sheet_items(venue_id, batch_id)
    if not items:
        raise HTTPException(404)
    pdf = desk.sheet_pdf(venue.name, items)
    rs.audit(who, "qrgate.passes.printed", venue_id, batch=batch_id, count=len(items))
    # ASCII, in the reader's words: the-ra-vao-dia-diem-3-dot-2.pdf
    name = (f"passes-{venue_id}-{batch_id}.pdf" if who.lang == "en"
            else f"the-ra-vao-dia-diem-{venue_id}-dot-{batch_id}.pdf")
    return Response(pdf, media_type="application/pdf",
                    headers={"Content-Disposition": f'attachment; filename="{name}"'})


def _revoke(rs: RosterService, who: Visitor, venue_id: int, pid: str, reason: str, reissue_days: int):
    try:
        return rs.revoke(who, venue_id, pid, reason, reissue_days)
    except LookupError:
        raise HTTPException(404) from None


@router.post("/venues/{venue_id}/passes/{pid}/revoke", response_class=HTMLResponse, include_in_schema=False)
def passes_revoke(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId,
                  pid: str = PathParam(..., pattern=PID_PATTERN), reason: str = Form("", max_length=200),
                  reissue: str = Form("", max_length=5), who: Visitor = Depends(logged_in_csrf)):
    venue_for(svc, who, venue_id, "roster.manage")
    record = rs.office().get(venue_id, pid)
    if record is None:
        raise HTTPException(404)
    # A replacement for a lost card is valid to the same last day as the card it replaces.
    days = max(1, (record.expires - rs.today()).days + 1) if reissue else 0
    lang = who.lang
    try:
        revoked, fresh, pushed = _revoke(rs, who, venue_id, pid, reason, days)
    except UserError:
        return _page(svc, rs, request, who, venue_id, 409,
                     error=i18n.translate(lang, "passes.error.revoked_already", pid=pid))
    notices = [i18n.translate(lang, "passes.revoked", pid=pid)]
    if fresh is not None:
        notices.append(i18n.translate(lang, "passes.reissued", pid=fresh.pid, batch=fresh.batch_id))
    key, values = rs.push_notice(pushed)
    said = i18n.translate(lang, key, **values)
    return _page(svc, rs, request, who, venue_id, notices=notices if pushed.error else [*notices, said],
                 push_problem=said if pushed.error else "", new_batch=fresh.batch_id if fresh else None)


@router.post("/venues/{venue_id}/passes/push", response_class=HTMLResponse, include_in_schema=False)
def passes_push(svc: Svc, rs: RosterSvc, request: Request, venue_id: VenueId, who: Visitor = Depends(logged_in_csrf)):
    """Send the block list to the venue's stations again (after a push that failed)."""
    venue_for(svc, who, venue_id, "roster.manage")
    pushed = rs.push(who, venue_id)
    key, values = rs.push_notice(pushed)
    said = i18n.translate(who.lang, key, **values)
    return _page(svc, rs, request, who, venue_id, push_problem=said if pushed.error else "",
                 notices=[] if pushed.error else [said])


@router.post("/api/venues/{venue_id}/passes/{pid}/revoke", tags=["passes"])
def api_revoke(svc: Svc, rs: RosterSvc, venue_id: VenueId, body: RevokeBody,
               pid: str = PathParam(..., pattern=PID_PATTERN), who: Visitor = Depends(logged_in_csrf)):
    """Revoke a pass (it joins every station's block list) and optionally reissue."""
    venue_for(svc, who, venue_id, "roster.manage")
    try:
        revoked, fresh, pushed = _revoke(rs, who, venue_id, pid, body.reason, body.reissue_days)
    except UserError as exc:
        raise HTTPException(409, str(exc)) from None
    day = rs.today()
    return {"revoked": revoked.as_dict(day), "reissued": fresh.as_dict(day) if fresh else None,
            "pushed_to": pushed.stations, "push_error": pushed.error or None}
