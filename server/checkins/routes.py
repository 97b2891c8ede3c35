"""Web pages and JSON API of the scan history (F15): ``/history`` (every venue the
visitor may see, or the several or one of them chosen, or an area),
``/venues/{id}/checkins`` (one venue) and ``/api/history``.

Who sees what (docs/history.md, server/checkins/scope.py): venue members see their
venues' check-ins masked; health officers see the check-ins of venues inside their areas
in full, and every page holding such rows is written to the audit trail
(``qrgate.checkins.unmasked.read``); operators see every venue's check-ins, masked.
Masked means masked through search too, and searches by a whole id number over masked
rows are audited and limited per account (server/checkins/query.py). Anything outside
what a visitor may see answers 404, so venue ids reveal nothing.

Health officers' areas and contact tracing are server/checkins/trace_routes.py.
"""

from __future__ import annotations

import orjson
from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, Response

from server.checkins import history_table
from server.checkins.history import HistoryError
from server.checkins.query import ID_SEARCHES_PER_HOUR, answer, history_params, keep_query, read_history, venue_numbers
from server.checkins.scope import Scope, scope_of
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, logged_in
from server.web.pages import render

router = APIRouter()

i18n.register({
    "nav.history": ("Lịch sử quét", "Scan history"),
    "nav.area": ("Khu vực của tôi", "My areas"),
    "hist.title": ("Lịch sử quét", "Scan history"),
    "hist.venue_title": ("Lịch sử quét: {venue}", "Scan history: {venue}"),
    "hist.venue": ("Địa điểm", "Venue"),
    "hist.venues": ("Địa điểm (chọn một, vài hoặc để trống: tất cả)", "Venues (one, several, or none: all)"),
    "hist.venues_chosen": ("{n} địa điểm đã chọn", "{n} venues chosen"),
    "hist.all_venues": ("Tất cả địa điểm", "All venues"),
    "hist.venue_number": ("Mã địa điểm (số)", "Venue number"),
    "hist.area": ("Khu vực", "Area"),
    "hist.from": ("Từ ngày", "From"),
    "hist.to": ("Đến ngày", "To"),
    "hist.search": ("Tìm (số giấy tờ, 3-8 số cuối, hoặc họ tên)", "Search (id number, its last 3-8 digits, or name)"),
    "hist.order": ("Sắp xếp", "Order"),
    "hist.newest": ("Mới nhất trước", "Newest first"),
    "hist.oldest": ("Cũ nhất trước", "Oldest first"),
    "hist.view": ("Hiển thị", "Show"),
    "hist.rows": ("Từng lượt quét", "Each scan"),
    "hist.visits": ("Lượt có mặt (vào - ra)", "Visits (in - out)"),
    "hist.apply": ("Lọc", "Filter"),
    "hist.newer": ("← Mới hơn", "← Newer"),
    "hist.older": ("Cũ hơn →", "Older →"),
    "hist.earlier": ("← Cũ hơn", "← Older"),
    "hist.later": ("Mới hơn →", "Newer →"),
    "hist.none": ("Không có lượt quét nào khớp.", "No scans match."),
    "hist.no_venues": ("Bạn chưa xem được địa điểm nào.", "There are no venues you may see yet."),
    "hist.masked": ("Thông tin cá nhân đã được che bớt.", "Personal data is masked."),
    "hist.unmasked": ("Bạn đang xem đầy đủ thông tin cá nhân của {rows} dòng thuộc khu vực của bạn. Việc xem này được ghi vào nhật ký.",
                      "You are reading {rows} rows of your areas with personal data in full. This reading is recorded."),
    "hist.search_partial": ("Tìm kiếm dừng sau một phần dữ liệu; bấm \"{more}\" để tìm tiếp.",
                            "The search stopped after part of the data; press \"{more}\" to search further."),
    "hist.start": ("Vào", "In"),
    "hist.end": ("Ra", "Out"),
    "hist.minutes": ("Thời lượng (phút)", "Minutes"),
    "hist.estimated": ("ước tính", "estimated"),
    "hist.trace": ("Truy vết", "Trace"),
})


def history_page(svc: Services, request: Request, who: Visitor, *, fixed_venue: int | None, venues: list[str],
                 area: str, date_from: str, date_to: str, q: str, order: str, after: str | None,
                 before: str | None, view: str, limit: int):
    title_venue = svc.venues.get(fixed_venue) if fixed_venue is not None else None
    filters = {"venues": [], "area": area, "from": date_from, "to": date_to, "q": q, "order": order,
               "view": view, "limit": limit}
    try:
        chosen = [fixed_venue] if fixed_venue is not None else venue_numbers(venues)
        filters["venues"] = chosen
        data = read_history(svc, who, venues=chosen, area=area, date_from=date_from, date_to=date_to, q=q,
                            order=order, after=after, before=before, view=view, limit=limit,
                            venue_names=fixed_venue is None)
    except HistoryError as exc:
        scope = scope_of(svc, who, names=fixed_venue is None)
        status = getattr(exc, "status", 422)  # 429: too many searches by id number
        error = i18n.translate(who.lang, exc.key, n=ID_SEARCHES_PER_HOUR)
        return render(request, who, "history_list.html", status, error=error, filters=filters,
                      items=[], table=table_of(view, [], who.lang, scope), scope=scope, prev_cursor=None,
                      next_cursor=None, unmasked_rows=0, partial_search=False, title_venue=title_venue,
                      base_path=request.url.path, keep_query=keep_query)
    return render(request, who, "history_list.html", error="", filters=filters, title_venue=title_venue,
                  base_path=request.url.path, keep_query=keep_query,
                  table=table_of(view, data["items"], who.lang, data["scope"]), **data)


def table_of(view: str, items: list[dict], lang: str, scope: Scope):
    write = history_table.visit_rows if view == "visits" else history_table.scan_rows
    return write(items, lang, officer=bool(scope.areas))


@router.get("/history", response_class=HTMLResponse, include_in_schema=False)
async def history_all(svc: Svc, request: Request, who: Visitor = Depends(logged_in),
                      venue: list[str] = history_params["venue"], area: str = history_params["area"],
                      date_from: str = history_params["date_from"], date_to: str = history_params["date_to"],
                      q: str = history_params["q"], order: str = history_params["order"],
                      after: str | None = history_params["after"], before: str | None = history_params["before"],
                      view: str = history_params["view"], limit: int = history_params["limit"]):
    return await answer(svc, who, bool(q) or view != "rows", history_page, svc, request, who, fixed_venue=None,
                        venues=venue, area=area, date_from=date_from, date_to=date_to,
                        q=q, order=order, after=after, before=before, view=view, limit=limit)


@router.get("/venues/{venue_id}/checkins", response_class=HTMLResponse, include_in_schema=False)
async def history_venue(svc: Svc, request: Request, venue_id: int, who: Visitor = Depends(logged_in),
                        date_from: str = history_params["date_from"], date_to: str = history_params["date_to"],
                        q: str = history_params["q"], order: str = history_params["order"],
                        after: str | None = history_params["after"], before: str | None = history_params["before"],
                        view: str = history_params["view"], limit: int = history_params["limit"]):
    if venue_id > 2**62:
        raise HTTPException(404)
    return await answer(svc, who, bool(q) or view != "rows", history_page, svc, request, who,
                        fixed_venue=venue_id, venues=[], area="", date_from=date_from, date_to=date_to, q=q,
                        order=order, after=after, before=before, view=view, limit=limit)


@router.get("/api/history", tags=["history"])
async def api_history(svc: Svc, who: Visitor = Depends(logged_in), venue: list[str] = history_params["venue"],
                      area: str = history_params["area"], date_from: str = history_params["date_from"],
                      date_to: str = history_params["date_to"], q: str = history_params["q"],
                      order: str = history_params["order"], after: str | None = history_params["after"],
                      before: str | None = history_params["before"], view: str = history_params["view"],
                      limit: int = history_params["limit"]):
    """Check-ins (or visits) of the venues you may see (``venue`` repeated: only those),
    one keyset page at a time.

    Rows are masked except at venues inside your health-officer areas (``full``: true);
    a page holding such rows is written to the audit trail. ``next_cursor`` goes on
    to older rows (for ``order=desc``), ``prev_cursor`` back to newer ones. A search
    matches masked rows only on what their mask shows; a search by a whole id number
    over rows shown masked is audited, at most 20 an hour per account (then 429)."""
    try:
        data = await answer(svc, who, bool(q) or view != "rows", read_history, svc, who,
                            venues=venue_numbers(venue), area=area, date_from=date_from,
                            date_to=date_to, q=q, order=order, after=after, before=before, view=view,
                            limit=limit)
    except HistoryError as exc:
        raise HTTPException(getattr(exc, "status", 422), str(exc)) from None
    # Plain JSON types already: answering directly spares FastAPI's generic encoder,
    # which took half of this endpoint's time; orjson writes the same JSON (UTF-8, no
    # spaces) faster than the standard library behind JSONResponse.
    return Response(orjson.dumps({"rows": data["items"], "next_cursor": data["next_cursor"],
                                  "prev_cursor": data["prev_cursor"], "unmasked_rows": data["unmasked_rows"],
                                  "partial_search": data["partial_search"]}), media_type="application/json")
