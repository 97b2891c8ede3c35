"""Area dashboard pages and JSON: /dashboard (+ /<area code>, /venue/<id>) and
/api/dashboard...; charts drawn on the server as SVG.

Operators see the whole country; a health officer sees the areas they were given and
everything below them, and gets 404 for any other code, as does everyone else.
"""

from __future__ import annotations

import datetime as dt
import logging
import math
from dataclasses import dataclass
from urllib.parse import urlencode

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse

from server.reports.dashboard import (EARLIEST_DAY, MAX_PERIOD_DAYS, DashboardError, Period, UnknownArea,
                                      area_dashboard, area_path, venue_dashboard)
from server.reports.service import report_services
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in
from server.web.pages import render

logger = logging.getLogger(__name__)

PERIOD_CHOICES = (7, 14, 30)
DEFAULT_DAYS = 7
MAX_QUERY_TEXT = 40

i18n.register({
    "nav.dashboard": ("Số liệu khu vực", "Area dashboard"),
    "dash.title": ("Số liệu khu vực", "Area dashboard"),
    "dash.country": ("Cả nước", "Whole country"),
    "dash.your_areas": ("Khu vực bạn phụ trách", "Your areas"),
    "dash.registered": ("Địa điểm đã đăng ký", "Venues registered"),
    "dash.active": ("Địa điểm có lượt quét", "Venues with scans"),
    "dash.scans": ("Lượt quét", "Scans"),
    "dash.per_day": ("Lượt quét theo ngày", "Scans per day"),
    "dash.per_day_desc": ("Tổng {total} lượt quét từ {since} đến {until}; nhiều nhất {max} lượt vào ngày {day}.",
                          "{total} scans from {since} to {until}; the busiest day, {day}, had {max}."),
    "dash.ratio": ("Tỉ lệ địa điểm có lượt quét", "Share of venues with scans"),
    "dash.ratio_desc": ("{active} trên {registered} địa điểm có ít nhất một lượt quét trong khoảng thời gian.",
                        "{active} of {registered} venues had at least one scan in the period."),
    "dash.day": ("Ngày", "Day"),
    "dash.period": ("Khoảng thời gian", "Period"),
    "dash.last_days": ("{n} ngày gần nhất", "Last {n} days"),
    "dash.from": ("Từ ngày", "From"),
    "dash.to": ("Đến ngày", "To"),
    "dash.show": ("Xem", "Show"),
    "dash.period_text": ("Từ {since} đến {until} ({days} ngày)", "{since} to {until} ({days} days)"),
    "dash.tz": ("Ngày tính theo giờ {tz} (UTC{offset}).", "Days are counted in {tz} time (UTC{offset})."),
    "dash.tz_vn": ("Ngày tính theo giờ Việt Nam (UTC{offset}).", "Days are counted in Vietnam time (UTC{offset})."),
    "dash.unknown_area": ("Chưa rõ khu vực", "Area not known"),
    "dash.level.province": ("Tỉnh/thành phố", "Province"),
    "dash.level.district": ("Quận/huyện", "District"),
    "dash.level.ward": ("Xã/phường", "Commune/ward"),
    "dash.legacy": ("Chưa chuyển sang địa giới mới", "Not converted to the new map yet"),
    "dash.legacy_only": ("Khu vực bạn được giao theo địa giới cũ (trước 01/07/2025): hãy nhờ người vận hành chuyển"
                         " sang tỉnh, xã/phường mới.",
                         "Your areas are old codes (before 1 July 2025): ask the operator to convert them."),
    "dash.venue_history": ("Lịch sử quét của địa điểm", "The venue's scan history"),
    "dash.level.venue": ("Địa điểm", "Venue"),
    "dash.more_venues": ("Hiện {shown} trên {total} địa điểm, nhiều lượt quét nhất trước.",
                         "Showing {shown} of {total} venues, busiest first."),
    "dash.no_venues": ("Khu vực này chưa có địa điểm nào.", "No venues in this area yet."),
    "dash.days_with_scans": ("Số ngày có lượt quét", "Days with scans"),
    "dash.venue_title": ("Lượt quét tại địa điểm", "Scans at the venue"),
    "dash.had_scans": ("Có lượt quét", "Had scans"),
    "dash.table": ("Bảng số liệu", "The numbers as a table"),
    "dash.yes": ("Có", "Yes"),
    "dash.no": ("Không", "No"),
    "dash.bad_period": ("Khoảng thời gian không hợp lệ: {detail}", "This period cannot be shown: {detail}"),
})


@dataclass(frozen=True)
class Choice:
    """The period a visitor asked for, as days and as the query that repeats it."""

    since: dt.date
    until: dt.date
    days: int | None  # 7 / 14 / 30 when chosen as "the last n days"

    @property
    def query(self) -> str:
        if self.days is not None:
            return "?" + urlencode({"days": self.days})
        return "?" + urlencode({"from": self.since.isoformat(), "to": self.until.isoformat()})


def parse_period(params, today: dt.date) -> Choice:
    """``days=N`` (the last N days up to today) or ``from``/``to`` (YYYY-MM-DD, both
    included, not after today, at most MAX_PERIOD_DAYS); DashboardError otherwise."""
    def text(name: str) -> str | None:
        value = params.get(name)
        if value is None or value == "":
            return None
        if len(value) > MAX_QUERY_TEXT or not value.isprintable():
            raise DashboardError("số ngày hoặc ngày không hợp lệ")
        return value.strip()

    days, since, until = text("days"), text("from"), text("to")
    if since is None and until is None:
        try:
            n = int(days) if days is not None else DEFAULT_DAYS
        except ValueError:
            raise DashboardError("số ngày phải là số nguyên") from None
        if not 1 <= n <= MAX_PERIOD_DAYS:
            raise DashboardError(f"số ngày từ 1 đến {MAX_PERIOD_DAYS}")
        return Choice(today - dt.timedelta(days=n - 1), today, n)
    try:
        last = dt.date.fromisoformat(until) if until else today
        first = dt.date.fromisoformat(since) if since else last - dt.timedelta(days=DEFAULT_DAYS - 1)
    except ValueError:
        raise DashboardError("hãy chọn ngày trong lịch") from None
    if last > today:
        raise DashboardError("khoảng thời gian không được kết thúc sau hôm nay")
    if first < EARLIEST_DAY:
        raise DashboardError(f"khoảng thời gian không được bắt đầu trước ngày {EARLIEST_DAY:%d/%m/%Y}")
    if last < first:
        raise DashboardError("ngày cuối trước ngày đầu")
    if (last - first).days + 1 > MAX_PERIOD_DAYS:
        raise DashboardError(f"tối đa {MAX_PERIOD_DAYS} ngày")
    return Choice(first, last, None)


# -- charts ----------------------------------------------------------------------------


def _nice_max(value: int) -> int:
    """The axis top: 1, 2 or 5 times a power of ten, at least ``value``."""
    if value <= 1:
        return 1
    power = 10 ** int(math.floor(math.log10(value)))
    for step in (1, 2, 5, 10):
        if step * power >= value:
            return step * power
    return 10 * power


def day_chart(days: list[dict]) -> dict:
    """Geometry of the scans-per-day bar chart (viewBox units)."""
    width, height, left, bottom, top = 720, 250, 70, 32, 20
    plot_w, plot_h = width - left - 8, height - bottom - top
    top_value = _nice_max(max((d["scans"] for d in days), default=0))
    step = plot_w / max(len(days), 1)
    gap = min(step * 0.15, 4)
    every = max(1, math.ceil(len(days) / 8))
    bars = []
    for i, d in enumerate(days):
        h = plot_h * d["scans"] / top_value
        day = dt.date.fromisoformat(d["day"])
        bars.append({
            "x": round(left + i * step + gap / 2, 2), "w": round(max(step - gap, 0.5), 2),
            "y": round(top + plot_h - h, 2), "h": round(h, 2), "scans": d["scans"],
            "label": day.strftime("%d/%m") if i % every == 0 else "", "day_text": day.strftime("%d/%m/%Y"),
            "label_x": round(left + i * step + step / 2, 2),
        })
    ticks = [{"value": v, "y": round(top + plot_h - plot_h * v / top_value, 2)}
             for v in (0, top_value // 2, top_value) if v or top_value]
    return {"width": width, "height": height, "left": left, "right": width - 8, "base": top + plot_h,
            "label_y": height - 10, "bars": bars, "ticks": ticks}


def ratio_chart(rows: list[dict]) -> dict:
    """Geometry of the venues-with-scans bars: one row per child area."""
    # Narrow units, so that on a phone the text is drawn at a readable size.
    width, row_h, label_w, value_w = 440, 26, 170, 100
    bar_w = width - label_w - value_w
    out = []
    for i, r in enumerate(rows):
        share = r["venues_with_scans"] / r["venues_registered"] if r["venues_registered"] else 0.0
        out.append({"y": i * row_h + 4, "text_y": i * row_h + 18, "name": r["name"], "bar_x": label_w,
                    "bar_w": bar_w, "fill_w": round(bar_w * min(share, 1.0), 2), "value_x": label_w + bar_w + 8,
                    "active": r["venues_with_scans"], "registered": r["venues_registered"],
                    "percent": round(100 * share)})
    return {"width": width, "height": max(len(rows), 1) * row_h + 8, "rows": out, "bar_h": 16}


def _offset_text(seconds: int) -> str:
    sign = "+" if seconds >= 0 else "-"
    seconds = abs(seconds)
    return f"{sign}{seconds // 3600:02d}:{seconds % 3600 // 60:02d}"


# -- routes ----------------------------------------------------------------------------


class _BadPeriod(Exception):
    """A period the visitor asked for that cannot be shown (answered with 400)."""


router = APIRouter(dependencies=[Depends(report_services)])  # the roll-up, made ready once per app


def today(svc: Services) -> dt.date:
    return dt.datetime.fromtimestamp(svc.clock(), svc.tz).date()


def officer_codes(svc: Services, who: Visitor) -> set[str] | None:
    """None: sees everything (operator); else the officer's area codes on the 2025 map
    (404 if not an officer). An old-code grant gives no dashboard: its digits may name
    another place on the new map."""
    if who.account.is_operator:
        return None
    areas = svc.officers.areas_of(who.account.id)
    if not areas:
        raise HTTPException(404)
    return {a.code for a in areas if not a.legacy}


def check_area(svc: Services, who: Visitor, code: str) -> set[str] | None:
    codes = officer_codes(svc, who)
    if len(code) > MAX_QUERY_TEXT:
        raise HTTPException(404)
    try:
        path = area_path(svc.areas, code)
    except UnknownArea:
        raise HTTPException(404) from None
    if codes is not None and not codes & {a.code for _, a in path}:
        raise HTTPException(404)
    return codes


def venue_id_of(text: str) -> int:
    if not text.isascii() or not text.isdigit() or len(text) > 12:
        raise HTTPException(404)
    return int(text)


def period_of(svc: Services, request: Request) -> Choice:
    try:
        return parse_period(request.query_params, today(svc))
    except DashboardError as exc:
        raise _BadPeriod(str(exc)) from None


def area_data(svc: Services, code: str | None, choice: Choice) -> dict:
    try:
        return area_dashboard(svc.storage, svc.areas, code, choice.since, choice.until, svc.tz)
    except UnknownArea:
        raise HTTPException(404) from None
    except DashboardError as exc:
        raise _BadPeriod(str(exc)) from None


def home_data(svc: Services, who: Visitor, choice: Choice) -> dict:
    """Operators: the country. An officer: their one area, or a list of their areas."""
    codes = officer_codes(svc, who)
    if codes is None:
        return area_data(svc, None, choice)
    if not codes:
        return {"areas": [], "period": Period(choice.since, choice.until).as_dict(), "legacy_only": True}
    if len(codes) == 1:
        return area_data(svc, next(iter(codes)), choice)
    areas = [area_data(svc, code, choice) for code in sorted(codes)]
    return {"areas": [{**a["area"], **a["totals"]} for a in areas], "period": areas[0]["period"]}


def venue_data(svc: Services, who: Visitor, venue_id: str, choice: Choice) -> dict:
    vid = venue_id_of(venue_id)
    venue = svc.venues.get(vid)
    if venue is None:
        raise HTTPException(404)
    codes = officer_codes(svc, who)
    if codes is not None and not svc.officers.covers(who.account.id, venue):
        raise HTTPException(404)
    try:
        return venue_dashboard(svc.storage, svc.areas, vid, choice.since, choice.until, svc.tz)
    except DashboardError as exc:
        raise _BadPeriod(str(exc)) from None


def bad_period(request: Request, who: Visitor, detail: str, api: bool):
    if api:
        return JSONResponse({"detail": detail}, 400)
    return render(request, who, "dashboard_error.html", 400, detail=detail, here=request.url.path)


def page(request: Request, svc: Services, who: Visitor, data: dict, choice: Choice) -> HTMLResponse:
    if "areas" in data:
        return render(request, who, "dashboard_home.html", data=data, choice=choice,
                      choices=PERIOD_CHOICES, here=request.url.path, today=today(svc))
    codes = officer_codes(svc, who)
    crumbs = [{"name": None, "href": "/dashboard" + choice.query if codes is None else None}]
    seen_own = codes is None
    for step in data["path"]:
        seen_own = seen_own or step["code"] in codes
        crumbs.append({"name": step["name"], "href": f"/dashboard/{step['code']}{choice.query}" if seen_own else None})
    if data.get("venue"):
        template = "dashboard_venue.html"
        extra = {}
    else:
        template = "dashboard.html"
        areas_rows = [c for c in data["children"] if data["child_level"] != "venue"]
        extra = {"ratio": ratio_chart(areas_rows), "total_ratio": ratio_chart([{**data["totals"], "name": ""}])}
    peak = max(data["days"], key=lambda d: d["scans"])
    return render(request, who, template, data=data, choice=choice, crumbs=crumbs,
                  chart=day_chart(data["days"]), peak=peak, offset_text=_offset_text(data["utc_offset_s"]),
                  **extra, choices=PERIOD_CHOICES, here=request.url.path, today=today(svc))


def run(request: Request, svc: Services, who: Visitor, api: bool, make):
    try:
        choice = period_of(svc, request)
        data = make(choice)
    except _BadPeriod as exc:
        return bad_period(request, who, str(exc), api)
    return data if api else page(request, svc, who, data, choice)


@router.get("/dashboard", response_class=HTMLResponse, include_in_schema=False)
def dashboard_home(request: Request, svc: Svc, who: Visitor = Depends(logged_in)):
    officer_codes(svc, who)
    return run(request, svc, who, False, lambda choice: home_data(svc, who, choice))


@router.get("/dashboard/venue/{venue_id}", response_class=HTMLResponse, include_in_schema=False)
def dashboard_venue(request: Request, venue_id: str, svc: Svc, who: Visitor = Depends(logged_in)):
    officer_codes(svc, who)
    return run(request, svc, who, False, lambda choice: venue_data(svc, who, venue_id, choice))


@router.get("/dashboard/{code}", response_class=HTMLResponse, include_in_schema=False)
def dashboard_area(request: Request, code: str, svc: Svc, who: Visitor = Depends(logged_in)):
    check_area(svc, who, code)
    return run(request, svc, who, False, lambda choice: area_data(svc, code, choice))


@router.get("/api/dashboard", tags=["dashboards"])
def api_dashboard_home(request: Request, svc: Svc, who: Visitor = Depends(logged_in)):
    """Operators: the whole country by province. A health officer: their area, or
    ``areas`` with each one's totals when they have several. Period: ``days`` (1-366,
    default 7, ending today) or ``from`` and ``to`` (YYYY-MM-DD, included)."""
    officer_codes(svc, who)
    return run(request, svc, who, True, lambda choice: home_data(svc, who, choice))


@router.get("/api/dashboard/venue/{venue_id}", tags=["dashboards"])
def api_dashboard_venue(request: Request, venue_id: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """One venue's scans per day (operators, health officers of its area)."""
    officer_codes(svc, who)
    return run(request, svc, who, True, lambda choice: venue_data(svc, who, venue_id, choice))


@router.get("/api/dashboard/{code}", tags=["dashboards"])
def api_dashboard_area(request: Request, code: str, svc: Svc, who: Visitor = Depends(logged_in)):
    """A province or commune/ward: its children (communes/wards, or venues) with
    venues registered, venues with scans and scans, and scans per local day."""
    check_area(svc, who, code)
    return run(request, svc, who, True, lambda choice: area_data(svc, code, choice))
