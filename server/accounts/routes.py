"""Logging in by phone (a code by SMS, or a single-use link), logging out (here or on
every device, from the account page), the session as JSON, and the development SMS
outbox operators read."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from server.accounts.accounts import Account, AuthRefused, PhoneError, normalise_phone
from server.accounts.refusals import code_refused
from server.audit import register_actions
from server.web import i18n
from server.web.deps import (Services, Svc, Visitor, csrf_checked, logged_in, logged_in_csrf, operator, safe_next,
                             visitor)
from server.web.middleware import SESSION_COOKIE
from server.web.pages import flash, render

router = APIRouter()

register_actions("qrgate.account.logout.all")
i18n.register({
    "flash.logged_in": ("Bạn đã đăng nhập.", "You are logged in."),
    "flash.logged_out": ("Bạn đã đăng xuất.", "You are logged out."),
    "flash.logged_out_everywhere": ("Bạn đã đăng xuất trên mọi thiết bị, kể cả thiết bị này.",
                                    "You are logged out on every device, this one too."),
    "account.title": ("Tài khoản của bạn", "Your account"),
    "account.phone": ("Số điện thoại", "Phone number"),
    "account.operator": ("Người vận hành máy chủ", "Server operator"),
    "account.officer": ("Cán bộ y tế khu vực", "Area health officer"),
    "account.sessions": ("Đang đăng nhập trên {count} trình duyệt hoặc thiết bị (kể cả thiết bị này).",
                         "Logged in on {count} browsers or devices (this one included)."),
    "account.logout_all": ("Đăng xuất trên mọi thiết bị", "Log out on every device"),
    "account.logout_all_hint": ("Dùng khi mất điện thoại hoặc đã đăng nhập trên máy dùng chung: mọi phiên đăng "
                                "nhập của số này kết thúc ngay, kể cả phiên đang dùng.",
                                "For a lost phone or a shared computer: every session of this number ends at once, "
                                "this one too."),
    "account.logout_all_confirm": ("Đăng xuất trên mọi thiết bị? Bạn sẽ phải đăng nhập lại bằng mã gửi qua tin nhắn.",
                                   "Log out on every device? You will log in again with a code by SMS."),
    "sms.text": ("Nội dung tin nhắn", "Message"),
    "sms.none": ("Chưa có tin nhắn nào.", "No messages yet."),
}, history={
    "qrgate.account.logout.all": ("Đăng xuất trên mọi thiết bị ({sessions} phiên)",
                                  "Logged out on every device ({sessions} sessions)"),
})


class PhoneBody(BaseModel):
    phone: str = Field(max_length=40, examples=["0912 486 419"])


class LoginBody(BaseModel):
    phone: str = Field(max_length=40)
    code: str = Field(max_length=20)


def login_response(svc: Services, url: str, account: Account, who: Visitor, request_kind: str = "html",
                   request: Request | None = None) -> Response:
    """Start a session for ``account``; a page (``request`` given) says so on the next page."""
    # Always a fresh session id: a token planted before login is worthless after it.
    token = svc.accounts.start_session(account, who.session_token)
    svc.audit.record("qrgate.account.login", account=account, ip=who.ip)
    response: Response = (RedirectResponse(url, 303) if request_kind == "html"
                          else JSONResponse({"account": _account_json(account)}))
    response.set_cookie(SESSION_COOKIE, token, max_age=svc.auth.session_ttl_s, httponly=True, samesite="lax",
                        secure=svc.cookie_secure, path="/")
    if request is not None:
        flash(request, response, "flash.logged_in")
    return response


@router.get("/login", response_class=HTMLResponse, include_in_schema=False)
def login_page(svc: Svc, request: Request, next: str = "/", who: Visitor = Depends(visitor)):
    return render(request, who, "login.html", next=safe_next(next), phone="", error="")


@router.post("/login", response_class=HTMLResponse, include_in_schema=False)
def login_send(svc: Svc, request: Request, phone: str = Form("", max_length=200), next: str = Form("/"),
               who: Visitor = Depends(csrf_checked)):
    try:
        phone = normalise_phone(phone)
        svc.accounts.send_code(phone, "login", who.ip)
    except (PhoneError, AuthRefused) as exc:
        return render(request, who, "login.html", 400 if isinstance(exc, PhoneError) else 429,
                      next=safe_next(next), phone=phone, error=str(exc))
    return render(request, who, "login_code.html", next=safe_next(next), phone=phone, error="")


@router.post("/login/code", response_class=HTMLResponse, include_in_schema=False)
def login_check(svc: Svc, request: Request, phone: str = Form("", max_length=200), code: str = Form("", max_length=50),
                next: str = Form("/"), who: Visitor = Depends(csrf_checked)):
    try:
        phone = svc.accounts.check_code(phone, "login", code, who.ip)
    except (PhoneError, AuthRefused) as exc:
        if isinstance(exc, AuthRefused):
            code_refused(svc, who, phone, exc, "qrgate.account.login.failed")
        status = 429 if getattr(exc, "reason", "") in ("locked", "rate_limited") else 400
        return render(request, who, "login_code.html", status, next=safe_next(next), phone=phone, error=str(exc))
    return login_response(svc, safe_next(next), svc.accounts.account_for_phone(phone), who, request=request)


@router.get("/login/link", include_in_schema=False)
def login_link(svc: Svc, request: Request, token: str = Query("", max_length=100), next: str = "/",
               who: Visitor = Depends(visitor)):
    """A single-use link from `qrgate-server login-link` (operators, the demo)."""
    account = svc.accounts.redeem_login_link(token)
    if account is None:
        return render(request, who, "error.html", 404, message="error.not_found")
    return login_response(svc, safe_next(next), account, who, request=request)


@router.post("/logout", include_in_schema=False)
def logout(svc: Svc, request: Request, who: Visitor = Depends(csrf_checked)):
    return flash(request, _logout(svc, who, RedirectResponse("/", 303)), "flash.logged_out")


@router.get("/account", response_class=HTMLResponse, include_in_schema=False)
def account_page(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    return render(request, who, "account.html", sessions=svc.accounts.session_count(who.account.id))


@router.post("/account/logout-all", include_in_schema=False)
def logout_everywhere(svc: Svc, request: Request, who: Visitor = Depends(logged_in_csrf)):
    ended = svc.accounts.end_all_sessions(who.account.id)
    svc.audit.record("qrgate.account.logout.all", account=who.account, ip=who.ip, sessions=ended)
    response = RedirectResponse("/", 303)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=svc.cookie_secure)
    return flash(request, response, "flash.logged_out_everywhere")


def _logout(svc: Services, who: Visitor, response: Response) -> Response:
    if who.account:
        svc.audit.record("qrgate.account.logout", account=who.account, ip=who.ip)
        svc.accounts.end_session(who.session_token)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=svc.cookie_secure)
    return response


@router.get("/api/session", tags=["accounts"])
def api_session(svc: Svc, who: Visitor = Depends(visitor)):
    """Who is logged in, and the CSRF token to send as ``X-CSRF-Token`` on every change."""
    return {"account": _account_json(who.account) if who.account else None, "csrf_token": who.csrf}


@router.post("/api/login/code", tags=["accounts"])
def api_send_code(svc: Svc, body: PhoneBody, who: Visitor = Depends(csrf_checked)):
    """Send a login code to the phone number (rate limited per number and per address)."""
    try:
        svc.accounts.send_code(body.phone, "login", who.ip)
    except PhoneError as exc:
        raise HTTPException(400, str(exc)) from None
    except AuthRefused as exc:
        raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
    return {"sent": True}


@router.post("/api/login", tags=["accounts"])
def api_login(svc: Svc, body: LoginBody, who: Visitor = Depends(csrf_checked)):
    """Log in with the code; sets the session cookie (a new session id every time)."""
    try:
        phone = svc.accounts.check_code(body.phone, "login", body.code, who.ip)
    except PhoneError as exc:
        raise HTTPException(400, str(exc)) from None
    except AuthRefused as exc:
        code_refused(svc, who, body.phone, exc, "qrgate.account.login.failed")
        raise HTTPException(429 if exc.reason in ("locked", "rate_limited") else 400, str(exc)) from None
    return login_response(svc, "", svc.accounts.account_for_phone(phone), who, "json")


@router.post("/api/logout", tags=["accounts"])
def api_logout(svc: Svc, who: Visitor = Depends(csrf_checked)):
    """End the session."""
    return _logout(svc, who, JSONResponse({"logged_out": True}))


# -- venues ----------------------------------------------------------------------


@router.get("/operator/sms", response_class=HTMLResponse, include_in_schema=False)
def operator_sms(svc: Svc, request: Request, who: Visitor = Depends(operator)):
    outbox = getattr(svc.sender, "outbox", None)
    if outbox is None:
        raise HTTPException(404)
    messages = [{"phone": m.phone, "text": m.text,
                 "time_text": dt.datetime.fromtimestamp(m.sent_at, svc.tz).strftime("%d/%m/%Y %H:%M:%S")}
                for m in outbox]
    return render(request, who, "operator_sms.html", messages=messages)


# -- feature routers -----------------------------------------------------------------


def _account_json(account: Account) -> dict:
    return {"id": account.id, "phone": account.phone, "is_operator": account.is_operator}
