"""The phone scanner's pages and JSON calls (#23).

- ``GET /phone``: the visitor's venues, each a link to its scanner page.
- ``GET /phone/venues/{id}``: the scanner page, for every venue role (owner, manager,
  gate controller); it enrols the phone with the venue's one-time code, then scans.
- ``GET /phone/venues/{id}/manifest.webmanifest``, ``GET /phone/sw.js``: what makes it an
  installable web app that opens and records with no network.
- ``POST /api/phone/venues/{id}/enrol``: ``{code, public_key, mode}`` -> 201 the setup.
- ``GET /api/phone/devices/{station}/config``: the station config the server pushes.
- ``POST /api/phone/devices/{station}/records``: a station's records message, answered
  with the bridge's ack; no session needed: every record is signed by the phone's key.
"""

from __future__ import annotations

import functools
import json

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from server.accounts.accounts import address_key
from server.phone import assets, words
from server.phone.devices import PhoneEnrolError, token_from_code
from server.phone.service import PhoneService, PhoneSvc, phone_service
from server.venues.access import venue_for
from server.web import i18n
from server.web.deps import Svc, Visitor, logged_in, logged_in_csrf
from server.web.middleware import LANG_COOKIE
from server.web.pages import render

router = APIRouter()

# Who may scan with a phone: every venue role (server/venues/permissions.py).
SCAN_ACTION = "phone.scan"
SCOPE = "/phone/"
SERVICE_WORKER = "/phone/sw.js"
# The scanner page compiles zxing-cpp's WebAssembly ('wasm-unsafe-eval': WebAssembly only,
# not eval) and shows the camera; everything else as on every page (server/web/middleware.py).
PAGE_CSP = ("default-src 'self'; img-src 'self' data: blob:; media-src 'self' blob:;"
            " script-src 'self' 'wasm-unsafe-eval'; style-src 'self'; connect-src 'self'; worker-src 'self';"
            " manifest-src 'self'; frame-ancestors 'none'; form-action 'self'; base-uri 'none'")
UPLOADS_PER_MINUTE = 600  # per address: several phones behind one venue router, a batch per scan each


class EnrolBody(BaseModel):
    code: str = Field(max_length=2000, description="the enrolment QR's text, or its 48-hex token")
    public_key: str = Field(max_length=200, description="the phone's Ed25519 public key, base64 of 32 bytes")
    mode: str = Field("toggle", description="entry, exit or toggle")


@router.get("/phone", response_class=HTMLResponse, include_in_schema=False)
def phone_home(svc: Svc, request: Request, who: Visitor = Depends(logged_in)):
    return render(request, who, "phone_home.html", venues=svc.venues.for_account(who.account.id))


@router.get("/phone/venues/{venue_id}", response_class=HTMLResponse, include_in_schema=False)
def scanner_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in)):
    venue, _ = venue_for(svc, who, venue_id, SCAN_ACTION)
    data = {
        "venueId": venue.id,
        "lang": who.lang,
        "csrf": who.csrf,
        "words": words.page_words(who.lang),
        "enrolUrl": f"/api/phone/venues/{venue.id}/enrol",
        "configUrl": "/api/phone/devices/{station}/config",
        "serviceWorker": SERVICE_WORKER,
        "scope": SCOPE,
    }
    response = render(request, who, "phone.html", venue=venue, data=data)
    response.headers["Content-Security-Policy"] = PAGE_CSP
    return response


@router.get("/phone/venues/{venue_id}/manifest.webmanifest", include_in_schema=False)
def manifest(request: Request, venue_id: int):
    """Fetched without cookies: names no venue, only where the app starts."""
    lang = request.cookies.get(LANG_COOKIE, "vi")
    lang = lang if lang in i18n.LANGUAGES else "vi"
    name = i18n.translate(lang, "phone.title")
    body = {
        "name": f"QR gate — {name}", "short_name": "QR gate", "start_url": f"/phone/venues/{venue_id}",
        "scope": SCOPE, "display": "standalone", "orientation": "portrait", "background_color": "#111111",
        "theme_color": "#0a8a2a", "lang": lang,
        "icons": [{"src": "/static/phone/icon-192.png", "sizes": "192x192", "type": "image/png"},
                  {"src": "/static/phone/icon-512.png", "sizes": "512x512", "type": "image/png"}],
    }
    return Response(json.dumps(body, ensure_ascii=False), media_type="application/manifest+json")


@functools.lru_cache(maxsize=1)
def worker_script() -> str:
    """sw.js with the version of the files it caches: read once, the files change only
    with a new release of the server."""
    head = f"const VERSION = {json.dumps(assets.version())};\nconst CACHED = {json.dumps(assets.cached_urls())};\n"
    return head + (assets.PHONE_STATIC / "sw.js").read_text(encoding="utf-8")


@router.get(SERVICE_WORKER, include_in_schema=False)
def service_worker():
    return Response(worker_script(), media_type="text/javascript",
                    headers={"Service-Worker-Allowed": SCOPE, "Cache-Control": "no-cache"})


@router.post("/api/phone/venues/{venue_id}/enrol", tags=["phone"], status_code=201)
def api_enrol(svc: Svc, venue_id: int, body: EnrolBody, who: Visitor = Depends(logged_in_csrf),
              phone: PhoneService = Depends(phone_service)):  # the login and CSRF checks come first
    """Bind this phone to the venue with the venue's one-time enrolment code: its key is
    registered as a station's, under ``phone-<n>``, bound to the visitor's account."""
    venue, _ = venue_for(svc, who, venue_id, SCAN_ACTION)
    if not svc.accounts.allow(f"phone:enrol:{who.account.id}", 30, 3600):
        raise HTTPException(429, "too many enrolments: try again later")
    token = token_from_code(body.code)
    if not token:
        return JSONResponse({"detail": "unknown"}, 403)
    try:
        device = phone.devices.enrol(token, body.public_key, venue.id, who.account.id, body.mode)
    except PhoneEnrolError as exc:
        return JSONResponse({"detail": exc.code}, exc.status)
    svc.audit.record(words.ENROLLED, account=who.account, ip=who.ip, venue_id=venue.id, station=device.station_id,
                     number=device.number)
    return phone.setup(device)


@router.get("/api/phone/devices/{station_id}/config", tags=["phone"])
def api_config(svc: Svc, station_id: str, who: Visitor = Depends(logged_in),
               backlog: int | None = Query(None, ge=0, le=2**63 - 1, description="records waiting on the phone"),
               phone: PhoneService = Depends(phone_service)):
    """The settings and block list the phone applies offline (as a station's pushed config),
    and the server's clock in milliseconds. Asked every minute: the phone's heartbeat."""
    device = phone.devices.get(station_id)
    if device is None:
        raise HTTPException(404)
    venue_for(svc, who, device.venue_id, SCAN_ACTION)
    if device.status != "active":
        return JSONResponse({"detail": "retired"}, 403)
    return phone.config(device, backlog)


@router.post("/api/phone/devices/{station_id}/records", tags=["phone"])
async def api_records(svc: Svc, phone: PhoneSvc, request: Request, station_id: str):
    """A phone's records message, ``{"records":[...]}``, each record exactly as it signed it
    (docs/protocol.md). The answer is the bridge's ack, ``{"refused":{...},"stored":[...]}``,
    with the server's clock in ``X-Qrgate-Time-Ms``; 403 ``retired`` or ``no_role`` when
    the phone may not record any more; 400 for a message refused whole."""
    ip = request.client.host if request.client else ""
    body = await request.body()

    def upload():
        if not svc.accounts.allow(f"phone:records:{address_key(ip)}", UPLOADS_PER_MINUTE, 60):
            raise HTTPException(429, "too many uploads from this address")
        return phone.upload(station_id, body)

    answer = await run_in_threadpool(upload)
    headers = {"X-Qrgate-Time-Ms": str(phone.now_ms())}
    if answer.status != 200:
        return JSONResponse({"detail": answer.reason}, answer.status, headers=headers)
    return Response(answer.ack, media_type="application/json", headers=headers)
