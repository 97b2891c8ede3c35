"""What every route shares: the app's services and the visitor, as FastAPI dependencies.

A route declares what it needs in its signature: ``svc: Svc`` for the services,
``who: Visitor = Depends(logged_in)`` for a logged-in account (``visitor`` for anyone,
``logged_in_csrf`` for a change, ``operator`` for the fleet's people). Venue permissions
are checked by server.venues.access.venue_for.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any
from urllib.parse import urlsplit
from zoneinfo import ZoneInfo

from fastapi import Depends, HTTPException, Request

from server.web import i18n
from server.web.middleware import LANG_COOKIE, SESSION_COOKIE, pre_session

if TYPE_CHECKING:  # the feature packages import this module, not the other way round
    from server.accounts.accounts import Account, Accounts, AuthSettings
    from server.accounts.officers import Officers
    from server.accounts.sms import SmsSender
    from server.audit import AuditLog
    from server.ingest.enrol import Enrolment
    from server.ingest.fleet import Fleet
    from server.selfcheckin.selfcheckin import SelfCheckin
    from server.storage import Storage
    from server.areas.areas import AreaDirectory
    from server.venues.venues import VenueDirectory


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
    """Everything the routes use, made once by server.web.app.create_app; tests reach in
    through ``app.state.services``."""

    storage: Storage
    accounts: Accounts
    auth: AuthSettings
    venues: VenueDirectory
    audit: AuditLog
    self_checkin: SelfCheckin
    areas: AreaDirectory
    sender: SmsSender
    officers: Officers
    enrolment: Enrolment
    fleet: Fleet
    tz: ZoneInfo
    timezone: str                 # the IANA name of tz, as pages print it
    clock: Callable[[], float]
    cookie_secure: bool
    public_url: str
    public_feed: bool
    retention_days: int = 0       # how long check-ins are kept (0: no limit), said where history is shown
    broker_files: Any = None      # provisioning.broker: retiring a station closes its broker account
    bridge: Any = None            # server.ingest.bridge.Bridge, for /metrics


async def get_services(request: Request) -> Services:
    # async, as the dependencies below: a plain function would cost every request a hop
    # through the thread pool.
    return request.app.state.services


Svc = Annotated[Services, Depends(get_services)]


# The dependencies below are cheap (one indexed read at most) and run on the event loop:
# as plain functions each would be a hop through the thread pool, and under load those
# hops, not the pages, were most of a request's time.

def visitor_of(request: Request) -> Visitor:
    accounts = request.app.state.services.accounts
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
    if not request.app.state.services.accounts.csrf_ok(who.binding, token):
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


async def operator_form(request: Request, who: Visitor = Depends(csrf_checked)):
    """An operator's form post: (the visitor, the form)."""
    if who.account is None:
        raise LoginRequired()
    if not who.account.is_operator:
        raise HTTPException(404)
    return who, await request.form()


def public_base(request: Request) -> str:
    """The address printed in QR codes and links: [web] public_url, else this request's."""
    return request.app.state.services.public_url or str(request.base_url).rstrip("/")


def safe_next(url: str | None) -> str:
    """Only paths on this site: an open redirect would let a phishing link borrow our name."""
    if not url or not url.startswith("/") or url.startswith("//") or "\\" in url or urlsplit(url).netloc:
        return "/"
    return url
