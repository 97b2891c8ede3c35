# Web pages and JSON API of the scan history, health officers' areas and contact tracing.
"""Scan history (F15) and contact tracing (F16) on the web.

Who sees what (docs/history.md):

* venue members (owner, manager, gate controller) see their venues' check-ins masked;
* health officers see the check-ins of venues inside their areas in full, and every
  page holding such rows is written to the audit trail
  (``qrgate.checkins.unmasked.read``); venues outside their areas they see only as a
  member would, or not at all;
* operators see every venue's check-ins, masked: they run the system, they are not
  health officers (an operator who is also made an officer sees their area in full).

Masked means masked through search too: a last-digits or name search matches a masked
row only on what its mask shows (server/history.py), so guessing the hidden digits or
letters one at a time teaches nothing. A search by a whole id number answers whether
that person was at the venues searched; when any of them is masked to the visitor, each
such search is audited (``qrgate.checkins.person.searched``) and an account may make
ID_SEARCHES_PER_HOUR of them an hour (429 after that).

Tracing is for health officers only and only inside their areas; each run (and each
CSV export of one) is audited as ``qrgate.trace.run``; opening the trace form on a
check-in shows that person in full, so it is audited as a full read
(``qrgate.checkins.unmasked.read``) and limited to TRACE_LOOKUPS_PER_HOUR an hour per
account. Anything outside what a visitor may see answers 404, so venue and check-in ids
reveal nothing.
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Literal
from urllib.parse import urlencode

import orjson
from fastapi import APIRouter, Depends, Form, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qrgate import persons
from server import history_table, i18n
from server.audit import register_actions
from server.checkin_views import INVALID_TIME, local_time, present_checkin, present_visit
from server.history import HistoryError, MAX_SEARCH, cursor_at, parse_search, query_history, visits_for_rows
from server.permissions import allowed
from server.storage.sql import SQLITE, in_list
from server.storage.postgres import tracer_for
from server.tracing import DAY_MS

MAX_PAGE = 200
MAX_TRACE_DAYS = 62
VENUE_SELECT_MAX = 1000  # more venues than this: the filter takes a venue number instead
CARD_KINDS = ("cccd", "bhyt", "national", "pass")
# Searches by a whole id number over rows the account sees masked, per account per hour:
# each says whether one person was there, so a few thousand would read a hidden number
# back by guessing; an hour's worth is a working day's questions at a gate.
ID_SEARCHES_PER_HOUR = 20
# Trace forms opened on a check-in (each shows that person in full), per account per hour.
TRACE_LOOKUPS_PER_HOUR = 60
LIMIT_WINDOW_S = 3600
_ID_TEXT = re.compile(r"[0-9A-Z*]{3,20}", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)

register_actions("qrgate.checkins.person.searched")

i18n.register({
    "nav.history": ("Lịch sử quét", "Scan history"),
    "nav.area": ("Khu vực của tôi", "My areas"),
    "hist.title": ("Lịch sử quét", "Scan history"),
    "hist.venue_title": ("Lịch sử quét: {venue}", "Scan history: {venue}"),
    "hist.venue": ("Địa điểm", "Venue"),
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
    "hist.error": ("Bộ lọc không hợp lệ: {detail}", "The filter is not valid: {detail}"),
    "area.title": ("Khu vực phụ trách", "My areas"),
    "area.intro": ("Bạn là cán bộ y tế của các khu vực dưới đây: bạn xem đầy đủ thông tin các lượt quét tại địa điểm trong khu vực và truy vết tiếp xúc. Mọi lần xem đều được ghi nhật ký.",
                   "You are a health officer for the areas below: you read scans at their venues in full and trace contacts. Every reading is recorded."),
    "area.venues": ("{count} địa điểm", "{count} venues"),
    "area.history": ("Lịch sử quét của khu vực", "The area's scan history"),
    "trace.title": ("Truy vết tiếp xúc", "Contact tracing"),
    "trace.from_row": ("Người cần truy vết", "Person to trace"),
    "trace.kind": ("Loại giấy tờ", "Card"),
    "trace.kind.cccd": ("CCCD/CMND", "Citizen ID card"),
    "trace.kind.bhyt": ("Thẻ BHYT", "Health-insurance card"),
    "trace.kind.national": ("Mã QR cá nhân (VNeID)", "National personal QR"),
    "trace.kind.pass": ("Thẻ QR của hệ thống", "QR gate pass"),
    "trace.id": ("Số giấy tờ", "ID number"),
    "trace.name": ("Họ tên (chỉ với mã QR cá nhân có số bị che)", "Name (only for a national QR with a masked id)"),
    "trace.birth": ("Ngày sinh YYYY-MM-DD (như trên)", "Birth date YYYY-MM-DD (likewise)"),
    "trace.margin": ("Khoảng đệm (phút)", "Margin (minutes)"),
    "trace.stay": ("Thời gian ở mặc định khi thiếu lượt ra (phút)", "Default stay without an exit scan (minutes)"),
    "trace.run": ("Truy vết", "Trace"),
    "trace.csv": ("Tải kết quả (CSV)", "Download (CSV)"),
    "trace.visits": ("Các lượt có mặt", "Visits"),
    "trace.contacts": ("Người tiếp xúc (nhiều thời gian chung nhất trước)", "Contacts (most time together first)"),
    "trace.no_contacts": ("Không có người tiếp xúc.", "No contacts."),
    "trace.no_visits": ("Không có lượt quét nào của người này tại khu vực của bạn trong thời gian đã chọn.",
                        "This person has no scans in your areas in this period."),
    "trace.elsewhere": ("{count} lượt có mặt tại địa điểm ngoài khu vực của bạn không được hiển thị; hãy liên hệ cán bộ y tế khu vực đó.",
                        "{count} visits at venues outside your areas are not shown; contact those areas' health officers."),
    "trace.rank": ("Hạng", "Rank"),
    "trace.overlap": ("Thời gian chung (phút)", "Minutes together"),
    "trace.first": ("Lần đầu tiếp xúc", "First contact"),
    "trace.again": ("Truy vết người này", "Trace this person"),
    "trace.error": ("Không truy vết được: {detail}", "Cannot trace: {detail}"),
    "trace.limited": ("Bạn đã mở quá {count} lượt truy vết từ lượt quét trong một giờ; hãy thử lại sau.",
                      "You opened more than {count} traces from check-ins in an hour; try again later."),
}, history={
    "qrgate.checkins.person.searched": ("Tìm theo số giấy tờ: {rows} lượt ra vào",
                                        "Searched by id number: {rows} check-ins"),
})


class SearchLimited(HistoryError):
    """Too many searches by id number this hour: answer 429."""

    status = 429


@dataclass
class Scope:
    """What one visitor may read."""

    venue_ids: list[int] | None            # None: every venue (operators)
    full_ids: frozenset[int]               # venues read in full: inside the visitor's officer areas
    venues: list[tuple[int, str]]          # (id, name) for the filter; empty when too many to list
    areas: list = field(default_factory=list)  # officers.OfficerArea

    def may_see(self, venue_id: int) -> bool:
        return self.venue_ids is None or venue_id in self.venue_ids


class TraceBody(BaseModel):
    checkin_id: int | None = Field(None, ge=1, le=2**62, description="trace the person of this check-in")
    kind: Literal["cccd", "bhyt", "national", "pass"] | None = Field(None, description="card, with id_number")
    id_number: str = Field("", max_length=40, examples=["024083123451"])
    name: str = Field("", max_length=200, description="only for a national QR whose id is masked")
    birth: str = Field("", max_length=10, description="only for a national QR whose id is masked")
    date_from: dt.date = Field(alias="from", examples=["2026-09-08"])
    date_to: dt.date = Field(alias="to", examples=["2026-09-21"])
    margin_minutes: int = Field(15, ge=0, le=240)
    stay_minutes: int = Field(60, ge=5, le=1440)


def keep_query(values: dict, **extra: str) -> str:
    """The query string of a pager link: the filters that are set, plus the cursor."""
    return urlencode({**{k: v for k, v in values.items() if v not in (None, "")}, **extra})


class TraceInputError(ValueError):
    """A trace request that cannot be run as asked; the message says why."""


def make_router(kit) -> APIRouter:
    router = APIRouter()
    services = kit.services
    storage = kit.storage
    db = storage.sql
    tz = kit.tz

    # -- who sees what ----------------------------------------------------------------

    def officer_venue_ids(account_id: int, area_code: str | None = None) -> list[int]:
        return services.officers.venue_ids(account_id, area_code)

    def scope_of(who, names: bool = True) -> Scope:
        """What ``who`` may read; ``names``: with the venues' names for the filter (only
        the page of all one's venues shows it; a venue's page and the API do without)."""
        account = who.account
        areas = services.officers.areas_of(account.id)
        full = officer_venue_ids(account.id) if areas else []
        if account.is_operator:
            listed = []
            if names and db.value("SELECT count(*) FROM venues", default=0) <= VENUE_SELECT_MAX:
                listed = by_name(db.rows("SELECT id, name FROM venues"))
            return Scope(None, frozenset(full), listed, areas)
        ids = {v.id for v, role in services.venues.for_account(account.id) if allowed(role, "checkins.view")}
        ids |= set(full)
        ordered = sorted(ids)
        listed = []
        if names and ordered and len(ordered) <= VENUE_SELECT_MAX:
            condition, params = in_list(db, "id", ordered)
            listed = by_name(db.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
        return Scope(ordered, frozenset(full), listed, areas)

    def by_name(rows) -> list[tuple[int, str]]:
        # Sorted here: code point order on both engines, not PostgreSQL's collation.
        return sorted(((r[0], r[1]) for r in rows), key=lambda r: (r[1], r[0]))

    def require_officer(who) -> Scope:
        scope = scope_of(who)
        if not scope.areas:
            raise HTTPException(404)  # not an officer: the page does not exist for them
        return scope

    # -- history --------------------------------------------------------------------------

    def day_start_ms(text: str, what: str) -> int:
        if not _DATE.fullmatch(text):
            raise HistoryError(f"{what} must be a date like 2026-09-21")
        try:
            day = dt.date.fromisoformat(text)
        except ValueError:
            raise HistoryError(f"{what} is not a real date") from None
        return int(dt.datetime.combine(day, dt.time(), tz).timestamp() * 1000)

    def read_history(who, *, venue: int | None, area: str, date_from: str, date_to: str, q: str, order: str,
                     after: str | None, before: str | None, view: str, limit: int, stay_minutes: int = 60,
                     venue_names: bool = False) -> dict:
        """One page as a visitor may see it (404 outside what they see, HistoryError for
        a bad filter); audits the rows read in full. ``venue_names``: the scope lists
        the venues' names, for the filter of the page of all one's venues."""
        scope = scope_of(who, names=venue_names)
        ids = scope.venue_ids
        if area:
            if area not in {a.code for a in scope.areas}:
                raise HTTPException(404)
            ids = officer_venue_ids(who.account.id, area)
        if venue is not None:
            if not scope.may_see(venue) or (ids is not None and venue not in ids) or \
                    services.venues.get(venue) is None:
                raise HTTPException(404)
            ids = [venue]
        since = day_start_ms(date_from, "from") if date_from else None
        until = day_start_ms(date_to, "to") + DAY_MS if date_to else None
        if since is not None and until is not None and until <= since:
            raise HistoryError("the last day is before the first")
        if after and before:
            raise HistoryError("give either after or before, not both")
        # A whole id number over venues seen masked: audited, and limited per account.
        by_id = bool(q) and parse_search(q).mode == "person" and \
            (ids is None or not scope.full_ids.issuperset(ids))
        if by_id and not services.accounts.allow(f"history:id-search:{who.account.id}", ID_SEARCHES_PER_HOUR,
                                                 LIMIT_WINDOW_S):
            raise SearchLimited(f"at most {ID_SEARCHES_PER_HOUR} searches by id number an hour; try again later")
        if before:
            backwards = "asc" if order == "desc" else "desc"
            page = query_history(storage, venue_ids=ids, since_ms=since, until_ms=until, search=q, order=backwards,
                                 cursor=before, limit=limit, matched_in_full=scope.full_ids)
            rows = list(reversed(page.rows))
            newer, older = page.next_cursor, (cursor_at(rows[-1]) if rows else before)
        else:
            page = query_history(storage, venue_ids=ids, since_ms=since, until_ms=until, search=q, order=order,
                                 cursor=after, limit=limit, matched_in_full=scope.full_ids)
            rows = page.rows
            newer, older = ((cursor_at(rows[0]) if rows else after) if after else None), page.next_cursor
        if view == "visits":
            items = [present_visit(v, tz, v["venue_id"] in scope.full_ids)
                     for v in visits_for_rows(storage, rows, stay_minutes * 60)]
        else:
            items = [present_checkin(r, tz, r["venue_id"] in scope.full_ids) for r in rows]
        unmasked = [i for i in items if i["full"]]
        asked = {"venue": venue, "area": area, "from": date_from, "to": date_to, "search": q, "order": order,
                 "view": view}
        if unmasked:
            services.audit.record(
                "qrgate.checkins.unmasked.read", account=who.account, ip=who.ip, venue_id=venue,
                rows=len(unmasked), venues=sorted({i["venue_id"] for i in unmasked}), filter=asked)
        if by_id:
            services.audit.record(
                "qrgate.checkins.person.searched", account=who.account, ip=who.ip, venue_id=venue,
                rows=len(rows), venues=sorted({r["venue_id"] for r in rows}), filter=asked)
        partial = bool(q) and len(rows) < limit and page.next_cursor is not None
        return {"items": items, "prev_cursor": newer, "next_cursor": older, "unmasked_rows": len(unmasked),
                "partial_search": partial, "scope": scope}

    def history_page(request: Request, who, *, fixed_venue: int | None, venue: int | None, area: str,
                     date_from: str, date_to: str, q: str, order: str, after: str | None, before: str | None,
                     view: str, limit: int):
        venue = fixed_venue if fixed_venue is not None else venue
        filters = {"venue": venue, "area": area, "from": date_from, "to": date_to, "q": q, "order": order,
                   "view": view, "limit": limit}
        title_venue = services.venues.get(fixed_venue) if fixed_venue is not None else None
        try:
            data = read_history(who, venue=venue, area=area, date_from=date_from, date_to=date_to, q=q, order=order,
                                after=after, before=before, view=view, limit=limit,
                                venue_names=fixed_venue is None)
        except HistoryError as exc:
            scope = scope_of(who, names=fixed_venue is None)
            status = getattr(exc, "status", 422)  # 429: too many searches by id number
            return kit.render(request, who, "history_list.html", status, error=str(exc), filters=filters,
                              items=[], table=table_of(view, [], who.lang, scope), scope=scope, prev_cursor=None,
                              next_cursor=None, unmasked_rows=0, partial_search=False, title_venue=title_venue,
                              base_path=request.url.path, keep_query=keep_query)
        return kit.render(request, who, "history_list.html", error="", filters=filters, title_venue=title_venue,
                          base_path=request.url.path, keep_query=keep_query,
                          table=table_of(view, data["items"], who.lang, data["scope"]), **data)

    def table_of(view: str, items: list[dict], lang: str, scope: Scope):
        write = history_table.visit_rows if view == "visits" else history_table.scan_rows
        return write(items, lang, officer=bool(scope.areas))

    history_params = dict(
        venue=Query("", max_length=18, pattern=r"^\d*$",
                    description="one venue's number (one you may see); empty: all of them"),
        area=Query("", max_length=10, description="a health officer's area code: the venues inside it"),
        date_from=Query("", alias="from", max_length=10, description="first day, YYYY-MM-DD, server time zone"),
        date_to=Query("", alias="to", max_length=10, description="last day, YYYY-MM-DD (included)"),
        q=Query("", max_length=MAX_SEARCH, description="id number, its last 3-8 digits, or the start of name words"),
        order=Query("desc", pattern="^(desc|asc)$"),
        after=Query(None, max_length=64, description="next_cursor of the previous page"),
        before=Query(None, max_length=64, description="prev_cursor of the page after"),
        view=Query("rows", pattern="^(rows|visits)$", description="each scan, or visits paired in - out"),
        limit=Query(50, ge=1, le=MAX_PAGE),
    )

    async def answer(who, slow: bool, fn, *args, **kwargs):
        """Run a page's work on the event loop, or in the thread pool when it may wait.

        A keyset page of masked rows from SQLite reads about one page through an index
        (under a millisecond at 10 million check-ins) and writes nothing: on the loop it
        spares the hop to a pool thread, and under 50 concurrent requests the pool's
        threads taking turns with Python's lock cost more than the page itself
        (docs/performance.md). Everything that may wait goes to the pool, so it holds up
        nobody: a search (it may examine 10,000 rows), the visits view, a health
        officer's page (its full rows are written to the audit trail, which may wait for
        the bridge's commit), and PostgreSQL (a query may wait for a pooled connection)."""
        if slow or storage.sql.dialect != SQLITE or services.officers.is_officer(who.account.id):
            return await run_in_threadpool(fn, *args, **kwargs)
        return fn(*args, **kwargs)

    @router.get("/history", response_class=HTMLResponse, include_in_schema=False)
    async def history_all(request: Request, who=Depends(kit.logged_in), venue: str = history_params["venue"],
                          area: str = history_params["area"], date_from: str = history_params["date_from"],
                          date_to: str = history_params["date_to"], q: str = history_params["q"],
                          order: str = history_params["order"], after: str | None = history_params["after"],
                          before: str | None = history_params["before"], view: str = history_params["view"],
                          limit: int = history_params["limit"]):
        return await answer(who, bool(q) or view != "rows", history_page, request, who, fixed_venue=None,
                            venue=int(venue) if venue else None, area=area, date_from=date_from, date_to=date_to,
                            q=q, order=order, after=after, before=before, view=view, limit=limit)

    @router.get("/venues/{venue_id}/checkins", response_class=HTMLResponse, include_in_schema=False)
    async def history_venue(request: Request, venue_id: int, who=Depends(kit.logged_in),
                            date_from: str = history_params["date_from"], date_to: str = history_params["date_to"],
                            q: str = history_params["q"], order: str = history_params["order"],
                            after: str | None = history_params["after"], before: str | None = history_params["before"],
                            view: str = history_params["view"], limit: int = history_params["limit"]):
        if venue_id > 2**62:
            raise HTTPException(404)
        return await answer(who, bool(q) or view != "rows", history_page, request, who, fixed_venue=venue_id,
                            venue=None, area="", date_from=date_from, date_to=date_to, q=q, order=order,
                            after=after, before=before, view=view, limit=limit)

    @router.get("/api/history", tags=["history"])
    async def api_history(who=Depends(kit.logged_in), venue: str = history_params["venue"],
                          area: str = history_params["area"], date_from: str = history_params["date_from"],
                          date_to: str = history_params["date_to"], q: str = history_params["q"],
                          order: str = history_params["order"], after: str | None = history_params["after"],
                          before: str | None = history_params["before"], view: str = history_params["view"],
                          limit: int = history_params["limit"]):
        """Check-ins (or visits) of the venues you may see, one keyset page at a time.

        Rows are masked except at venues inside your health-officer areas (``full``: true);
        a page holding such rows is written to the audit trail. ``next_cursor`` goes on
        to older rows (for ``order=desc``), ``prev_cursor`` back to newer ones. A search
        matches masked rows only on what their mask shows; a search by a whole id number
        over rows shown masked is audited, at most 20 an hour per account (then 429)."""
        try:
            data = await answer(who, bool(q) or view != "rows", read_history, who,
                                venue=int(venue) if venue else None, area=area, date_from=date_from,
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

    # -- officers: areas ------------------------------------------------------------------------

    @router.get("/area", response_class=HTMLResponse, include_in_schema=False)
    def area_home(request: Request, who=Depends(kit.logged_in)):
        scope = require_officer(who)
        areas = [{"code": a.code, "name": a.name, "level": a.level,
                  "venues": len(officer_venue_ids(who.account.id, a.code))} for a in scope.areas]
        return kit.render(request, who, "area_home.html", areas=areas)

    @router.get("/api/area", tags=["tracing"])
    def api_area(who=Depends(kit.logged_in)):
        """Your health-officer areas and how many venues each holds (404: not an officer)."""
        scope = require_officer(who)
        return {"areas": [{"code": a.code, "name": a.name, "level": a.level,
                           "venues": len(officer_venue_ids(who.account.id, a.code))} for a in scope.areas]}

    # -- tracing -------------------------------------------------------------------------------

    def person_from_checkin(scope: Scope, checkin_id: int) -> str:
        row = db.one("SELECT person_key, venue_id FROM checkins WHERE id = ?", [checkin_id])
        if row is None or row[1] not in scope.full_ids:
            raise HTTPException(404)
        return row[0]

    def person_from_card(kind: str | None, id_number: str, name: str, birth: str) -> str:
        if kind not in CARD_KINDS:
            raise TraceInputError("choose the card kind")
        compact = id_number.replace(" ", "").replace(".", "").upper()
        if not _ID_TEXT.fullmatch(compact):
            raise TraceInputError("the id number must be 3 to 20 letters, digits or *")
        if kind == "national" and not (compact.isdigit() and len(compact) == 12) and not (name.strip() and birth):
            raise TraceInputError("a national QR with a masked id needs the name and birth date as scanned; "
                                  "or start the trace from one of the person's check-ins")
        return persons.person_key(kind, compact, name, birth.strip())

    def run_trace(who, scope: Scope, person_key: str, date_from: dt.date, date_to: dt.date, margin: int,
                  stay: int, purpose: str) -> dict:
        if date_to < date_from:
            raise TraceInputError("the last day is before the first")
        if (date_to - date_from).days + 1 > MAX_TRACE_DAYS:
            raise TraceInputError(f"trace at most {MAX_TRACE_DAYS} days at once")
        since = int(dt.datetime.combine(date_from, dt.time(), tz).timestamp() * 1000)
        until = int(dt.datetime.combine(date_to, dt.time(), tz).timestamp() * 1000) + DAY_MS
        result = tracer_for(storage).trace(person_key, since, until, margin_s=margin * 60, default_stay_s=stay * 60,
                                       venue_ids=scope.full_ids)
        if not result["visits"]:
            # Someone with no scan in the officer's areas is not their case: say nothing of elsewhere.
            result["visits_elsewhere"] = 0
        services.audit.record("qrgate.trace.run", account=who.account, ip=who.ip, person=person_key,
                              contacts=len(result["contacts"]), visits=len(result["visits"]),
                              **{"from": date_from.isoformat(), "to": date_to.isoformat()},
                              margin_min=margin, stay_min=stay, output=purpose)
        return present_trace(scope, person_key, result)

    def present_trace(scope: Scope, person_key: str, result: dict) -> dict:
        venue_ids = sorted({v["venue_id"] for v in result["visits"]})
        names = {}
        if venue_ids:
            condition, params = in_list(db, "id", venue_ids)
            names = dict(db.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
        me = None
        if scope.full_ids:
            # Unary + keeps the planner on the person index: a person has few rows, a venue many.
            condition, params = in_list(db, "+venue_id", sorted(scope.full_ids))
            me = db.one(f"SELECT id, kind, id_number, name, birth FROM checkins WHERE person_key = ? AND {condition}"
                        " ORDER BY wall_ms DESC LIMIT 1", [person_key, *params])

        def when(ms: int) -> str:
            at = local_time(ms, tz)
            return at.strftime("%d/%m/%Y %H:%M") if at else INVALID_TIME

        visits = [{**v, "venue": names.get(v["venue_id"], ""), "start_text": when(v["start_ms"]),
                   "end_text": when(v["end_ms"]), "minutes": round((v["end_ms"] - v["start_ms"]) / 60000)}
                  for v in result["visits"]]
        contacts = [{**c, "rank": i + 1, "venue_names": [names.get(v, "") for v in c["venues"]],
                     "first_text": when(c["first_contact_ms"])} for i, c in enumerate(result["contacts"])]
        person = ({"checkin_id": me[0], "kind": me[1], "id_number": me[2], "name": me[3], "birth": me[4]}
                  if me else None)
        return {"person_key": person_key, "person": person, "from_ms": result["from_ms"], "to_ms": result["to_ms"],
                "margin_minutes": result["margin_s"] // 60, "stay_minutes": result["default_stay_s"] // 60,
                "visits": visits, "visits_elsewhere": result["visits_elsewhere"], "contacts": contacts}

    def trace_form_defaults() -> dict:
        today = dt.datetime.fromtimestamp(kit.clock(), tz).date()
        return {"checkin": "", "kind": "cccd", "id_number": "", "name": "", "birth": "",
                "from": (today - dt.timedelta(days=13)).isoformat(), "to": today.isoformat(), "margin": 15,
                "stay": 60}

    @router.get("/trace", response_class=HTMLResponse, include_in_schema=False)
    def trace_page(request: Request, who=Depends(kit.logged_in),
                   checkin: int | None = Query(None, ge=1, le=2**62)):
        scope = require_officer(who)
        form = trace_form_defaults()
        person = None
        if checkin is not None:
            person_from_checkin(scope, checkin)  # 404 outside the officer's areas
            # The form shows the person in full: a full read like a history page, and
            # check-in ids are sequential, so paging through them is limited too.
            if not services.accounts.allow(f"trace:checkin:{who.account.id}", TRACE_LOOKUPS_PER_HOUR,
                                           LIMIT_WINDOW_S):
                error = i18n.translate(who.lang, "trace.limited", count=TRACE_LOOKUPS_PER_HOUR)
                return kit.render(request, who, "trace.html", 429, form=form, person=None, result=None, error=error)
            row = db.one("SELECT kind, id_number, name, birth, venue_id FROM checkins WHERE id = ?", [checkin])
            services.audit.record("qrgate.checkins.unmasked.read", account=who.account, ip=who.ip, venue_id=row[4],
                                  rows=1, venues=[row[4]], checkin=checkin, page="trace")
            form["checkin"] = str(checkin)
            person = {"kind": row[0], "id_number": row[1], "name": row[2], "birth": row[3]}
        return kit.render(request, who, "trace.html", form=form, person=person, result=None, error="")

    def trace_from_form(who, scope: Scope, form: dict, purpose: str) -> dict:
        if form["checkin"]:
            if not form["checkin"].isdigit() or len(form["checkin"]) > 18:
                raise HTTPException(404)
            person_key = person_from_checkin(scope, int(form["checkin"]))
        else:
            person_key = person_from_card(form["kind"], form["id_number"], form["name"], form["birth"])
        days = []
        for key in ("from", "to"):
            if not _DATE.fullmatch(form[key]):
                raise TraceInputError("dates must look like 2026-09-21")
            try:
                days.append(dt.date.fromisoformat(form[key]))
            except ValueError:
                raise TraceInputError("that date does not exist") from None
        try:
            margin, stay = int(form["margin"]), int(form["stay"])
        except ValueError:
            raise TraceInputError("margin and stay are whole minutes") from None
        if not (0 <= margin <= 240 and 5 <= stay <= 1440):
            raise TraceInputError("margin is 0 to 240 minutes, stay 5 to 1440")
        return run_trace(who, scope, person_key, days[0], days[1], margin, stay, purpose)

    def trace_form_values(checkin: str, kind: str, id_number: str, name: str, birth: str, date_from: str,
                          date_to: str, margin: str, stay: str) -> dict:
        return {"checkin": checkin.strip(), "kind": kind, "id_number": id_number, "name": name, "birth": birth,
                "from": date_from.strip(), "to": date_to.strip(), "margin": margin.strip(), "stay": stay.strip()}

    form_fields = dict(
        checkin=Form("", max_length=20), kind=Form("", max_length=20), id_number=Form("", max_length=40),
        name=Form("", max_length=200), birth=Form("", max_length=10), date_from=Form("", alias="from", max_length=10),
        date_to=Form("", alias="to", max_length=10), margin=Form("15", max_length=4), stay=Form("60", max_length=5),
    )

    @router.post("/trace", response_class=HTMLResponse, include_in_schema=False)
    def trace_submit(request: Request, who=Depends(kit.logged_in_csrf), checkin: str = form_fields["checkin"],
                     kind: str = form_fields["kind"], id_number: str = form_fields["id_number"],
                     name: str = form_fields["name"], birth: str = form_fields["birth"],
                     date_from: str = form_fields["date_from"], date_to: str = form_fields["date_to"],
                     margin: str = form_fields["margin"], stay: str = form_fields["stay"]):
        scope = require_officer(who)
        form = trace_form_values(checkin, kind, id_number, name, birth, date_from, date_to, margin, stay)
        try:
            result = trace_from_form(who, scope, form, "page")
        except TraceInputError as exc:
            return kit.render(request, who, "trace.html", 422, form=form, person=None, result=None, error=str(exc))
        return kit.render(request, who, "trace.html", form=form, person=result["person"], result=result, error="")

    @router.post("/trace.csv", include_in_schema=False)
    def trace_csv(request: Request, who=Depends(kit.logged_in_csrf), checkin: str = form_fields["checkin"],
                  kind: str = form_fields["kind"], id_number: str = form_fields["id_number"],
                  name: str = form_fields["name"], birth: str = form_fields["birth"],
                  date_from: str = form_fields["date_from"], date_to: str = form_fields["date_to"],
                  margin: str = form_fields["margin"], stay: str = form_fields["stay"]):
        scope = require_officer(who)
        form = trace_form_values(checkin, kind, id_number, name, birth, date_from, date_to, margin, stay)
        try:
            result = trace_from_form(who, scope, form, "csv")
        except TraceInputError as exc:
            raise HTTPException(422, str(exc)) from None
        return trace_csv_response(result)

    def trace_csv_response(result: dict) -> StreamingResponse:
        from server.export import csv_stream

        columns = ("rank", "name", "id_number", "kind", "birth", "minutes_together", "venues", "first_contact")
        rows = ([c["rank"], c["name"], c["id_number"], c["kind"], c["birth"], c["overlap_minutes"],
                 "; ".join(c["venue_names"]), c["first_text"]] for c in result["contacts"])
        day = dt.datetime.fromtimestamp(result["from_ms"] / 1000, tz).strftime("%Y%m%d")
        return StreamingResponse(csv_stream(columns, rows), media_type="text/csv; charset=utf-8",
                                 headers={"Content-Disposition": f'attachment; filename="trace-{day}.csv"'})

    @router.post("/api/trace", tags=["tracing"])
    def api_trace(body: TraceBody, who=Depends(kit.logged_in_csrf),
                  format: Literal["json", "csv"] = Query("json", description="csv: the ranked contacts as CSV")):
        """Trace one person (by one of their check-ins, or by card kind and id number) over
        at most 62 days inside your health-officer areas: their visits and everyone whose
        presence overlapped, most time together first. Audited; 404 for non-officers."""
        scope = require_officer(who)
        try:
            if body.checkin_id is not None:
                person_key = person_from_checkin(scope, body.checkin_id)
            else:
                person_key = person_from_card(body.kind, body.id_number, body.name, body.birth)
            result = run_trace(who, scope, person_key, body.date_from, body.date_to, body.margin_minutes,
                               body.stay_minutes, format)
        except TraceInputError as exc:
            return JSONResponse({"detail": str(exc)}, 422)
        if format == "csv":
            return trace_csv_response(result)
        return result

    return router
