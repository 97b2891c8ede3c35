"""The server's web UI and JSON API (FastAPI, Jinja2): the composition root.

``create_app`` makes the services once (server.web.deps.Services), adds the middleware
(server/web/middleware.py) and includes each feature package's router, imported by
name. Every page is rendered on the server with autoescaping; every state change is a
POST (or PUT/DELETE in the API) checked against a CSRF token bound to the visitor's
cookie; venue access goes through server.venues.access.venue_for.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from urllib.parse import quote
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, RedirectResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException as StarletteHTTPException

from qrgate import __version__
from server.accounts import routes as accounts_routes
from server.accounts.accounts import Accounts, AuthSettings
from server.areas.officers import Officers
from server.accounts.sms import DevSmsSender, SmsSender
from server.audit import AuditLog
from server.checkins import feed_routes, routes as checkins_routes, trace_routes
from server.ingest import enrol_routes, metrics, routes as ingest_routes
from server.ingest.enrol import Enrolment
from server.ingest.fleet import Fleet
from server.phone import routes as phone_routes
from server.releases import routes as releases_routes, wave_routes
from server.reports import dashboard_routes, export_routes, report_routes, service as reports_service
from server.roster import pass_routes, routes as roster_routes, service as roster_service
from server.roster.parsing import MAX_UPLOAD_BYTES
from server.selfcheckin import routes as selfcheckin_routes
from server.selfcheckin.selfcheckin import SelfCheckin
from server.storage import Storage
from server.venues import routes as venues_routes, sharing_routes
from server.areas.areas import AreaDirectory
from server.venues.venues import VenueDirectory
from server.web import routes as web_routes
from server.web.deps import LoginRequired, Services, visitor_of
from server.web.middleware import BodyLimits, ForwardedClient, VisitorCookies
from server.web.pages import STATIC_DIR, render

# A roster file may be MAX_UPLOAD_BYTES; the multipart envelope around it adds a little.
UPLOADS = ((r"/(?:api/)?venues/[^/]+/roster", MAX_UPLOAD_BYTES + 64 * 1024),)


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
    (server.ingest.enrol.Enrolment) binds stations (None: codes can be made, but the
    handshake answers 503); ``bridge`` feeds /metrics; ``broker_files`` lets the fleet
    page retire a station's broker account. ``trusted_proxies`` lists the reverse proxies
    whose X-Forwarded-For is believed (ForwardedClient); ``retention_days`` is how long
    check-ins are kept, said on the history page (None: the [retention] default).
    """
    app = FastAPI(title="QR gate server", version=__version__,
                  description="Accounts by phone, venues, posters, sharing by role, history, self check-in.")
    app.state.services = _services(storage, timezone, auth, sender, areas, public_url, public_feed, clock,
                                   enrolment, bridge, broker_files, retention_days)
    app.state.metrics_registry = metrics.registry(storage, bridge)
    roster_service.attach(app)
    reports_service.attach(app)  # the export job queue, the report archive, the dashboards' roll-up
    # The last added runs first: the real address, then the headers of every answer
    # (the 413 and 400 of BodyLimits too), then the body's size and text.
    app.add_middleware(BodyLimits, uploads=UPLOADS)
    app.add_middleware(VisitorCookies, secure=app.state.services.cookie_secure)
    app.add_middleware(ForwardedClient, trusted=tuple(trusted_proxies))
    app.add_exception_handler(LoginRequired, _login_required)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.mount("/static", StaticFiles(directory=str(STATIC_DIR)), name="static")
    for router in (web_routes.router,
                   accounts_routes.router,
                   venues_routes.router, sharing_routes.router,
                   selfcheckin_routes.router,
                   enrol_routes.router, ingest_routes.router, metrics.router,
                   feed_routes.router, checkins_routes.router, trace_routes.router,
                   export_routes.router, report_routes.router, dashboard_routes.router,
                   roster_routes.router, pass_routes.router,
                   phone_routes.router,
                   releases_routes.router, wave_routes.router):
        app.include_router(router)
    return app


def _services(storage, timezone, auth, sender, areas, public_url, public_feed, clock, enrolment, bridge,
              broker_files, retention_days) -> Services:
    from server.config import AuthSection, RetentionSection

    auth = auth if auth is not None else AuthSection()
    sender = sender if sender is not None else DevSmsSender()
    settings = AuthSettings(code_ttl_s=auth.code_ttl_s, session_ttl_s=auth.session_hours * 3600)
    accounts = Accounts(storage, sender, settings, clock)
    areas = areas or AreaDirectory.load()
    return Services(
        storage=storage, accounts=accounts, auth=settings, venues=VenueDirectory(storage, accounts, areas, clock),
        audit=AuditLog(storage, clock), self_checkin=SelfCheckin(storage, clock), areas=areas, sender=sender,
        officers=Officers(storage, areas, clock), enrolment=enrolment or Enrolment(storage), fleet=Fleet(storage),
        tz=ZoneInfo(timezone), timezone=timezone, clock=clock, cookie_secure=auth.cookie_secure,
        public_url=public_url.rstrip("/"), public_feed=public_feed,
        retention_days=RetentionSection().days if retention_days is None else retention_days,
        broker_files=broker_files, bridge=bridge,
    )


async def _login_required(request: Request, exc: LoginRequired):
    if request.url.path.startswith("/api/"):
        return JSONResponse({"detail": "login required"}, 401)
    return RedirectResponse(f"/login?next={quote(request.url.path)}", 303)


async def _http_error(request: Request, exc: StarletteHTTPException):
    if request.url.path.startswith("/api/") or exc.status_code not in (403, 404):
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=getattr(exc, "headers", None))
    message = ("error.csrf" if exc.detail == "csrf" else "error.forbidden" if exc.status_code == 403
               else "error.not_found")
    return render(request, visitor_of(request), "error.html", exc.status_code, message=message)
