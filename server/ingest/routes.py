"""Stations from the web: the one-time enrolment code a venue role makes to bind a new
station, and the fleet page where operators see every station, move one to another
venue or retire it (which also closes its broker account)."""

from __future__ import annotations

import datetime as dt
import io
from collections.abc import Callable
from typing import Any

import segno
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from qrgate.errors import DriverError, UserError
from server.ingest.enrol import enrol_code_text
from server.venues.access import venue_for
from server.venues.venues import Venue
from server.web.deps import Services, Svc, Visitor, logged_in_csrf, operator, operator_form, public_base
from server.web.pages import render

router = APIRouter()


class EnrolCodeBody(BaseModel):
    minutes: float = Field(10, ge=1, le=60, description="how long the code works")


@router.post("/venues/{venue_id}/enrol-code", response_class=HTMLResponse, include_in_schema=False)
def enrol_code_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "stations.enrol")
    code, expires = _make_enrol_code(svc, request, who, venue, 10)
    buffer = io.BytesIO()
    segno.make_qr(code, error="m").save(buffer, kind="svg", scale=6, border=4, xmldecl=False)
    return render(request, who, "enrol_code.html", venue=venue, qr_svg=buffer.getvalue().decode("ascii"),
                  expires_text=dt.datetime.fromtimestamp(expires, svc.tz).strftime("%H:%M"))


@router.post("/api/venues/{venue_id}/enrol-code", tags=["stations"], status_code=201)
def api_enrol_code(svc: Svc, request: Request, venue_id: int, body: EnrolCodeBody,
                   who: Visitor = Depends(logged_in_csrf)):
    """A single-use code (QR text) that binds a new station to this venue."""
    venue, _ = venue_for(svc, who, venue_id, "stations.enrol")
    code, expires = _make_enrol_code(svc, request, who, venue, body.minutes)
    return {"code": code, "expires_at": dt.datetime.fromtimestamp(expires, svc.tz).isoformat(timespec="seconds")}


def _make_enrol_code(svc: Services, request: Request, who: Visitor, venue: Venue, minutes: float) -> tuple[str, float]:
    try:
        token = svc.enrolment.create_token(venue.id, minutes=minutes, created_by=who.account.phone)
    except UserError as exc:
        raise HTTPException(400, str(exc)) from None
    svc.audit.record("qrgate.station.enrol_code", account=who.account, ip=who.ip, venue_id=venue.id,
                     minutes=minutes)
    return enrol_code_text(public_base(request), token), svc.clock() + minutes * 60


def _fleet_rows(svc: Services, ) -> list[dict]:
    rows = svc.fleet.rows(int(svc.clock() * 1000))
    for r in rows:
        r["state"] = "retired" if r["status"] != "active" else ("online" if r["online"] else "offline")
        r["seen_text"] = (dt.datetime.fromtimestamp(r["last_seen_ms"] / 1000, svc.tz).strftime("%d/%m/%Y %H:%M")
                          if r["last_seen_ms"] else "–")
    return rows


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
def fleet_page(svc: Svc, request: Request, who: Visitor = Depends(operator)):
    return render(request, who, "fleet.html", rows=_fleet_rows(svc), venues=svc.fleet.venue_choices())


@router.get("/api/fleet", tags=["stations"])
def api_fleet(svc: Svc, who: Visitor = Depends(operator)):
    """Every station: venue, online, backlog, clock, firmware, fault, last seen (operators)."""
    return {"stations": _fleet_rows(svc)}


def _fleet_action(svc: Services, request: Request, who: Visitor, station_id: str, action: Callable[[], None], code: str,
                  **data: Any) -> Response:
    try:
        action()
    except UserError as exc:
        raise HTTPException(400, str(exc)) from None
    svc.audit.record(code, account=who.account, ip=who.ip, station=station_id, **data)
    return RedirectResponse("/fleet", 303)


@router.post("/fleet/{station_id}/retire", include_in_schema=False)
def fleet_retire(svc: Svc, request: Request, station_id: str, checked=Depends(operator_form)):
    who, _ = checked

    def retire():
        info = svc.storage.station(station_id)
        if info is None or info.status != "retired":  # again: the broker is told again
            svc.fleet.retire(station_id)
        if svc.broker_files is not None:
            try:
                # Deleting the account also closes the station's open connection.
                svc.broker_files.remove_user(station_id)
            except DriverError as exc:
                raise HTTPException(503, f"{station_id} is retired and its records are refused, but the "
                                    f"broker could not be told ({exc}): retire it again") from None

    return _fleet_action(svc, request, who, station_id, retire, "qrgate.station.retired")


@router.post("/fleet/{station_id}/reassign", include_in_schema=False)
def fleet_reassign(svc: Svc, request: Request, station_id: str, checked=Depends(operator_form)):
    who, form = checked
    try:
        venue_id = int(form.get("venue_id", ""))
    except ValueError:
        raise HTTPException(400, "venue_id") from None
    return _fleet_action(svc, request, who, station_id, lambda: svc.fleet.reassign(station_id, venue_id),
                         "qrgate.station.reassigned", venue=venue_id)
