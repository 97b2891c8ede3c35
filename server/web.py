"""The server's web UI and JSON API (FastAPI, Jinja2): log in by phone, venues, posters,
sharing by role, the venue history, self check-in, and the latest check-ins (masked).

Every page is rendered on the server with autoescaping; every state change is a POST (or
PUT/DELETE in the API) checked against a CSRF token bound to the visitor's cookie.
Venue access goes through ``_venue_for``: a visitor who is not a member gets 404, a
member whose role lacks the permission gets 403 (server/permissions.py).
"""

from __future__ import annotations

import datetime as dt
import functools
import importlib
import io
import ipaddress
import json
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates
import jinja2
from pydantic import BaseModel, Field
from starlette.datastructures import MutableHeaders
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.requests import HTTPConnection
import segno

from qrgate import __version__
from qrgate.errors import DriverError, UserError
from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server import i18n
from server.accounts import (Account, Accounts, AuthRefused, AuthSettings, PhoneError, address_key, normalise_phone,
                             parse_phone_list)
from server.areas import AreaDirectory
from server.audit import AuditLog
from server.checkin_views import venue_checkins, when_texts
from server.enrol import Enrolment, enrol_code_text
from server.enrol import make_router as make_enrol_router
from server.fleet import Fleet
from server.metrics import make_metrics_router
from server.officers import Officers
from server.permissions import ROLES, allowed, may_share
from server.poster import poster_pdf, poster_png
from server.roster import MAX_UPLOAD_BYTES
from server.selfcheckin import SelfCheckin, SelfCheckinError, parse_declaration
from server.sms import DevSmsSender, SmsSender
from server.storage import Storage
from server.venues import InvitationConflict, NotFound, Venue, VenueDirectory, VenueError, VenueInput, VENUE_KINDS

logger = logging.getLogger(__name__)

HERE = Path(__file__).parent
_DICT_METHODS = frozenset(dir(dict))


class TemplateEnvironment(jinja2.Environment):
    """Jinja's environment, but ``row.name`` on a dict reads its key first.

    Jinja tries the attribute and falls back to the key after an AttributeError; the
    pages' rows are dicts, and raising that error for every cell was a third of a
    history page's time (docs/performance.md). The names of dict's own methods
    (``items``, ``values``, ``get``...) still mean the methods.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_METHODS:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


# The templates are package files: no check of their modification time on every page.
TEMPLATES = Jinja2Templates(env=TemplateEnvironment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                                    autoescape=True, auto_reload=False))
SESSION_COOKIE = "qrgate_session"
PRE_COOKIE = "qrgate_pre"  # binds the CSRF token of a visitor who has not logged in yet
LANG_COOKIE = "qrgate_lang"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self';"
                               " frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Self check-in URLs carry the venue's token: never hand them to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def _present(row: dict, tz: ZoneInfo) -> dict:
    """A check-in as a venue role may see it: personal fields masked."""
    time_iso, time_text = when_texts(row["wall_ms"], tz)
    return {
        "id": row["id"],
        "station_id": row["station_id"],
        "seq": row["seq"],
        "venue": row["venue"],
        "direction": row["direction"],
        "kind": row["kind"],
        "name": mask_person_name(row["name"]),
        "id_number": mask_id_number(row["id_number"]),
        "birth": mask_birth(row["birth"]),
        "time": time_iso,
        "time_text": time_text,
        "clock_synced": bool(row["clock_synced"]),
    }


class LoginRequired(Exception):
    """Raised by a page or API call that needs a logged-in account."""


@dataclass
class Visitor:
    account: Account | None
    session_token: str | None
    binding: str  # what the CSRF token is bound to: the session token, else the pre-session cookie
    lang: str
    ip: str
    csrf: str


@dataclass
class Services:
    """Everything the routes use; tests reach in through ``app.state.services``."""

    storage: Storage
    accounts: Accounts
    venues: VenueDirectory
    audit: AuditLog
    self_checkin: SelfCheckin
    areas: AreaDirectory
    sender: SmsSender
    tz: ZoneInfo
    cookie_secure: bool
    public_url: str
    public_feed: bool
    officers: Officers
    retention_days: int = 0  # how long check-ins are kept (0: no limit), said where history is shown


class VisitorCookies:
    """Every response: the security headers, `no-store` outside /static/, and the
    pre-session cookie a visitor's CSRF token is bound to before logging in. A request
    without one gets one only when it was used (:func:`pre_session`): a logged-in
    visitor's token is bound to the session, and minting a cookie for every API call of
    a script that keeps only its session cookie was a few per cent of each answer. Plain
    ASGI: the decorator form of a Starlette middleware runs each request through extra
    tasks and streams, a cost every page paid."""

    def __init__(self, app, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pre = HTTPConnection(scope).cookies.get(PRE_COOKIE)
        state = scope.setdefault("state", {})
        state["pre"] = pre if pre and len(pre) <= 100 else None
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if state.get("pre_new"):
                    carrier = Response()
                    carrier.set_cookie(PRE_COOKIE, state["pre"], httponly=True, samesite="lax", secure=self.secure)
                    headers.append("set-cookie", carrier.headers["set-cookie"])
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if not static and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ForwardedClient:
    """Plain ASGI: the visitor's address as a reverse proxy saw it, believed only from a
    proxy named in ``[web] trusted_proxies`` (docs/security.md).

    From a trusted proxy, X-Forwarded-For is read from the right: the first address that
    is not itself a trusted proxy is the one the nearest proxy saw connecting, and what a
    client wrote to the left of it is never read; X-Forwarded-Proto (the nearest proxy's
    value) gives the scheme. From any other address both headers are ignored: otherwise
    whoever reaches the port chooses the address every per-address limit and audit entry
    goes by. (uvicorn's own reading of these headers is off: server.cli.uvicorn_config.)
    """

    def __init__(self, app, trusted: tuple[str, ...] = ()):
        self.app = app
        self.networks = tuple(ipaddress.ip_network(p, strict=False) for p in trusted)
        self._warned = False
        # The proxy's own address comes with every request: parse it once, not each time.
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            client = scope.get("client")
            if client and self.networks and self.is_trusted(client[0]):
                scope = self.forwarded(scope)
            elif not self._warned and any(name == b"x-forwarded-for" for name, _ in scope["headers"]):
                self._warned = True  # once: a proxy left out of the list would fill the log
                logger.warning("X-Forwarded-For from %s ignored: that address is not in [web] trusted_proxies",
                               client[0] if client else "?")
        await self.app(scope, receive, send)

    def forwarded(self, scope) -> dict:
        hops: list[str] = []
        proto = ""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
        client = None
        for hop in reversed(hops):
            try:
                client = str(ipaddress.ip_address(hop.strip()))
            except ValueError:
                break  # no trusted proxy wrote this: believe nothing further left
            if not self.is_trusted(client):
                break
        if client is None and proto not in ("http", "https"):
            return scope
        scope = dict(scope)
        if client is not None:
            scope["client"] = (client, 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto
        return scope


BODY_LIMIT = 1024 * 1024  # bytes of a request body, except where a route needs more
# A roster file may be MAX_UPLOAD_BYTES; the multipart envelope around it adds a little.
UPLOAD_LIMITS = ((re.compile(r"/(?:api/)?venues/[^/]+/roster"), MAX_UPLOAD_BYTES + 64 * 1024),)
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


_NOT_FINITE_HINT = re.compile(r"[0-9][eE]|Infinity|NaN")


def _refuse_constant(name: str):
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def json_body_problem(body: bytes) -> str | None:
    """Why a JSON body must be refused before any route reads it, or None.

    The validator's 422 echoes what it was given, and neither a lone surrogate
    (\\uD800 alone) nor a number that is NaN or overflows to infinity (3e+308) can be
    encoded in the answer or logged: each was a 500. Most bodies hold neither hint, and
    are not parsed here at all; the others are parsed once. A body that is not JSON at
    all is left to the route, which refuses it as such.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the JSON body is not Unicode text (UTF-8, no lone surrogates)"
    surrogates = "\\u" in text and _ESCAPED_SURROGATE.search(text) is not None
    if not surrogates and not _NOT_FINITE_HINT.search(text):
        return None
    try:
        todo = [json.loads(text, parse_float=_finite_float, parse_constant=_refuse_constant)]
    except json.JSONDecodeError:
        return None
    except ValueError:
        return "the JSON body holds a number that is not finite"
    except RecursionError:
        return None
    while surrogates and todo:  # by hand, not recursion: nesting is the sender's choice
        value = todo.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return "the JSON body is not Unicode text (UTF-8, no lone surrogates)"
        elif isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return None


class BodyLimits:
    """Plain ASGI: a request body over its limit (BODY_LIMIT, or UPLOAD_LIMITS for the
    routes that take files) is answered 413 before anything reads it; a JSON body that
    is not Unicode text is answered 400. Neither echoes nor logs the body: a lone
    surrogate used to reach the validator, whose error message could not be encoded
    (a 500, and the value in the log)."""

    def __init__(self, app):
        self.app = app

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_type = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value.lower()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if length is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        limit = next((n for pattern, n in UPLOAD_LIMITS if pattern.fullmatch(scope["path"])), BODY_LIMIT)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(scope, receive, send, 413, f"request body larger than {limit} bytes")
            return
        is_json = content_type is None or b"json" in content_type
        if not is_json and length is not None:
            await self.app(scope, receive, send)  # the server reads exactly Content-Length bytes
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._refuse(scope, receive, send, 413, f"request body larger than {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_body_problem(body) if is_json and body else None
        if problem is not None:
            await self._refuse(scope, receive, send, 400, problem)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status)(scope, receive, send)


def pre_session(request: Request) -> str:
    """The visitor's pre-session cookie value; a new one (set on the response by
    VisitorCookies) when the request came without one."""
    state = request.state
    if state.pre is None:
        state.pre, state.pre_new = secrets.token_urlsafe(24), True
    return state.pre


@dataclass
class WebKit:
    """What a feature's router (server/web_*.py) gets from the app: the services and the
    same visitor, login, CSRF and venue-permission checks and page renderer as here."""

    services: Services
    storage: Storage
    tz: ZoneInfo
    clock: Callable[[], float]
    visitor: Callable[..., Visitor]          # FastAPI dependency: anyone
    logged_in: Callable[..., Visitor]        # dependency: an account, else login
    logged_in_csrf: Callable[..., Visitor]   # dependency: an account and a good CSRF token
    operator: Callable[..., Visitor]         # dependency: an operator account, else 404
    venue_for: Callable[[Visitor, int, str], tuple[Venue, str]]  # 404 non-member, 403 role lacks action
    render: Callable[..., HTMLResponse]      # render(request, who, template, status_code=200, **context)


# Feature routers: each module has make_router(kit: WebKit) -> fastapi.APIRouter.
FEATURE_ROUTERS = ("server.web_history", "server.web_export", "server.web_dashboard", "server.web_roster")


# -- JSON API bodies ---------------------------------------------------------------

class PhoneBody(BaseModel):
    phone: str = Field(max_length=40, examples=["0912 486 419"])


class LoginBody(BaseModel):
    phone: str = Field(max_length=40)
    code: str = Field(max_length=20)


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


class InviteBody(BaseModel):
    phones: str = Field(max_length=1000, description="comma-separated phone numbers")
    role: str = Field(examples=["manager"])


class CodeBody(BaseModel):
    code: str = Field(max_length=20)


class EnrolCodeBody(BaseModel):
    minutes: float = Field(10, ge=1, le=60, description="how long the code works")


class DeclarationBody(BaseModel):
    id_number: str = Field(max_length=40)
    name: str = Field(max_length=2000)
    birth_year: str = Field("", max_length=10)
    direction: str = Field(examples=["in"])


def create_app(storage: Storage, timezone: str = "Asia/Ho_Chi_Minh", *, auth=None, sender: SmsSender | None = None,
               areas: AreaDirectory | None = None, public_url: str = "", public_feed: bool = False,
               clock: Callable[[], float] = time.time, enrolment=None, bridge=None,
               broker_files=None, trusted_proxies: tuple[str, ...] = (), retention_days: int | None = None) -> FastAPI:
    """The web app; times are shown in ``timezone`` (an IANA name).

    ``auth`` is a server.config.AuthSection (None: its defaults), ``sender`` the SMS
    sender (None: the development sender), ``areas`` the administrative areas (None: the
    bundled sample), ``public_url`` the address printed in poster QR codes (empty: the
    address of the request), ``public_feed`` whether anonymous visitors see the latest
    masked check-ins of all venues at ``/``. ``clock`` is for tests. ``enrolment``
    (server.enrol.Enrolment) binds stations (None: codes can be made, but the handshake
    answers 503); ``bridge`` feeds /metrics; ``broker_files`` lets the fleet page retire
    a station's broker account. ``trusted_proxies`` lists the reverse proxies whose
    X-Forwarded-For is believed (ForwardedClient); ``retention_days`` is how long
    check-ins are kept, said on the history page (None: the [retention] default).
    """
    tz = ZoneInfo(timezone)
    if auth is None:
        from server.config import AuthSection

        auth = AuthSection()
    if retention_days is None:
        from server.config import RetentionSection

        retention_days = RetentionSection().days
    sender = sender if sender is not None else DevSmsSender()
    settings = AuthSettings(code_ttl_s=auth.code_ttl_s, session_ttl_s=auth.session_hours * 3600)
    accounts = Accounts(storage, sender, settings, clock)
    areas = areas or AreaDirectory.load()
    services = Services(
        storage=storage, accounts=accounts, venues=VenueDirectory(storage, accounts, areas, clock),
        audit=AuditLog(storage, clock), self_checkin=SelfCheckin(storage, clock), areas=areas, sender=sender,
        tz=tz, cookie_secure=auth.cookie_secure, public_url=public_url.rstrip("/"), public_feed=public_feed,
        officers=Officers(storage, areas, clock), retention_days=retention_days,
    )
    app = FastAPI(title="QR gate server", version=__version__,
                  description="Accounts by phone, venues, posters, sharing by role, history, self check-in.")
    app.state.services = services
    app.mount("/static", StaticFiles(directory=str(HERE / "static")), name="static")
    enrolment = enrolment or Enrolment(storage)
    fleet = Fleet(storage)
    app.include_router(make_enrol_router(enrolment))
    app.include_router(make_metrics_router(storage, bridge))

    # -- plumbing ----------------------------------------------------------------

    # The last added runs first: the real address, then the headers of every answer
    # (the 413 and 400 of BodyLimits too), then the body's size and text.
    app.add_middleware(BodyLimits)
    app.add_middleware(VisitorCookies, secure=services.cookie_secure)
    app.add_middleware(ForwardedClient, trusted=tuple(trusted_proxies))

    # The dependencies below are cheap (one indexed read at most) and run on the event
    # loop: as plain functions each would be a hop through the thread pool, and under
    # load those hops, not the pages, were most of a request's time.
    def visitor_of(request: Request) -> Visitor:
        token = request.cookies.get(SESSION_COOKIE)
        account = accounts.session_account(token)
        binding = token if account else pre_session(request)
        lang = request.cookies.get(LANG_COOKIE, "vi")
        lang = lang if lang in i18n.LANGUAGES else "vi"
        ip = request.client.host if request.client else ""
        return Visitor(account, token if account else None, binding, lang, ip, accounts.csrf_token(binding))

    async def visitor(request: Request) -> Visitor:
        return visitor_of(request)

    async def csrf_checked(request: Request, who: Visitor = Depends(visitor)) -> Visitor:
        token = request.headers.get("x-csrf-token")
        if token is None and "form" in request.headers.get("content-type", ""):
            token = (await request.form()).get("csrf")
        if not accounts.csrf_ok(who.binding, token):
            raise HTTPException(403, "csrf")
        return who

    async def logged_in(who: Visitor = Depends(visitor)) -> Visitor:
        if who.account is None:
            raise LoginRequired()
        return who

    async def logged_in_csrf(who: Visitor = Depends(csrf_checked)) -> Visitor:
        if who.account is None:
            raise LoginRequired()
        return who

    async def operator(who: Visitor = Depends(logged_in)) -> Visitor:
        if not who.account.is_operator:
            raise HTTPException(404)
        return who

    def _venue_for(who: Visitor, venue_id: int, action: str) -> tuple[Venue, str]:
        venue = services.venues.get(venue_id)
        role = services.venues.role_of(venue_id, who.account.id) if venue else None
        if venue is None or role is None:
            raise HTTPException(404)  # a non-member learns nothing, not even that the id exists
        if not allowed(role, action):
            raise HTTPException(403)
        return venue, role

    def render(request: Request, who: Visitor, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
        lang = who.lang
        return TEMPLATES.TemplateResponse(request, name, {
            "who": who, "lang": lang, "csrf": who.csrf, "path": request.url.path,
            "is_officer": bool(who.account) and services.officers.is_officer(who.account.id),
            "t": lambda key, **v: i18n.translate(lang, key, **v),
            "role_name": lambda role: i18n.role_name(lang, role),
            "kind_name": lambda kind: i18n.kind_name(lang, kind),
            "retention_days": services.retention_days,
            **context,
        }, status_code=status_code)

    def login_response(url: str, account: Account, who: Visitor, request_kind: str = "html") -> Response:
        # Always a fresh session id: a token planted before login is worthless after it.
        token = accounts.start_session(account, who.session_token)
        services.audit.record("qrgate.account.login", account=account, ip=who.ip)
        response: Response = (RedirectResponse(url, 303) if request_kind == "html"
                              else JSONResponse({"account": _account_json(account)}))
        response.set_cookie(SESSION_COOKIE, token, max_age=settings.session_ttl_s, httponly=True, samesite="lax",
                            secure=services.cookie_secure, path="/")
        return response

    def code_refused(who: Visitor, phone: str, exc: AuthRefused, action: str, **data: Any) -> None:
        """A failed code check to the audit trail (the number, the reason, never the code),
        and the lock-out it caused. Refusals of a locked number or address are not checked
        codes and stay out: their count is bounded by the lock, not by the attacker."""
        if not exc.counted:
            return
        phone = normalise_phone(phone)
        account = accounts.account_for_phone(phone, create=False)
        services.audit.record(action, account=account, ip=who.ip, phone=phone, reason=exc.reason, **data)
        if exc.locked_now:
            services.audit.record("qrgate.account.locked", account=account, ip=who.ip, phone=phone,
                                  minutes=settings.lockout_s // 60)

    def public_base(request: Request) -> str:
        return services.public_url or str(request.base_url).rstrip("/")

    def selfcheckin_url(request: Request, venue: Venue) -> str:
        return f"{public_base(request)}/c/{services.venues.ensure_public_token(venue.id)}"

    def safe_next(url: str | None) -> str:
        # Only paths on this site: an open redirect would let a phishing link borrow our name.
        if not url or not url.startswith("/") or url.startswith("//") or "\\" in url or urlsplit(url).netloc:
            return "/venues"
        return url

    @app.exception_handler(LoginRequired)
    async def login_required(request: Request, exc: LoginRequired):
        if request.url.path.startswith("/api/"):
            return JSONResponse({"detail": "login required"}, 401)
        return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException):
        if request.url.path.startswith("/api/") or exc.status_code not in (403, 404):
            return JSONResponse({"detail": exc.detail}, exc.status_code, headers=getattr(exc, "headers", None))
        who = visitor_of(request)
        message = "error.csrf" if exc.detail == "csrf" else "error.forbidden" if exc.status_code == 403 else "error.not_found"
        return render(request, who, "error.html", exc.status_code, message=message)

    # -- home, language, health ----------------------------------------------------

    @app.get("/healthz")
    def healthz():
        """Liveness: the database answers (one indexed row, cheap at any size)."""
        latest = storage.latest_checkins(1)
        return {"ok": True, "latest_checkin_id": latest[0]["id"] if latest else None}

    @app.get("/api/checkins")
    def api_checkins(limit: int = Query(50, ge=1, le=500), before_id: int | None = Query(None, ge=1, le=2**62),
                     who: Visitor = Depends(visitor)):
        """The latest check-ins of every venue, newest first, personal data masked; page with
        ``before_id``. Anonymous only when the server's public feed is on; else operators."""
        if not services.public_feed and not (who.account and who.account.is_operator):
            raise HTTPException(404)
        rows = [_present(r, tz) for r in storage.latest_checkins(limit, before_id)]
        return {"checkins": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}

    @app.get("/", response_class=HTMLResponse, include_in_schema=False)
    def index(request: Request, who: Visitor = Depends(visitor)):
        show_feed = services.public_feed or (who.account is not None and who.account.is_operator)
        if who.account and not show_feed:
            return RedirectResponse("/venues", 303)
        rows = [_present(r, tz) for r in storage.latest_checkins(100)] if show_feed else []
        return render(request, who, "checkins.html", rows=rows, total=storage.count_checkins() if show_feed else 0,
                      timezone=timezone, show_feed=show_feed)

    @app.get("/lang/{code}", include_in_schema=False)
    def set_language(code: str, next: str = "/"):
        response = RedirectResponse(safe_next(next) if next != "/" else "/", 303)
        response.set_cookie(LANG_COOKIE, code if code in i18n.LANGUAGES else "vi", max_age=365 * 86400,
                            samesite="lax", secure=services.cookie_secure, httponly=True)
        return response

    # -- logging in ----------------------------------------------------------------

    @app.get("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_page(request: Request, next: str = "/venues", who: Visitor = Depends(visitor)):
        return render(request, who, "login.html", next=safe_next(next), phone="", error="")

    @app.post("/login", response_class=HTMLResponse, include_in_schema=False)
    def login_send(request: Request, phone: str = Form("", max_length=200), next: str = Form("/venues"),
                   who: Visitor = Depends(csrf_checked)):
        try:
            phone = normalise_phone(phone)
            accounts.send_code(phone, "login", who.ip)
        except (PhoneError, AuthRefused) as exc:
            return render(request, who, "login.html", 400 if isinstance(exc, PhoneError) else 429,
                          next=safe_next(next), phone=phone, error=str(exc))
        return render(request, who, "login_code.html", next=safe_next(next), phone=phone, error="")

    @app.post("/login/code", response_class=HTMLResponse, include_in_schema=False)
    def login_check(request: Request, phone: str = Form("", max_length=200), code: str = Form("", max_length=50),
                    next: str = Form("/venues"), who: Visitor = Depends(csrf_checked)):
        try:
            phone = accounts.check_code(phone, "login", code, who.ip)
        except (PhoneError, AuthRefused) as exc:
            if isinstance(exc, AuthRefused):
                code_refused(who, phone, exc, "qrgate.account.login.failed")
            status = 429 if getattr(exc, "reason", "") in ("locked", "rate_limited") else 400
            return render(request, who, "login_code.html", status, next=safe_next(next), phone=phone, error=str(exc))
        return login_response(safe_next(next), accounts.account_for_phone(phone), who)

    @app.get("/login/link", include_in_schema=False)
    def login_link(request: Request, token: str = Query("", max_length=100), next: str = "/venues",
                   who: Visitor = Depends(visitor)):
        """A single-use link from `qrgate-server login-link` (operators, the demo)."""
        account = accounts.redeem_login_link(token)
        if account is None:
            return render(request, who, "error.html", 404, message="error.not_found")
        return login_response(safe_next(next), account, who)

    @app.post("/logout", include_in_schema=False)
    def logout(who: Visitor = Depends(csrf_checked)):
        return _logout(who, RedirectResponse("/", 303))

    def _logout(who: Visitor, response: Response) -> Response:
        if who.account:
            services.audit.record("qrgate.account.logout", account=who.account, ip=who.ip)
            accounts.end_session(who.session_token)
        response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=services.cookie_secure)
        return response

    @app.get("/api/session", tags=["accounts"])
    def api_session(who: Visitor = Depends(visitor)):
        """Who is logged in, and the CSRF token to send as ``X-CSRF-Token`` on every change."""
        return {"account": _account_json(who.account) if who.account else None, "csrf_token": who.csrf}

    @app.post("/api/login/code", tags=["accounts"])
    def api_send_code(body: PhoneBody, who: Visitor = Depends(csrf_checked)):
        """Send a login code to the phone number (rate limited per number and per address)."""
        try:
            accounts.send_code(body.phone, "login", who.ip)
        except PhoneError as exc:
            raise HTTPException(400, str(exc)) from None
        except AuthRefused as exc:
            raise HTTPException(429, str(exc), headers={"Retry-After": str(exc.retry_after_s)}) from None
        return {"sent": True}

    @app.post("/api/login", tags=["accounts"])
    def api_login(body: LoginBody, who: Visitor = Depends(csrf_checked)):
        """Log in with the code; sets the session cookie (a new session id every time)."""
        try:
            phone = accounts.check_code(body.phone, "login", body.code, who.ip)
        except PhoneError as exc:
            raise HTTPException(400, str(exc)) from None
        except AuthRefused as exc:
            code_refused(who, body.phone, exc, "qrgate.account.login.failed")
            raise HTTPException(429 if exc.reason in ("locked", "rate_limited") else 400, str(exc)) from None
        return login_response("", accounts.account_for_phone(phone), who, "json")

    @app.post("/api/logout", tags=["accounts"])
    def api_logout(who: Visitor = Depends(csrf_checked)):
        """End the session."""
        return _logout(who, JSONResponse({"logged_out": True}))

    # -- venues ----------------------------------------------------------------------

    def venue_json(venue: Venue, role: str | None = None) -> dict:
        data = venue.as_dict()
        data.pop("public_token")
        data["area"] = services.venues.area_text(venue)
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

    def form_context(who: Visitor, values: dict, errors: dict, venue_id: int | None = None) -> dict:
        parents = [(v, r) for v, r in services.venues.for_account(who.account.id)
                   if r in ("owner", "manager") and v.id != venue_id]
        return {"values": values, "errors": errors, "kinds": VENUE_KINDS, "areas": services.areas,
                "parents": parents, "venue_id": venue_id}

    @app.get("/venues", response_class=HTMLResponse, include_in_schema=False)
    def venues_page(request: Request, who: Visitor = Depends(logged_in)):
        return render(request, who, "venues.html", venues=services.venues.for_account(who.account.id),
                      invitations=_invitations_for(who), area_text=services.venues.area_text)

    def _invitations_for(who: Visitor) -> list[dict]:
        out = []
        for inv in services.venues.pending_for_phone(who.account.phone):
            venue = services.venues.get(inv.venue_id)
            out.append({"id": inv.id, "venue": venue.name if venue else "", "role": inv.role})
        return out

    @app.get("/venues/new", response_class=HTMLResponse, include_in_schema=False)
    def venue_new_page(request: Request, who: Visitor = Depends(logged_in)):
        return render(request, who, "venue_form.html", **form_context(who, {}, {}))

    @app.post("/venues/new", response_class=HTMLResponse, include_in_schema=False)
    async def venue_create(request: Request, who: Visitor = Depends(logged_in_csrf)):
        form = dict(await request.form())
        try:
            venue = services.venues.create(venue_input(form), who.account)
        except VenueError as exc:
            return render(request, who, "venue_form.html", 400, **form_context(who, form, exc.problems))
        services.audit.record("qrgate.venue.created", account=who.account, ip=who.ip, venue_id=venue.id,
                              venue=venue.name)
        return RedirectResponse(f"/venues/{venue.id}", 303)

    @app.get("/venues/{venue_id}", response_class=HTMLResponse, include_in_schema=False)
    def venue_page(request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
        venue, role = _venue_for(who, venue_id, "venue.view")
        parent = services.venues.get(venue.parent_id) if venue.parent_id else None
        can = {action: allowed(role, action) for action in ("venue.edit", "poster.download", "checkins.export",
                                                           "history.view", "members.view", "stations.enrol",
                                                           "roster.view", "reports.view", "passes.print")}
        can["share"] = any(may_share(role, r) for r in ROLES)
        members = services.venues.members(venue_id) if can["members.view"] else []
        pending = services.venues.pending_for_venue(venue_id) if can["members.view"] else []
        return render(request, who, "venue.html", venue=venue, role=role, can=can, parent=parent,
                      area=services.venues.area_text(venue), members=members, pending=pending,
                      may_share=lambda r: may_share(role, r),
                      rows=venue_checkins(storage, venue_id, tz, 50), timezone=timezone,
                      selfcheckin_url=selfcheckin_url(request, venue))

    @app.get("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
    def venue_edit_page(request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
        venue, _ = _venue_for(who, venue_id, "venue.edit")
        values = venue.as_dict()
        values["parent_id"] = venue.parent_id or ""
        return render(request, who, "venue_form.html", **form_context(who, values, {}, venue_id))

    @app.post("/venues/{venue_id}/edit", response_class=HTMLResponse, include_in_schema=False)
    async def venue_edit(request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
        venue, _ = _venue_for(who, venue_id, "venue.edit")
        form = dict(await request.form())
        try:
            venue = services.venues.update(venue_id, venue_input(form), who.account)
        except VenueError as exc:
            return render(request, who, "venue_form.html", 400, **form_context(who, form, exc.problems, venue_id))
        services.audit.record("qrgate.venue.updated", account=who.account, ip=who.ip, venue_id=venue.id,
                              venue=venue.name)
        return RedirectResponse(f"/venues/{venue.id}", 303)

    @app.get("/api/areas", tags=["venues"])
    def api_areas():
        """Provinces, their districts (where used) and wards, with their codes."""
        return {"provinces": services.areas.as_tree()}

    @app.get("/api/venues", tags=["venues"])
    def api_venues(who: Visitor = Depends(logged_in)):
        """The venues this account has a role at."""
        return {"venues": [venue_json(v, r) for v, r in services.venues.for_account(who.account.id)]}

    @app.post("/api/venues", tags=["venues"], status_code=201)
    def api_venue_create(body: VenueBody, who: Visitor = Depends(logged_in_csrf)):
        """Register a venue; the caller becomes its owner. 422 lists the problems per field."""
        try:
            venue = services.venues.create(VenueInput(**body.model_dump()), who.account)
        except VenueError as exc:
            return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
        services.audit.record("qrgate.venue.created", account=who.account, ip=who.ip, venue_id=venue.id,
                              venue=venue.name)
        return venue_json(venue, "owner")

    @app.get("/api/venues/{venue_id}", tags=["venues"])
    def api_venue(venue_id: int, request: Request, who: Visitor = Depends(logged_in)):
        """One venue, with the caller's role and its self check-in URL."""
        venue, role = _venue_for(who, venue_id, "venue.view")
        return {**venue_json(venue, role), "selfcheckin_url": selfcheckin_url(request, venue)}

    @app.put("/api/venues/{venue_id}", tags=["venues"])
    def api_venue_update(venue_id: int, body: VenueBody, who: Visitor = Depends(logged_in_csrf)):
        """Change a venue (owners and managers)."""
        _venue_for(who, venue_id, "venue.edit")
        try:
            venue = services.venues.update(venue_id, VenueInput(**body.model_dump()), who.account)
        except VenueError as exc:
            return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
        services.audit.record("qrgate.venue.updated", account=who.account, ip=who.ip, venue_id=venue.id,
                              venue=venue.name)
        return venue_json(venue)

    @app.get("/api/venues/{venue_id}/checkins", tags=["venues"])
    def api_venue_checkins(venue_id: int, limit: int = Query(50, ge=1, le=500),
                           before_id: int | None = Query(None, ge=1), who: Visitor = Depends(logged_in)):
        """The venue's latest check-ins, masked, newest first."""
        _venue_for(who, venue_id, "checkins.view")
        rows = venue_checkins(storage, venue_id, tz, limit, before_id)
        return {"checkins": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}

    @app.get("/venues/{venue_id}/poster.{fmt}", tags=["venues"], response_class=Response)
    def venue_poster(venue_id: int, fmt: str, request: Request, who: Visitor = Depends(logged_in)):
        """The A4 landscape poster with the venue's self check-in QR, as ``png`` or ``pdf``."""
        if fmt not in ("png", "pdf"):
            raise HTTPException(404)
        venue, _ = _venue_for(who, venue_id, "poster.download")
        make = poster_png if fmt == "png" else poster_pdf
        data = make(selfcheckin_url(request, venue), venue.name, venue.address, services.venues.area_text(venue))
        services.audit.record("qrgate.venue.poster.downloaded", account=who.account, ip=who.ip, venue_id=venue.id,
                              venue=venue.name, format=fmt.upper())
        return Response(data, media_type="image/png" if fmt == "png" else "application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="venue-{venue.id}-poster.{fmt}"'})

    # -- sharing -----------------------------------------------------------------------

    def share(who: Visitor, venue_id: int, phones_text: str, role: str) -> list[str]:
        venue, my_role = _venue_for(who, venue_id, "venue.view")
        if role not in ROLES:
            raise VenueError({"role": "Hãy chọn vai trò."})
        if not may_share(my_role, role):
            raise HTTPException(403)
        phones = parse_phone_list(phones_text)

        def record(inv, replaced) -> None:  # in the invitation's own transaction
            for old in replaced:
                services.audit.record("qrgate.venue.invitation.cancelled", account=who.account, ip=who.ip,
                                      venue_id=venue_id, venue=venue.name, phone=old.phone, role=old.role,
                                      replaced_by=inv.id)
            services.audit.record("qrgate.venue.member.invited", account=who.account, ip=who.ip, venue_id=venue_id,
                                  venue=venue.name, phone=inv.phone, role=role)

        # A new invitation cancels the number's pending one: only if this member may cancel it.
        invitations = services.venues.invite(venue_id, phones, role, who.account, who.ip,
                                             may_replace=lambda pending: may_share(my_role, pending), record=record)
        return [inv.phone for inv in invitations]

    def revoke(who: Visitor, venue_id: int, account_id: int) -> None:
        venue, my_role = _venue_for(who, venue_id, "venue.view")
        target = next((m for m in services.venues.members(venue_id) if m.account_id == account_id), None)
        if target is None:
            raise HTTPException(404)
        if not may_share(my_role, target.role) and account_id != who.account.id:
            raise HTTPException(403)
        services.venues.revoke(venue_id, account_id)
        services.audit.record("qrgate.venue.member.revoked", account=who.account, ip=who.ip, venue_id=venue_id,
                              venue=venue.name, phone=target.phone, role=target.role)

    @app.get("/venues/{venue_id}/share", response_class=HTMLResponse, include_in_schema=False)
    def share_page(request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
        venue, role = _venue_for(who, venue_id, "venue.view")
        roles = [r for r in ROLES if may_share(role, r)]
        if not roles:
            raise HTTPException(403)
        return render(request, who, "share.html", venue=venue, roles=roles, phones="", role="", error="", sent=[])

    @app.post("/venues/{venue_id}/share", response_class=HTMLResponse, include_in_schema=False)
    def share_submit(request: Request, venue_id: int, phones: str = Form("", max_length=2000),
                     role: str = Form("", max_length=40), who: Visitor = Depends(logged_in_csrf)):
        venue, my_role = _venue_for(who, venue_id, "venue.view")
        roles = [r for r in ROLES if may_share(my_role, r)]
        try:
            sent = share(who, venue_id, phones, role)
        except (PhoneError, VenueError, AuthRefused) as exc:
            return render(request, who, "share.html", 400, venue=venue, roles=roles, phones=phones, role=role,
                          error=str(exc), sent=[])
        return render(request, who, "share.html", venue=venue, roles=roles, phones="", role=role, error="", sent=sent)

    @app.post("/venues/{venue_id}/members/{account_id}/revoke", include_in_schema=False)
    def revoke_submit(request: Request, venue_id: int, account_id: int, who: Visitor = Depends(logged_in_csrf)):
        try:
            revoke(who, venue_id, account_id)
        except VenueError as exc:
            return render(request, who, "error.html", 409, message_text=str(exc))
        if services.venues.role_of(venue_id, who.account.id) is None:
            return RedirectResponse("/venues", 303)
        return RedirectResponse(f"/venues/{venue_id}", 303)

    @app.post("/venues/{venue_id}/invitations/{invitation_id}/cancel", include_in_schema=False)
    def cancel_submit(venue_id: int, invitation_id: int, who: Visitor = Depends(logged_in_csrf)):
        _cancel(who, venue_id, invitation_id)
        return RedirectResponse(f"/venues/{venue_id}", 303)

    def _cancel(who: Visitor, venue_id: int, invitation_id: int) -> None:
        venue, my_role = _venue_for(who, venue_id, "venue.view")
        inv = services.venues.invitation(invitation_id)
        if inv is None or inv.venue_id != venue_id or inv.state != "pending":
            raise HTTPException(404)
        if not may_share(my_role, inv.role):
            raise HTTPException(403)
        services.venues.cancel_invitation(invitation_id)
        services.audit.record("qrgate.venue.invitation.cancelled", account=who.account, ip=who.ip,
                              venue_id=venue_id, venue=venue.name, phone=inv.phone, role=inv.role)

    @app.get("/invitations/{invitation_id}", response_class=HTMLResponse, include_in_schema=False)
    def invitation_page(request: Request, invitation_id: int, who: Visitor = Depends(logged_in)):
        inv = services.venues.invitation(invitation_id)
        if inv is None or inv.phone != who.account.phone or inv.state != "pending":
            raise HTTPException(404)
        return render(request, who, "invitation.html", inv=inv, venue=services.venues.get(inv.venue_id), error="")

    @app.post("/invitations/{invitation_id}", response_class=HTMLResponse, include_in_schema=False)
    def invitation_accept(request: Request, invitation_id: int, code: str = Form("", max_length=50),
                          who: Visitor = Depends(logged_in_csrf)):
        try:
            inv = _accept(who, invitation_id, code)
        except (AuthRefused, VenueError) as exc:
            inv = services.venues.invitation(invitation_id)
            return render(request, who, "invitation.html", 400, inv=inv, venue=services.venues.get(inv.venue_id),
                          error=str(exc))
        return RedirectResponse(f"/venues/{inv.venue_id}", 303)

    def _accept(who: Visitor, invitation_id: int, code: str):
        try:
            inv = services.venues.accept(invitation_id, who.account, code, who.ip)
        except NotFound:
            raise HTTPException(404) from None
        except AuthRefused as exc:
            pending = services.venues.invitation(invitation_id)
            code_refused(who, who.account.phone, exc, "qrgate.venue.invitation.code_failed", venue_id=pending.venue_id)
            raise
        venue = services.venues.get(inv.venue_id)
        services.audit.record("qrgate.venue.member.granted", account=who.account, ip=who.ip, venue_id=inv.venue_id,
                              venue=venue.name, phone=inv.phone, role=inv.role)
        return inv

    @app.get("/api/venues/{venue_id}/members", tags=["sharing"])
    def api_members(venue_id: int, who: Visitor = Depends(logged_in)):
        """Members and pending invitations (owners and managers)."""
        _venue_for(who, venue_id, "members.view")
        return {
            "members": [{"account_id": m.account_id, "phone": m.phone, "role": m.role} for m in
                        services.venues.members(venue_id)],
            "pending": [{"id": i.id, "phone": i.phone, "role": i.role} for i in
                        services.venues.pending_for_venue(venue_id)],
        }

    @app.post("/api/venues/{venue_id}/invitations", tags=["sharing"], status_code=201)
    def api_share(venue_id: int, body: InviteBody, who: Visitor = Depends(logged_in_csrf)):
        """Share with several numbers at once; each gets a confirmation code by SMS."""
        try:
            return {"invited": share(who, venue_id, body.phones, body.role)}
        except InvitationConflict as exc:
            raise HTTPException(409, str(exc)) from None
        except (PhoneError, VenueError) as exc:
            raise HTTPException(400, str(exc)) from None
        except AuthRefused as exc:
            raise HTTPException(429, str(exc)) from None

    @app.delete("/api/venues/{venue_id}/invitations/{invitation_id}", tags=["sharing"])
    def api_cancel(venue_id: int, invitation_id: int, who: Visitor = Depends(logged_in_csrf)):
        """Cancel a pending invitation."""
        _cancel(who, venue_id, invitation_id)
        return {"cancelled": invitation_id}

    @app.delete("/api/venues/{venue_id}/members/{account_id}", tags=["sharing"])
    def api_revoke(venue_id: int, account_id: int, who: Visitor = Depends(logged_in_csrf)):
        """Revoke a member's role; the last owner cannot be removed (409)."""
        try:
            revoke(who, venue_id, account_id)
        except VenueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"revoked": account_id}

    @app.get("/api/invitations", tags=["sharing"])
    def api_invitations(who: Visitor = Depends(logged_in)):
        """Invitations waiting for this account's phone number."""
        return {"invitations": _invitations_for(who)}

    @app.post("/api/invitations/{invitation_id}/accept", tags=["sharing"])
    def api_accept(invitation_id: int, body: CodeBody, who: Visitor = Depends(logged_in_csrf)):
        """Accept an invitation with the code sent to this account's number."""
        try:
            inv = _accept(who, invitation_id, body.code)
        except AuthRefused as exc:
            raise HTTPException(429 if exc.reason in ("locked", "rate_limited") else 400, str(exc)) from None
        except VenueError as exc:
            raise HTTPException(409, str(exc)) from None
        return {"venue_id": inv.venue_id, "role": inv.role}

    # -- history -------------------------------------------------------------------------

    def history_rows(venue: Venue, lang: str) -> list[dict]:
        return [{
            "time": dt.datetime.fromtimestamp(e.ts_ms / 1000, tz).isoformat(timespec="seconds"),
            "time_text": dt.datetime.fromtimestamp(e.ts_ms / 1000, tz).strftime("%d/%m/%Y %H:%M"),
            "account": e.phone, "ip": e.ip, "action": e.action, "data": e.data,
            "text": i18n.history_text(lang, e.action, e.data, venue.name),
        } for e in services.audit.for_venue(venue.id)]

    @app.get("/venues/{venue_id}/history", response_class=HTMLResponse, include_in_schema=False)
    def history_page(request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
        venue, _ = _venue_for(who, venue_id, "history.view")
        return render(request, who, "history.html", venue=venue, rows=history_rows(venue, who.lang))

    @app.get("/api/venues/{venue_id}/history", tags=["sharing"])
    def api_history(venue_id: int, who: Visitor = Depends(logged_in)):
        """The venue's audit trail, newest first (owners and managers)."""
        venue, _ = _venue_for(who, venue_id, "history.view")
        return {"history": history_rows(venue, who.lang)}

    # -- self check-in ---------------------------------------------------------------------

    def declare(who: Visitor, token: str, form: dict) -> tuple[Venue, dict]:
        venue = services.venues.by_token(token)
        if venue is None:
            raise HTTPException(404)
        if not accounts.allow(f"self:ip:{address_key(who.ip)}", 30, 600):
            raise HTTPException(429, "Quá nhiều lượt khai báo từ địa chỉ này. Vui lòng thử lại sau.")
        declaration = parse_declaration(form.get("id_number", ""), form.get("name", ""), form.get("birth_year", ""),
                                        form.get("direction", ""), dt.datetime.now(tz).year)
        record = services.self_checkin.check_in(venue, declaration)
        return venue, record

    @app.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
    def selfcheckin_page(request: Request, token: str, who: Visitor = Depends(visitor)):
        venue = services.venues.by_token(token)
        if venue is None:
            raise HTTPException(404)
        return render(request, who, "selfcheckin.html", venue=venue, area=services.venues.area_text(venue),
                      values={}, errors={}, done=None)

    @app.post("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
    async def selfcheckin_submit(request: Request, token: str, who: Visitor = Depends(csrf_checked)):
        form = {k: str(v)[:2000] for k, v in (await request.form()).items()}
        try:
            venue, record = declare(who, token, form)
        except SelfCheckinError as exc:
            venue = services.venues.by_token(token)
            return render(request, who, "selfcheckin.html", 400, venue=venue, area=services.venues.area_text(venue),
                          values=form, errors=exc.problems, done=None)
        when = dt.datetime.fromtimestamp(record["ts"] / 1000, tz)
        done = {"direction": record["dir"], "name": mask_person_name(record["person"]["name"]),
                "id_number": mask_id_number(record["person"]["id"]), "time_text": when.strftime("%d/%m/%Y %H:%M:%S")}
        return render(request, who, "selfcheckin.html", venue=venue, area=services.venues.area_text(venue),
                      values={}, errors={}, done=done)

    @app.post("/api/self-checkin/{token}", tags=["self check-in"], status_code=201)
    def api_selfcheckin(token: str, body: DeclarationBody, who: Visitor = Depends(csrf_checked)):
        """Declare coming in or going out of the venue whose poster carries ``token``."""
        try:
            venue, record = declare(who, token, body.model_dump())
        except SelfCheckinError as exc:
            return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
        return {"venue": venue.name, "direction": record["dir"], "time_ms": record["ts"],
                "name": mask_person_name(record["person"]["name"])}

    # -- stations: enrolment codes (venue roles), the fleet (operators) ----------------------

    @app.post("/venues/{venue_id}/enrol-code", response_class=HTMLResponse, include_in_schema=False)
    def enrol_code_page(request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
        venue, _ = _venue_for(who, venue_id, "stations.enrol")
        code, expires = _make_enrol_code(request, who, venue, 10)
        buffer = io.BytesIO()
        segno.make_qr(code, error="m").save(buffer, kind="svg", scale=6, border=4, xmldecl=False)
        return render(request, who, "enrol_code.html", venue=venue, qr_svg=buffer.getvalue().decode("ascii"),
                      expires_text=dt.datetime.fromtimestamp(expires, tz).strftime("%H:%M"))

    @app.post("/api/venues/{venue_id}/enrol-code", tags=["stations"], status_code=201)
    def api_enrol_code(request: Request, venue_id: int, body: EnrolCodeBody, who: Visitor = Depends(logged_in_csrf)):
        """A single-use code (QR text) that binds a new station to this venue."""
        venue, _ = _venue_for(who, venue_id, "stations.enrol")
        code, expires = _make_enrol_code(request, who, venue, body.minutes)
        return {"code": code, "expires_at": dt.datetime.fromtimestamp(expires, tz).isoformat(timespec="seconds")}

    def _make_enrol_code(request: Request, who: Visitor, venue: Venue, minutes: float) -> tuple[str, float]:
        try:
            token = enrolment.create_token(venue.id, minutes=minutes, created_by=who.account.phone)
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None
        services.audit.record("qrgate.station.enrol_code", account=who.account, ip=who.ip, venue_id=venue.id,
                              minutes=minutes)
        return enrol_code_text(public_base(request), token), clock() + minutes * 60

    def _fleet_rows() -> list[dict]:
        rows = fleet.rows(int(clock() * 1000))
        for r in rows:
            r["state"] = "retired" if r["status"] != "active" else ("online" if r["online"] else "offline")
            r["seen_text"] = (dt.datetime.fromtimestamp(r["last_seen_ms"] / 1000, tz).strftime("%d/%m/%Y %H:%M")
                              if r["last_seen_ms"] else "–")
        return rows

    @app.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
    def fleet_page(request: Request, who: Visitor = Depends(operator)):
        venues = storage.sql.dicts("SELECT id, name FROM venues ORDER BY name")
        return render(request, who, "fleet.html", rows=_fleet_rows(), venues=venues)

    @app.get("/api/fleet", tags=["stations"])
    def api_fleet(who: Visitor = Depends(operator)):
        """Every station: venue, online, backlog, clock, firmware, fault, last seen (operators)."""
        return {"stations": _fleet_rows()}

    def _fleet_action(request: Request, who: Visitor, station_id: str, action: Callable[[], None], code: str,
                      **data: Any) -> Response:
        try:
            action()
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None
        services.audit.record(code, account=who.account, ip=who.ip, station=station_id, **data)
        return RedirectResponse("/fleet", 303)

    async def operator_form(request: Request, who: Visitor = Depends(csrf_checked)):
        if who.account is None:
            raise LoginRequired()
        if not who.account.is_operator:
            raise HTTPException(404)
        return who, await request.form()

    @app.post("/fleet/{station_id}/retire", include_in_schema=False)
    def fleet_retire(request: Request, station_id: str, checked=Depends(operator_form)):
        who, _ = checked

        def retire():
            info = storage.station(station_id)
            if info is None or info.status != "retired":  # again: the broker is told again
                fleet.retire(station_id)
            if broker_files is not None:
                try:
                    # Deleting the account also closes the station's open connection.
                    broker_files.remove_user(station_id)
                except DriverError as exc:
                    raise HTTPException(503, f"{station_id} is retired and its records are refused, but the "
                                             f"broker could not be told ({exc}): retire it again") from None

        return _fleet_action(request, who, station_id, retire, "qrgate.station.retired")

    @app.post("/fleet/{station_id}/reassign", include_in_schema=False)
    def fleet_reassign(request: Request, station_id: str, checked=Depends(operator_form)):
        who, form = checked
        try:
            venue_id = int(form.get("venue_id", ""))
        except ValueError:
            raise HTTPException(400, "venue_id") from None
        return _fleet_action(request, who, station_id, lambda: fleet.reassign(station_id, venue_id),
                             "qrgate.station.reassigned", venue=venue_id)

    # -- operator ----------------------------------------------------------------------------

    @app.get("/operator/sms", response_class=HTMLResponse, include_in_schema=False)
    def operator_sms(request: Request, who: Visitor = Depends(operator)):
        outbox = getattr(services.sender, "outbox", None)
        if outbox is None:
            raise HTTPException(404)
        messages = [{"phone": m.phone, "text": m.text,
                     "time_text": dt.datetime.fromtimestamp(m.sent_at, tz).strftime("%d/%m/%Y %H:%M:%S")}
                    for m in outbox]
        return render(request, who, "operator_sms.html", messages=messages)

    # -- feature routers -----------------------------------------------------------------

    kit = WebKit(services=services, storage=storage, tz=tz, clock=clock, visitor=visitor, logged_in=logged_in,
                 logged_in_csrf=logged_in_csrf, operator=operator, venue_for=_venue_for, render=render)
    app.state.kit = kit
    for module_name in FEATURE_ROUTERS:
        app.include_router(importlib.import_module(module_name).make_router(kit))
    return app


def _account_json(account: Account) -> dict:
    return {"id": account.id, "phone": account.phone, "is_operator": account.is_operator}
