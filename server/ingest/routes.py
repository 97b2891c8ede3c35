"""Stations from the web: the one-time enrolment code a venue role makes to bind a new
station, and the fleet page where operators see every station, move one to another
venue or retire it (which also closes its broker account). Each change asks first
(data-confirm) and says what it did on the next page."""

from __future__ import annotations

import datetime as dt
import io
import logging
from typing import Any

import segno
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from pydantic import BaseModel, Field

from qrgate.errors import DriverError, UserError
from server.ingest.enrol import enrol_code_text
from server.phone.devices import phone_labels
from server.venues.access import venue_for
from server.venues.venues import Venue
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in_csrf, operator, operator_form, public_base
from server.web.pages import flash, render

logger = logging.getLogger(__name__)
router = APIRouter()
PAGE_CODE_MINUTES = 10

i18n.register({
    "enrol.minutes": ("Mã có hiệu lực {minutes} phút.", "The code works for {minutes} minutes."),
    "flash.station_retired": ("Đã ngừng trạm: máy chủ từ chối mọi bản ghi trạm gửi từ nay và đã đóng kết nối của trạm.",
                              "Station retired: the server refuses every record it sends from now on and has closed "
                              "its connection."),
    "flash.station_moved": ("Đã chuyển trạm: các lượt quét từ nay được ghi cho địa điểm mới.",
                            "Station moved: its scans from now on count at the new venue."),
    "fleet.reassign_confirm": ("Chuyển trạm này sang địa điểm đã chọn? Các lượt quét từ nay được ghi cho địa điểm đó.",
                               "Move this station to the chosen venue? Its scans from now on count there."),
    "fleet.error.venue": ("Chưa chuyển được: hãy chọn một địa điểm có trong danh sách.",
                          "Not moved: choose a venue from the list."),
    "fleet.broker_failed": ("Trạm {station} đã ngừng: máy chủ từ chối mọi bản ghi của trạm. Nhưng chưa báo được cho "
                            "máy chủ MQTT để xoá tài khoản và đóng kết nối của trạm. Hãy kiểm tra máy chủ MQTT "
                            "(dịch vụ mosquitto) rồi bấm nút dưới đây.",
                            "Station {station} is retired: the server refuses its records. But the MQTT broker "
                            "could not be told to delete its account and close its connection. Check the broker "
                            "(the mosquitto service), then press the button below."),
    "fleet.broker_again": ("Báo lại cho máy chủ MQTT", "Tell the broker again"),
    "fleet.clock.synced": ("Đã đồng bộ", "Synchronised"),
    "fleet.clock.unsynced": ("Chưa đồng bộ: giờ quét có thể lệch", "Not synchronised: scan times may be off"),
    "fleet.clock.unknown": ("Chưa rõ", "Unknown"),
    "fleet.never": ("Chưa kết nối lần nào", "Never connected"),
    "fleet.no_fault": ("Không", "None"),
    "fleet.fault.storage": ("Bộ nhớ (thẻ nhớ đầy hoặc hỏng)", "Storage (full or failing)"),
    "fleet.fault.camera": ("Camera không hoạt động", "Camera not working"),
    "fleet.fault.scanner": ("Đầu đọc mã không hoạt động", "Scanner not working"),
    "fleet.fault.clock": ("Đồng hồ", "Clock"),
    "fleet.actions": ("Thao tác", "Actions"),
    "fleet.move_to": ("Chuyển sang", "Move to"),
    "fleet.self_note": ("Khai báo qua mã QR địa điểm (tự khai báo trên điện thoại) đang dùng ở {count} địa điểm. "
                        "Đó không phải trạm quét nên không có trong danh sách này, không cần ngừng hay chuyển.",
                        "Self check-in through the venue's QR poster is used at {count} venues. It is not a station, "
                        "so it is not listed here and needs no retiring or moving."),
    "fleet.explain": ("Trạm báo trạng thái mỗi phút. Mất kết nối: không nhận được tin của trạm quá 3 phút. "
                      "Chờ gửi: số lượt quét trạm còn giữ, chưa gửi được lên máy chủ.",
                      "Stations report every minute. Offline: nothing heard for over 3 minutes. Backlog: scans the "
                      "station still holds, not yet sent to the server."),
})


class EnrolCodeBody(BaseModel):
    minutes: float = Field(10, ge=1, le=60, description="how long the code works")


@router.post("/venues/{venue_id}/enrol-code", response_class=HTMLResponse, include_in_schema=False)
def enrol_code_page(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in_csrf)):
    venue, _ = venue_for(svc, who, venue_id, "stations.enrol")
    code, expires = _make_enrol_code(svc, request, who, venue, PAGE_CODE_MINUTES)
    buffer = io.BytesIO()
    segno.make_qr(code, error="m").save(buffer, kind="svg", scale=6, border=4, xmldecl=False)
    return render(request, who, "enrol_code.html", venue=venue, qr_svg=buffer.getvalue().decode("ascii"),
                  expires_text=dt.datetime.fromtimestamp(expires, svc.tz).strftime("%H:%M"),
                  minutes=PAGE_CODE_MINUTES)


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
    # "15 phút" in the venue's history, never "15.0".
    shown = int(minutes) if float(minutes).is_integer() else round(minutes, 1)
    svc.audit.record("qrgate.station.enrol_code", account=who.account, ip=who.ip, venue_id=venue.id, minutes=shown)
    return enrol_code_text(public_base(request), token), svc.clock() + minutes * 60


def _fleet_rows(svc: Services) -> list[dict]:
    rows = svc.fleet.rows(int(svc.clock() * 1000))
    phones = phone_labels(svc.storage.sql, [r["station_id"] for r in rows])  # "Điện thoại số 3", not phone-3
    for r in rows:
        r["phone"] = phones.get(r["station_id"], {}).get("number", 0)
        r["state"] = "retired" if r["status"] != "active" else ("online" if r["online"] else "offline")
        r["seen_text"] = (dt.datetime.fromtimestamp(r["last_seen_ms"] / 1000, svc.tz).strftime("%d/%m/%Y %H:%M")
                          if r["last_seen_ms"] else "")
    return rows


def _fleet_page(svc: Services, request: Request, who: Visitor, status_code: int = 200, **context: Any) -> Response:
    releases = getattr(request.app.state, "releases", None)  # server/releases: each station's last update
    updates = releases.station_updates() if releases is not None else {}
    return render(request, who, "fleet.html", status_code, rows=_fleet_rows(svc), venues=svc.fleet.venue_choices(),
                  self_checkin_venues=svc.fleet.self_checkin_venues(), updates=updates,
                  releases_served=releases is not None, **context)


@router.get("/fleet", response_class=HTMLResponse, include_in_schema=False)
def fleet_page(svc: Svc, request: Request, who: Visitor = Depends(operator)):
    return _fleet_page(svc, request, who)


@router.get("/api/fleet", tags=["stations"])
def api_fleet(svc: Svc, who: Visitor = Depends(operator)):
    """Every station: venue, online, backlog, clock, firmware, fault, last seen (operators).
    A venue's self check-in source is not a station and is not listed."""
    return {"stations": _fleet_rows(svc)}


def _station_or_404(svc: Services, station_id: str):
    info = svc.storage.station(station_id)
    if info is None or svc.fleet.is_self_checkin(station_id):
        raise HTTPException(404)
    return info


@router.post("/fleet/{station_id}/retire", include_in_schema=False)
def fleet_retire(svc: Svc, request: Request, station_id: str, checked=Depends(operator_form)):
    who, _ = checked
    info = _station_or_404(svc, station_id)
    if info.status != "retired":  # else again: the broker is told again
        svc.fleet.retire(station_id)
        svc.audit.record("qrgate.station.retired", account=who.account, ip=who.ip, station=station_id)
    if svc.broker_files is not None:
        try:
            # Deleting the account also closes the station's open connection.
            svc.broker_files.remove_user(station_id)
        except DriverError as exc:
            logger.error("station %s is retired, but the broker could not be told: %s", station_id, exc)
            return _fleet_page(svc, request, who, 503, broker_failed=station_id)
    return flash(request, RedirectResponse("/fleet", 303), "flash.station_retired")


@router.post("/fleet/{station_id}/reassign", include_in_schema=False)
def fleet_reassign(svc: Svc, request: Request, station_id: str, checked=Depends(operator_form)):
    who, form = checked
    _station_or_404(svc, station_id)
    try:
        venue_id = int(str(form.get("venue_id", ""))[:20])
        svc.fleet.reassign(station_id, venue_id)
    except (ValueError, UserError):
        return _fleet_page(svc, request, who, 400, error="fleet.error.venue")
    svc.audit.record("qrgate.station.reassigned", account=who.account, ip=who.ip, station=station_id, venue=venue_id)
    return flash(request, RedirectResponse("/fleet", 303), "flash.station_moved")
