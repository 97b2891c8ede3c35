"""A history request as a visitor may make it: the filters the pages and the API share,
the limits per account, and one page read within the visitor's scope.

Masked means masked through search too: a last-digits or name search matches a masked
row only on what its mask shows (server/checkins/history.py), so guessing the hidden
digits or letters one at a time teaches nothing. A search by a whole id number answers
whether that person was at the venues searched; when any of them is masked to the
visitor, each such search is audited (``qrgate.checkins.person.searched``) and an
account may make ID_SEARCHES_PER_HOUR of them an hour (429 after that). Every page
holding rows read in full is audited (``qrgate.checkins.unmasked.read``).
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING
from urllib.parse import urlencode

from fastapi import HTTPException, Query
from starlette.concurrency import run_in_threadpool

from server.audit import register_actions
from server.checkins.history import (HistoryError, MAX_SEARCH, cursor_at, parse_search, query_history,
                                     quick_reads, visits_for_rows)
from server.checkins.scope import scope_of
from server.checkins.tracing import DAY_MS
from server.checkins.views import present_checkin, present_visit
from server.web import i18n

if TYPE_CHECKING:
    from server.web.deps import Services, Visitor

MAX_PAGE = 200
# Searches by a whole id number over rows the account sees masked, per account per hour:
# each says whether one person was there, so a few thousand would read a hidden number
# back by guessing; an hour's worth is a working day's questions at a gate.
ID_SEARCHES_PER_HOUR = 20
# Trace forms opened on a check-in (each shows that person in full), per account per hour.
TRACE_LOOKUPS_PER_HOUR = 60
LIMIT_WINDOW_S = 3600
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_DAY_VN = re.compile(r"(\d{1,2})/(\d{1,2})/(\d{4})", re.ASCII)

register_actions("qrgate.checkins.person.searched")
i18n.register({}, history={
    "qrgate.checkins.person.searched": ("Tìm theo số giấy tờ: {rows} lượt ra vào",
                                        "Searched by id number: {rows} check-ins"),
})


class SearchLimited(HistoryError):
    """Too many searches by id number this hour: answer 429."""

    status = 429


def id_search_allowed(svc: Services, who: Visitor) -> bool:
    """Count one search by id number over masked rows; False past ID_SEARCHES_PER_HOUR."""
    return svc.accounts.allow(f"history:id-search:{who.account.id}", ID_SEARCHES_PER_HOUR, LIMIT_WINDOW_S)


def trace_lookup_allowed(svc: Services, who: Visitor) -> bool:
    """Count one trace form opened on a check-in; False past TRACE_LOOKUPS_PER_HOUR."""
    return svc.accounts.allow(f"trace:checkin:{who.account.id}", TRACE_LOOKUPS_PER_HOUR, LIMIT_WINDOW_S)


MAX_VENUES = 200  # venues named in one filter

i18n.register({
    "hist.err.from": ("Ngày bắt đầu không hợp lệ: hãy chọn ngày trong lịch, ví dụ 21/09/2026.",
                      "The first day is not a valid date: pick it in the calendar."),
    "hist.err.to": ("Ngày kết thúc không hợp lệ: hãy chọn ngày trong lịch, ví dụ 21/09/2026.",
                    "The last day is not a valid date: pick it in the calendar."),
    "hist.err.before": ("Ngày kết thúc phải từ ngày bắt đầu trở đi.", "The last day is before the first."),
    "hist.err.cursor": ("Liên kết trang này không còn dùng được: hãy lọc lại.",
                        "This page link no longer works: filter again."),
    "hist.err.search_long": ("Nội dung tìm kiếm quá dài.", "The search is too long."),
    "hist.err.venue": ("Hãy chọn địa điểm trong danh sách.", "Choose the venues from the list."),
    "hist.err.limited": ("Bạn đã tìm theo số giấy tờ {n} lần trong một giờ qua: hãy thử lại sau.",
                         "You searched by id number {n} times in the last hour: try again later."),
    "hist.err.other": ("Bộ lọc không hợp lệ: hãy kiểm tra lại các ô.", "The filter is not valid: check the fields."),
})

# The filters of the history pages and of /api/history, as query parameters.
history_params = dict(
    venue=Query([], max_length=MAX_VENUES,
                description="venue numbers (ones you may see), the parameter repeated for several;"
                            " none: all of them"),
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


def keep_query(values: dict, **extra: str) -> str:
    """The query string of a pager link: the filters that are set (a list: the parameter
    repeated), plus the cursor."""
    return urlencode({**{k: v for k, v in values.items() if v not in (None, "", [])}, **extra}, doseq=True)


def venue_numbers(values: list[str]) -> list[int]:
    """The ``venue`` parameters as venue ids (HistoryError for anything else)."""
    out = []
    for value in values[:MAX_VENUES]:
        if not (value.isascii() and value.isdigit() and len(value) <= 18):
            raise HistoryError("venue must be a venue number", "hist.err.venue")
        out.append(int(value))
    return sorted(set(out))


def day_start_ms(text: str, what: str, tz) -> int:
    """Midnight of a day given as 2026-09-21 (the date field) or 21/09/2026 (typed)."""
    match = _DAY_VN.fullmatch(text)
    if match:
        text = f"{match.group(3)}-{int(match.group(2)):02d}-{int(match.group(1)):02d}"
    if not _DATE.fullmatch(text):
        raise HistoryError(f"{what} must be a date like 2026-09-21", f"hist.err.{what}")
    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise HistoryError(f"{what} is not a real date", f"hist.err.{what}") from None
    return int(dt.datetime.combine(day, dt.time(), tz).timestamp() * 1000)


def read_history(svc: Services, who: Visitor, *, venues: list[int] | None, area: str, date_from: str,
                 date_to: str, q: str, order: str, after: str | None, before: str | None, view: str, limit: int,
                 stay_minutes: int = 60, venue_names: bool = False) -> dict:
    """One page as a visitor may see it (404 outside what they see, HistoryError for a
    bad filter); audits the rows read in full. ``venues``: one, several or (empty or
    None) all the venues the visitor may see, each checked. ``venue_names``: the scope
    lists the venues' names, for the filter of the page of all one's venues."""
    storage, tz = svc.storage, svc.tz
    scope = scope_of(svc, who, names=venue_names)
    ids = scope.venue_ids
    if area:
        if area not in {a.code for a in scope.areas}:
            raise HTTPException(404)
        ids = svc.officers.venue_ids(who.account.id, area)
    if venues:
        for venue in venues:
            if not scope.may_see(venue) or (ids is not None and venue not in ids) or svc.venues.get(venue) is None:
                raise HTTPException(404)
        ids = list(venues)
    since = day_start_ms(date_from, "from", tz) if date_from else None
    until = day_start_ms(date_to, "to", tz) + DAY_MS if date_to else None
    if since is not None and until is not None and until <= since:
        raise HistoryError("the last day is before the first", "hist.err.before")
    if after and before:
        raise HistoryError("give either after or before, not both")
    # A whole id number over venues seen masked: audited, and limited per account.
    by_id = bool(q) and parse_search(q).mode == "person" and \
        (ids is None or not scope.full_ids.issuperset(ids))
    if by_id and not id_search_allowed(svc, who):
        raise SearchLimited(f"at most {ID_SEARCHES_PER_HOUR} searches by id number an hour; try again later",
                            "hist.err.limited")
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
    asked = {"venue": venues[0] if venues and len(venues) == 1 else None, "area": area, "from": date_from,
             "to": date_to, "search": q, "order": order, "view": view}
    if venues and len(venues) > 1:
        asked["venues"] = list(venues)
    one = venues[0] if venues and len(venues) == 1 else None
    if unmasked:
        svc.audit.record(
            "qrgate.checkins.unmasked.read", account=who.account, ip=who.ip, venue_id=one,
            rows=len(unmasked), venues=sorted({i["venue_id"] for i in unmasked}), filter=asked)
    if by_id:
        svc.audit.record(
            "qrgate.checkins.person.searched", account=who.account, ip=who.ip, venue_id=one,
            rows=len(rows), venues=sorted({r["venue_id"] for r in rows}), filter=asked)
    partial = bool(q) and len(rows) < limit and page.next_cursor is not None
    return {"items": items, "prev_cursor": newer, "next_cursor": older, "unmasked_rows": len(unmasked),
            "partial_search": partial, "scope": scope}


async def answer(svc: Services, who: Visitor, slow: bool, fn, *args, **kwargs):
    """Run a page's work on the event loop, or in the thread pool when it may wait.

    A keyset page of masked rows from SQLite reads about one page through an index
    (under a millisecond at 10 million check-ins) and writes nothing: on the loop it
    spares the hop to a pool thread, and under 50 concurrent requests the pool's
    threads taking turns with Python's lock cost more than the page itself
    (docs/performance.md). Everything that may wait goes to the pool, so it holds up
    nobody: a search (it may examine 10,000 rows), the visits view, a health officer's
    page (its full rows are written to the audit trail, which may wait for the bridge's
    commit), and PostgreSQL (a query may wait for a pooled connection)."""
    if slow or not quick_reads(svc.storage) or svc.officers.is_officer(who.account.id):
        return await run_in_threadpool(fn, *args, **kwargs)
    return fn(*args, **kwargs)
