"""Sharing a venue by role: inviting by phone (an SMS with a link and a code), accepting,
cancelling, removing a member; and the venue's audit trail ("Nhật ký thay đổi"), who did
what there."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Form, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from pydantic import BaseModel, Field

from server.accounts.accounts import AuthRefused, PhoneError, parse_phone_list
from server.accounts.refusals import code_refused
from server.venues.access import venue_for
from server.venues.permissions import ROLES, may_share, role_rights
from server.venues.venues import InvitationConflict, NotFound, Venue, VenueError
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in, logged_in_csrf, public_base
from server.web.pages import flash, render

router = APIRouter()

i18n.register({
    "share.sms_note": ("Mỗi số nhận một tin nhắn có đường liên kết để nhận lời mời và mã xác nhận dùng được trong"
                       " 24 giờ.", "Each number gets an SMS with a link to accept and a code that works for 24 hours."),
    "flash.member_removed": ("Đã hủy quyền truy cập của người này.", "Access removed."),
    "flash.left_venue": ("Bạn đã rời địa điểm.", "You left the venue."),
    "flash.invitation_cancelled": ("Đã hủy lời mời.", "Invitation cancelled."),
    "flash.invitation_accepted": ("Đã nhận lời mời: bạn đã có quyền với địa điểm này.",
                                  "Invitation accepted: you now have access to this venue."),
})


class InviteBody(BaseModel):
    phones: str = Field(max_length=1000, description="comma-separated phone numbers")
    role: str = Field(examples=["manager"])


class CodeBody(BaseModel):
    code: str = Field(max_length=20)


def share(svc: Services, who: Visitor, venue_id: int, phones_text: str, role: str, link_base: str) -> list[str]:
    venue, my_role = venue_for(svc, who, venue_id, "venue.view")
    if role not in ROLES:
        raise VenueError({"role": "Hãy chọn vai trò."})
    if not may_share(my_role, role):
        raise HTTPException(403)
    phones = parse_phone_list(phones_text)

    def record(inv, replaced) -> None:  # in the invitation's own transaction
        for old in replaced:
            svc.audit.record("qrgate.venue.invitation.cancelled", account=who.account, ip=who.ip,
                             venue_id=venue_id, venue=venue.name, phone=old.phone, role=old.role,
                             replaced_by=inv.id)
        svc.audit.record("qrgate.venue.member.invited", account=who.account, ip=who.ip, venue_id=venue_id,
                         venue=venue.name, phone=inv.phone, role=role)

    # A new invitation cancels the number's pending one: only if this member may cancel it.
    invitations = svc.venues.invite(venue_id, phones, role, who.account, who.ip,
                                    may_replace=lambda pending: may_share(my_role, pending), record=record,
                                    link_base=link_base)
    return [inv.phone for inv in invitations]


def revoke(svc: Services, who: Visitor, venue_id: int, account_id: int) -> None:
    venue, my_role = venue_for(svc, who, venue_id, "venue.view")
    target = next((m for m in svc.venues.members(venue_id) if m.account_id == account_id), None)
    if target is None:
        raise HTTPException(404)
    if not may_share(my_role, target.role) and account_id != who.account.id:
        raise HTTPException(403)
    svc.venues.revoke(venue_id, account_id)
    svc.audit.record("qrgate.venue.member.revoked", account=who.account, ip=who.ip, venue_id=venue_id,
                     venue=venue.name, phone=target.phone, role=target.role)


@router.get("/venues/{venue_id}/share", response_class=HTMLResponse, include_in_schema=False)
def share_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    venue, role = venue_for(svc, who, venue_id, "venue.view")
    roles = [r for r in ROLES if may_share(role, r)]
    if not roles:
        raise HTTPException(403)
    return share_form(request, who, venue, roles)


def share_form(request: Request, who: Visitor, venue: Venue, roles: list[str], status_code: int = 200,
               phones: str = "", role: str = "", error: str = "", sent: list[str] | None = None) -> HTMLResponse:
    """The share page: the roles this member may grant, what each may do, the form as sent."""
    return render(request, who, "share.html", status_code, venue=venue, roles=roles, phones=phones, role=role,
                  error=error, sent=sent or [], rights=dict(role_rights()))


@router.post("/venues/{venue_id}/share", response_class=HTMLResponse, include_in_schema=False)
def share_submit(svc: Svc, request: Request, venue_id: int, phones: str = Form("", max_length=2000),
                 role: str = Form("", max_length=40), who: Visitor = Depends(logged_in_csrf)):
    venue, my_role = venue_for(svc, who, venue_id, "venue.view")
    roles = [r for r in ROLES if may_share(my_role, r)]
    try:
        sent = share(svc, who, venue_id, phones, role, public_base(request))
    except (PhoneError, VenueError, AuthRefused) as exc:
        return share_form(request, who, venue, roles, 400, phones=phones, role=role, error=str(exc))
    return share_form(request, who, venue, roles, role=role, sent=sent)


@router.post("/venues/{venue_id}/members/{account_id}/revoke", include_in_schema=False)
def revoke_submit(svc: Svc, request: Request, venue_id: int, account_id: int, who: Visitor = Depends(logged_in_csrf)):
    try:
        revoke(svc, who, venue_id, account_id)
    except VenueError as exc:
        return render(request, who, "error.html", 409, message_text=str(exc))
    if svc.venues.role_of(venue_id, who.account.id) is None:
        return flash(request, RedirectResponse("/venues", 303), "flash.left_venue")
    return flash(request, RedirectResponse(f"/venues/{venue_id}", 303), "flash.member_removed")


@router.post("/venues/{venue_id}/invitations/{invitation_id}/cancel", include_in_schema=False)
def cancel_submit(svc: Svc, request: Request, venue_id: int, invitation_id: int,
                  who: Visitor = Depends(logged_in_csrf)):
    _cancel(svc, who, venue_id, invitation_id)
    return flash(request, RedirectResponse(f"/venues/{venue_id}", 303), "flash.invitation_cancelled")


def _cancel(svc: Services, who: Visitor, venue_id: int, invitation_id: int) -> None:
    venue, my_role = venue_for(svc, who, venue_id, "venue.view")
    inv = svc.venues.invitation(invitation_id)
    if inv is None or inv.venue_id != venue_id or inv.state != "pending":
        raise HTTPException(404)
    if not may_share(my_role, inv.role):
        raise HTTPException(403)
    svc.venues.cancel_invitation(invitation_id)
    svc.audit.record("qrgate.venue.invitation.cancelled", account=who.account, ip=who.ip,
                     venue_id=venue_id, venue=venue.name, phone=inv.phone, role=inv.role)


@router.get("/invitations/{invitation_id}", response_class=HTMLResponse, include_in_schema=False)
def invitation_page(svc: Svc, request: Request, invitation_id: int, who: Visitor = Depends(logged_in)):
    inv = svc.venues.invitation(invitation_id)
    if inv is None or inv.phone != who.account.phone or inv.state != "pending":
        raise HTTPException(404)
    return render(request, who, "invitation.html", inv=inv, venue=svc.venues.get(inv.venue_id), error="")


@router.post("/invitations/{invitation_id}", response_class=HTMLResponse, include_in_schema=False)
def invitation_accept(svc: Svc, request: Request, invitation_id: int, code: str = Form("", max_length=50),
                      who: Visitor = Depends(logged_in_csrf)):
    try:
        inv = _accept(svc, who, invitation_id, code)
    except (AuthRefused, VenueError) as exc:
        inv = svc.venues.invitation(invitation_id)
        return render(request, who, "invitation.html", 400, inv=inv, venue=svc.venues.get(inv.venue_id),
                      error=str(exc))
    return flash(request, RedirectResponse(f"/venues/{inv.venue_id}", 303), "flash.invitation_accepted")


def _accept(svc: Services, who: Visitor, invitation_id: int, code: str):
    try:
        inv = svc.venues.accept(invitation_id, who.account, code, who.ip)
    except NotFound:
        raise HTTPException(404) from None
    except AuthRefused as exc:
        pending = svc.venues.invitation(invitation_id)
        code_refused(svc, who, who.account.phone, exc, "qrgate.venue.invitation.code_failed", venue_id=pending.venue_id)
        raise
    venue = svc.venues.get(inv.venue_id)
    svc.audit.record("qrgate.venue.member.granted", account=who.account, ip=who.ip, venue_id=inv.venue_id,
                     venue=venue.name, phone=inv.phone, role=inv.role)
    return inv


@router.get("/api/venues/{venue_id}/members", tags=["sharing"])
def api_members(svc: Svc, venue_id: int, who: Visitor = Depends(logged_in)):
    """Members and pending invitations (owners and managers)."""
    venue_for(svc, who, venue_id, "members.view")
    return {
        "members": [{"account_id": m.account_id, "phone": m.phone, "role": m.role} for m in
                    svc.venues.members(venue_id)],
        "pending": [{"id": i.id, "phone": i.phone, "role": i.role} for i in
                    svc.venues.pending_for_venue(venue_id)],
    }


@router.post("/api/venues/{venue_id}/invitations", tags=["sharing"], status_code=201)
def api_share(svc: Svc, request: Request, venue_id: int, body: InviteBody, who: Visitor = Depends(logged_in_csrf)):
    """Share with several numbers at once; each gets an SMS with a link to accept and a
    confirmation code that lasts 24 hours."""
    try:
        return {"invited": share(svc, who, venue_id, body.phones, body.role, public_base(request))}
    except InvitationConflict as exc:
        raise HTTPException(409, str(exc)) from None
    except (PhoneError, VenueError) as exc:
        raise HTTPException(400, str(exc)) from None
    except AuthRefused as exc:
        raise HTTPException(429, str(exc)) from None


@router.delete("/api/venues/{venue_id}/invitations/{invitation_id}", tags=["sharing"])
def api_cancel(svc: Svc, venue_id: int, invitation_id: int, who: Visitor = Depends(logged_in_csrf)):
    """Cancel a pending invitation."""
    _cancel(svc, who, venue_id, invitation_id)
    return {"cancelled": invitation_id}


@router.delete("/api/venues/{venue_id}/members/{account_id}", tags=["sharing"])
def api_revoke(svc: Svc, venue_id: int, account_id: int, who: Visitor = Depends(logged_in_csrf)):
    """Revoke a member's role; the last owner cannot be removed (409)."""
    try:
        revoke(svc, who, venue_id, account_id)
    except VenueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"revoked": account_id}


@router.get("/api/invitations", tags=["sharing"])
def api_invitations(svc: Svc, who: Visitor = Depends(logged_in)):
    """Invitations waiting for this account's phone number."""
    return {"invitations": svc.venues.invitations_waiting(who.account.phone)}


@router.post("/api/invitations/{invitation_id}/accept", tags=["sharing"])
def api_accept(svc: Svc, invitation_id: int, body: CodeBody, who: Visitor = Depends(logged_in_csrf)):
    """Accept an invitation with the code sent to this account's number."""
    try:
        inv = _accept(svc, who, invitation_id, body.code)
    except AuthRefused as exc:
        raise HTTPException(429 if exc.reason in ("locked", "rate_limited") else 400, str(exc)) from None
    except VenueError as exc:
        raise HTTPException(409, str(exc)) from None
    return {"venue_id": inv.venue_id, "role": inv.role}


def history_rows(svc: Services, venue: Venue, lang: str) -> list[dict]:
    return [{
        "time": dt.datetime.fromtimestamp(e.ts_ms / 1000, svc.tz).isoformat(timespec="seconds"),
        "time_text": dt.datetime.fromtimestamp(e.ts_ms / 1000, svc.tz).strftime("%d/%m/%Y %H:%M"),
        "account": e.phone, "ip": e.ip, "action": e.action, "data": e.data,
        "text": i18n.history_text(lang, e.action, e.data, venue.name),
    } for e in svc.audit.for_venue(venue.id)]


@router.get("/venues/{venue_id}/history", response_class=HTMLResponse, include_in_schema=False)
def history_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    """The venue's audit trail ("Nhật ký thay đổi"), not its scans ("Lịch sử quét")."""
    venue, _ = venue_for(svc, who, venue_id, "history.view")
    return render(request, who, "history.html", venue=venue, rows=history_rows(svc, venue, who.lang))


@router.get("/api/venues/{venue_id}/history", tags=["sharing"])
def api_history(svc: Svc, venue_id: int, who: Visitor = Depends(logged_in)):
    """The venue's audit trail, newest first (owners and managers)."""
    venue, _ = venue_for(svc, who, venue_id, "history.view")
    return {"history": history_rows(svc, venue, who.lang)}
