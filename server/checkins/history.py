"""Scan history: keyset-paged check-in queries over a set of venues, search, and visits;
the query layer under the history pages and the JSON API.

Rows come out raw (unmasked) and untouched: masking by role and escaping belong to the
code that shows them (server/checkins/views.py, the templates, the CSV writer).

Paging is by keyset on ``(wall_ms, id)``, never OFFSET: a cursor names the last row of
a page and the next page starts strictly after it, so a page costs the same at row
ten million as at row ten, and rows sharing one timestamp are neither lost nor repeated.

How a page is read depends on the venues asked for, so that every plan walks an index
in the page's order and stops after about one page:

* all venues (operators): the ``wall_ms`` index;
* up to ``FEW_VENUES`` venues: one ``(venue_id, wall_ms)`` index range per venue, each
  limited to one page, merged by the database (a UNION ALL of the ranges);
* more venues (a health officer's province): the same index probed for every venue of
  the list within a time window that grows until the page is full, so a dense list
  reads a few minutes of data and a sparse list a few wider windows.

Search by an id number goes through the ``(person_key, wall_ms)`` index (the same person
on another card, see qrgate/persons.py). Searching by the last digits of an id or by a
name cannot use an index; it scans at most ``SEARCH_BUDGET`` rows of the filter per
page and then returns a cursor to continue from where it stopped, so a rare match
costs one bounded request per step instead of an unbounded one.

A visitor who sees a row masked must learn nothing through search that the mask hides:
searching ``0451``, ``1451``, ... one digit at a time would otherwise read a hidden id
back. So a last-digits or name search matches such a row only on what its mask shows
(the last three characters of the id; the family name and the first letter of every
other word), and only the rows a visitor sees in full match on their full fields. Which
rows those are is the caller's to say (``matched_in_full``). A whole id number matches a
person exactly whoever searches: it says whether that person was there, no more (the web
audits and limits such searches by masked viewers, server/checkins/query.py).
"""

from __future__ import annotations

import base64
import binascii
import json
import re
import unicodedata
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from qrgate import persons
from qrgate.masking import mask_id_number, mask_person_name
from server.phone.devices import phone_labels
from server.storage.sql import SQLITE, code_point_order, in_list
from server.checkins.tracing import MAX_VISIT_MS, Visit, visits_from_checkins

MAX_LIMIT = 500
MAX_SEARCH = 100  # characters; a name or an id is far shorter
FEW_VENUES = 24
SEARCH_BUDGET = 10_000  # rows examined per page by a name or last-digits search
SEARCH_CHUNK = 2_000
FIRST_WINDOW_MS = 10 * 60_000

COLUMNS = ("id", "station_id", "seq", "venue_id", "direction", "kind", "person_key", "id_number", "name", "birth",
           "sex", "wall_ms", "clock_synced", "time_corrected", "received_ms")
_SCAN_COLUMNS = ("id", "wall_ms", "venue_id", "id_number", "name")
# A cursor or a bound is any BIGINT a row may hold, whatever a station once sent.
WALL_MIN, WALL_MAX = -2**63, 2**63 - 1
_ORDERS = {"desc": ("DESC", "<"), "asc": ("ASC", ">")}
_ID_CODE = re.compile(r"[A-Z]{2}\d{13}|\d{9,12}", re.ASCII)
_BHYT_CODE = re.compile(r"[A-Z]{2}\d{13}|\d{10}", re.ASCII)
_DIGITS = re.compile(r"\d{3,8}", re.ASCII)


class HistoryError(ValueError):
    """A query the caller got wrong (bad cursor, order, limit or search): answer 422.
    ``key`` names the words a page shows for it (``hist.err.*``); ``str()`` is English,
    for the API."""

    def __init__(self, message: str, key: str = "hist.err.other"):
        super().__init__(message)
        self.key = key


@dataclass
class Page:
    rows: list[dict]          # raw (unmasked) rows, newest first for order="desc"
    next_cursor: str | None   # opaque keyset cursor, None on the last page


# -- cursors ---------------------------------------------------------------------------

def cursor_at(row: dict) -> str:
    """The cursor of a position just past ``row`` (in whichever order is read)."""
    text = json.dumps([int(row["wall_ms"]), int(row["id"])], separators=(",", ":"))
    return base64.urlsafe_b64encode(text.encode("ascii")).decode("ascii").rstrip("=")


def decode_cursor(cursor: str) -> tuple[int, int]:
    """(wall_ms, id) of a cursor; HistoryError for anything this module did not make."""
    if len(cursor) > 64:
        raise HistoryError("cursor is not one this server made", "hist.err.cursor")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        wall, row_id = json.loads(raw.decode("ascii"))
    except (binascii.Error, UnicodeDecodeError, ValueError, TypeError):
        raise HistoryError("cursor is not one this server made", "hist.err.cursor") from None
    if type(wall) is not int or type(row_id) is not int or not (0 <= row_id < 2**63 and WALL_MIN <= wall <= WALL_MAX):
        raise HistoryError("cursor is not one this server made", "hist.err.cursor")
    return wall, row_id


# -- search ------------------------------------------------------------------------------

def fold(text: str) -> str:
    """Text for comparing names: no accents (đ counts as d), no case, single spaces."""
    text = text.replace("đ", "d").replace("Đ", "D")
    stripped = "".join(c for c in unicodedata.normalize("NFD", text) if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


@dataclass(frozen=True)
class Search:
    """What a search box's text asks for."""

    mode: str  # "" (nothing), "person" (an id number), "tail" (last digits), "name"
    keys: tuple[str, ...] = ()       # person keys, for "person"
    prefixes: tuple[str, ...] = ()   # person-key prefixes, for "person"
    tail: str = ""
    words: tuple[str, ...] = ()

    def matches(self, row: dict, full: bool = True) -> bool:
        """Whether ``row`` matches a last-digits or name search: on its full fields when
        ``full``, else only on what its mask shows (so ``0451`` never matches
        ``*********451``, nor ``nguyen va`` ``Nguyễn V** L**``)."""
        if self.mode == "tail":
            id_number = row["id_number"] or ""
            return (id_number if full else mask_id_number(id_number)).endswith(self.tail)
        if self.mode == "name":
            name = row["name"] or ""
            name_words = fold(name if full else mask_person_name(name)).split()
            return all(any(w.startswith(q) for w in name_words) for q in self.words)
        return True


def parse_search(text: str) -> Search:
    """Read a search box: a whole id number (CCCD, CMND, BHYT code or its 10-digit number),
    3 to 8 last digits of one, or words that start words of a name."""
    if len(text) > MAX_SEARCH:
        raise HistoryError(f"search is longer than {MAX_SEARCH} characters", "hist.err.search_long")
    cleaned = "".join(c for c in text if unicodedata.category(c)[0] != "C").strip()
    if not cleaned:
        return Search("")
    compact = cleaned.replace(" ", "").replace(".", "").upper()
    if _ID_CODE.fullmatch(compact):
        # Whatever card the id was read from, the same rule as at the gate names the person.
        keys = {persons.person_key(kind, compact, "", "") for kind in ("cccd", "pass")}
        if _BHYT_CODE.fullmatch(compact):
            keys.add(persons.person_key("bhyt", compact, "", ""))
        # A national QR with a masked id carries name and birth in its key; an unmasked one
        # is already the cccd key above.
        return Search("person", keys=tuple(sorted(keys)), prefixes=(f"national:{compact}|",))
    if _DIGITS.fullmatch(compact):
        return Search("tail", tail=compact)
    words = tuple(fold(cleaned).split())
    return Search("name", words=words) if words else Search("")


# -- the query -------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Scope:
    venue_ids: tuple[int, ...] | None
    since_ms: int | None
    until_ms: int | None
    desc: bool
    search: Search


def query_history(storage, *, venue_ids: Sequence[int] | None, since_ms: int | None = None,
                  until_ms: int | None = None, search: str = "", order: str = "desc",
                  cursor: str | None = None, limit: int = 50,
                  matched_in_full: Collection[int] | None = None) -> Page:
    """One page of check-ins of ``venue_ids`` (None: every venue) with ``since_ms`` <=
    wall_ms < ``until_ms``, matching ``search``, in time order ``order`` ("desc" newest
    first, or "asc"), starting after ``cursor``.

    ``matched_in_full``: the venues whose rows the visitor sees in full; a last-digits or
    name search matches the rows of every other venue only on what their mask shows.
    None: every row in full (the command line and other callers that show no mask)."""
    if order not in _ORDERS:
        raise HistoryError("order must be 'desc' or 'asc'")
    if not 1 <= limit <= MAX_LIMIT:
        raise HistoryError(f"limit must be 1 to {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor else None
    ids = None if venue_ids is None else tuple(sorted({int(v) for v in venue_ids}))
    scope = _Scope(ids, since_ms, until_ms, order == "desc", parse_search(search))
    if ids == ():
        return Page([], None)
    db = storage.sql
    if scope.search.mode in ("tail", "name"):
        rows, next_after = _bounded_search(db, scope, after, limit, matched_in_full)
    else:
        rows = _read(db, scope, after, limit + 1)
        next_after = rows[limit - 1] if len(rows) > limit else None
        rows = rows[:limit]
    _add_venue_names(db, rows)
    return Page(rows, cursor_at(next_after) if next_after else None)


def _bounded_search(db, scope: _Scope, after, limit: int,
                    matched_in_full: Collection[int] | None) -> tuple[list[dict], dict | None]:
    matched: list[dict] = []
    examined = 0
    last: dict | None = None
    names: dict[tuple[str, bool], bool] = {}  # the same names recur: fold each once
    search = scope.search
    result: tuple[list[dict], dict | None] | None = None
    while examined < SEARCH_BUDGET and result is None:
        want = min(SEARCH_CHUNK, SEARCH_BUDGET - examined)
        chunk = _read(db, scope, after, want, _SCAN_COLUMNS)
        for row in chunk:
            examined += 1
            last = row
            # Which rows are searched in full depends only on the venue, never on the row's
            # hidden fields: a masked row costs the same work whatever the mask hides.
            full = matched_in_full is None or row["venue_id"] in matched_in_full
            if search.mode == "name":
                hit = names.get((row["name"], full))
                if hit is None:
                    hit = names[(row["name"], full)] = search.matches(row, full)
            else:
                hit = search.matches(row, full)
            if hit:
                matched.append(row)
                if len(matched) > limit:
                    result = matched[:limit], matched[limit - 1]
                    break
        else:
            if len(chunk) < want:
                result = matched, None  # the filter has no more rows
            elif chunk:
                after = (last["wall_ms"], last["id"])
    if result is None:
        # Budget spent: the page may be short, and the cursor continues where the scan stopped.
        result = matched, last
    rows, stop = result
    if not rows:
        return [], stop
    ids, params = in_list(db, "id", [r["id"] for r in rows])
    full = {r[0]: dict(zip(COLUMNS, r)) for r in db.rows(f"SELECT {', '.join(COLUMNS)} FROM checkins WHERE {ids}",
                                                           params)}
    return [full[r["id"]] for r in rows if r["id"] in full], stop


def _read(db, scope: _Scope, after: tuple[int, int] | None, n: int,
          columns: tuple[str, ...] = COLUMNS) -> list[dict]:
    """Up to ``n`` rows of the scope after ``after``, in the scope's order."""
    select = ", ".join(f"c.{name}" for name in columns)
    if scope.search.mode == "person":
        rows = _read_person(db, scope, after, n, select)
    elif scope.venue_ids is None:
        where, params = _time_conditions(scope, after)
        rows = db.rows(f"SELECT {select} FROM checkins c WHERE {where} {_order_by(scope)} LIMIT ?", [*params, n])
    elif len(scope.venue_ids) <= FEW_VENUES:
        rows = _read_few(db, scope, after, n, select)
    else:
        rows = _read_windows(db, scope, after, n, select)
    return [dict(zip(columns, r)) for r in rows]


def _order_by(scope: _Scope, prefix: str = "c.") -> str:
    word = "DESC" if scope.desc else "ASC"
    return f"ORDER BY {prefix}wall_ms {word}, {prefix}id {word}"


def _time_conditions(scope: _Scope, after, lo: int | None = None, last: int | None = None) -> tuple[str, list]:
    """Conditions on wall_ms for the scope, the keyset position and an optional window
    [lo, last] (``last`` included, so that a window may end at the largest BIGINT);
    written so that the wall_ms range is an index range (and, on PostgreSQL, its bounds
    plain parameters that prune the monthly partitions)."""
    parts, params = [], []
    lows = [x for x in (scope.since_ms, lo) if x is not None]
    if lows:
        parts.append("c.wall_ms >= ?")
        params.append(max(lows))
    if last is not None:  # a window lies inside the scope's range already
        parts.append("c.wall_ms <= ?")
        params.append(last)
    elif scope.until_ms is not None:
        parts.append("c.wall_ms < ?")
        params.append(scope.until_ms)
    if after is not None:
        wall, row_id = after
        if scope.desc:
            parts.append("c.wall_ms <= ? AND (c.wall_ms < ? OR c.id < ?)")
        else:
            parts.append("c.wall_ms >= ? AND (c.wall_ms > ? OR c.id > ?)")
        params += [wall, wall, row_id]
    return " AND ".join(parts) or "TRUE", params


def _read_person(db, scope: _Scope, after, n: int, select: str) -> list[tuple]:
    where, params = _time_conditions(scope, after)
    keys = scope.search.keys
    person = f"c.person_key IN ({', '.join('?' * len(keys))})"
    pparams: list[Any] = list(keys)
    # '|' + 1 is '}': every key starting with the prefix sorts in [prefix, prefix with '}')
    # in byte order; PostgreSQL compares text by the database's collation, which may
    # ignore punctuation, so there the comparison says byte order.
    key = code_point_order(db, "c.person_key")
    for prefix in scope.search.prefixes:
        person += f" OR ({key} >= ? AND {key} < ?)"
        pparams += [prefix, prefix[:-1] + "}"]
    venue = ""
    vparams: list[Any] = []
    if scope.venue_ids is not None:
        # Unary + keeps the planner on the person index: a person has few rows, a venue many.
        condition, vparams = in_list(db, "+c.venue_id", scope.venue_ids)
        venue = f" AND {condition}"
    sql = f"SELECT {select} FROM checkins c WHERE ({person}) AND {where}{venue} {_order_by(scope)} LIMIT ?"
    return db.rows(sql, [*pparams, *params, *vparams, n])


def _read_few(db, scope: _Scope, after, n: int, select: str) -> list[tuple]:
    where, params = _time_conditions(scope, after)
    one = f"SELECT {select} FROM checkins c WHERE c.venue_id = ? AND {where} {_order_by(scope)} LIMIT ?"
    if len(scope.venue_ids) == 1:
        return db.rows(one, [scope.venue_ids[0], *params, n])
    sql = " UNION ALL ".join(f"SELECT * FROM ({one}) AS v{i}" for i in range(len(scope.venue_ids)))
    sql = f"{sql} {_order_by(scope, '')} LIMIT ?"
    all_params: list[Any] = []
    for venue_id in scope.venue_ids:
        all_params += [venue_id, *params, n]
    return db.rows(sql, [*all_params, n])


def _read_windows(db, scope: _Scope, after, n: int, select: str) -> list[tuple]:
    """Many venues: probe every venue's index range inside a time window, widening the
    window until ``n`` rows are found or the scope's time range is exhausted."""
    venues, venue_params = in_list(db, "c.venue_id", scope.venue_ids)
    # Bounds are inclusive here: a stored time may be any BIGINT, the largest one too.
    lo_bound = scope.since_ms
    hi_bound = None if scope.until_ms is None else scope.until_ms - 1
    if after is not None:
        if scope.desc:
            hi_bound = after[0] if hi_bound is None else min(hi_bound, after[0])
        else:
            lo_bound = after[0] if lo_bound is None else max(lo_bound, after[0])
    # Where any data is at all: one seek each in the wall_ms index (asked together,
    # SQLite would scan the table instead).
    first = db.value("SELECT min(wall_ms) FROM checkins")
    last = db.value("SELECT max(wall_ms) FROM checkins")
    if first is None:
        return []
    lo_bound = first if lo_bound is None else max(lo_bound, first)
    hi_bound = last if hi_bound is None else min(hi_bound, last)
    out: list[tuple] = []
    width = FIRST_WINDOW_MS
    edge = hi_bound if scope.desc else lo_bound
    while len(out) < n and lo_bound <= hi_bound:
        lo, hi = (max(lo_bound, edge - width + 1), edge) if scope.desc else (edge, min(hi_bound, edge + width - 1))
        if lo > hi:
            break
        where, params = _time_conditions(scope, after, lo, hi)
        sql = f"SELECT {select} FROM checkins c WHERE {venues} AND {where} {_order_by(scope)} LIMIT ?"
        found = db.rows(sql, [*venue_params, *params, n - len(out)])
        out += found
        if scope.desc:
            edge = lo - 1
            if lo <= lo_bound:
                break
        else:
            edge = hi + 1
            if hi >= hi_bound:
                break
        # Grow the window by the density seen so far, within x2 .. x16.
        if found:
            wanted = (n - len(out)) * width / len(found) * 1.5
            width = int(min(width * 16, max(width * 2, wanted)))
        else:
            width *= 8
    return out


def _add_venue_names(db, rows: list[dict]) -> None:
    ids = sorted({r["venue_id"] for r in rows})
    if not ids:
        return
    condition, params = in_list(db, "id", ids)
    names = dict(db.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
    self_stations: set[str] = set()
    if db.has_table("self_stations"):
        condition, params = in_list(db, "station_id", sorted({r["station_id"] for r in rows}))
        self_stations = {r[0] for r in db.rows(f"SELECT station_id FROM self_stations WHERE {condition}", params)}
    phones = phone_labels(db, [r["station_id"] for r in rows])
    for r in rows:
        r["venue"] = names.get(r["venue_id"], "")
        r["self_declared"] = r["station_id"] in self_stations
        r["phone"] = phones.get(r["station_id"])  # scanned by a phone: its number and account


def quick_reads(storage) -> bool:
    """Whether a page is read without waiting: SQLite reads in-process, while PostgreSQL
    may wait for a pooled connection."""
    return storage.sql.dialect == SQLITE


# -- visits ----------------------------------------------------------------------------------

def visits_for_rows(storage, rows: list[dict], default_stay_s: int = 3600) -> list[dict]:
    """The visits that start on these history rows, in the rows' order.

    An entry scan starts a visit that ends at the person's next exit scan at that venue
    (within a day), else after the default stay. An exit scan with no entry before
    it is a visit of the default stay ending there. An exit scan that closes a visit
    with a scanned entry is not listed again: that visit is shown at its entry, so a
    visit spanning two pages appears once.
    """
    stay = default_stay_s * 1000
    db = storage.sql
    around: dict[tuple[str, int], list[int]] = {}
    for r in rows:
        around.setdefault((r["person_key"], r["venue_id"]), []).append(r["wall_ms"])
    visits_by_place: dict[tuple[str, int], list[Visit]] = {}
    for (key, venue_id), walls in around.items():
        scans = db.rows(
            "SELECT person_key, venue_id, direction, wall_ms FROM checkins"
            " WHERE person_key = ? AND wall_ms >= ? AND wall_ms <= ? AND venue_id = ? ORDER BY wall_ms",
            [key, max(WALL_MIN, min(walls) - MAX_VISIT_MS), min(WALL_MAX, max(walls) + MAX_VISIT_MS), venue_id])
        visits_by_place[(key, venue_id)] = visits_from_checkins(scans, stay)
    out = []
    for r in rows:
        candidates = visits_by_place[(r["person_key"], r["venue_id"])]
        if r["direction"] == "in":
            visit = next((v for v in candidates if v.start_ms == r["wall_ms"]), None)
            start_scanned = True
        else:
            visit = next((v for v in candidates if v.end_ms == r["wall_ms"] and v.start_ms == r["wall_ms"] - stay
                          and v.estimated), None)
            start_scanned = False
        if visit is None:
            continue
        end_scanned = not visit.estimated if start_scanned else True
        out.append({**r, "start_ms": visit.start_ms, "end_ms": visit.end_ms,
                    "minutes": round((visit.end_ms - visit.start_ms) / 60000),
                    "start_scanned": start_scanned, "end_scanned": end_scanned})
    return out


def iter_all(storage, **query: Any) -> Iterator[dict]:
    """Every row of a query, page by page (for exports)."""
    cursor = None
    while True:
        page = query_history(storage, cursor=cursor, limit=MAX_LIMIT, **query)
        yield from page.rows
        if page.next_cursor is None:
            return
        cursor = page.next_cursor
