"""The rows of the scan-history table (``history_list.html``), written here, not by the
template engine.

A page holds 50-200 rows of about 13 cells each. Written by Jinja, every cell is a
lookup, a call and a ``Markup`` object, and that was a third of the page's time under
load (docs/performance.md); here a row is one format of escaped strings. The rule that
keeps it safe is simple to check: every value from a row goes through :func:`_esc`
(HTML-escaped, quotes included, so it is safe in text and in a quoted attribute) or is
an ``int()``; the words of the page come from the translation table, escaped too.
``tests/test_history.py`` parses what comes out for hostile names, ids and venues.
"""

from __future__ import annotations

from html import escape
from typing import Any, Callable, Iterable

from markupsafe import Markup

from server.checkins.views import masked_phone
from server.web import i18n

_WORDS = ("checkins.in", "checkins.out", "checkins.corrected", "checkins.self", "hist.trace", "hist.estimated",
          "hist.none")
_FULL = ' class="full"'


def _esc(value: Any) -> str:
    return "" if value is None else escape(str(value), quote=True)


def _words(lang: str) -> dict[str, str]:
    return {key: _esc(i18n.translate(lang, key)) for key in _WORDS}


def _person(r: dict) -> str:
    """The name, id and birth cells of a row (masked or not, as present_checkin left them;
    a full birth date as dd/mm/yyyy)."""
    return (f'<td class="name">{_esc(r["name"])}</td><td class="idno">{_esc(r["id_number"])}</td>'
            f'<td class="birth">{_esc(i18n.birth_text(r["birth"]))}</td>')


def _rows(items: Iterable[dict], w: dict[str, str], officer: bool, cells: Callable[[dict], str],
          columns: int) -> Markup:
    """A ``<tr>`` per item around its ``cells``, with the trace column for an officer
    (a link on the rows read in full), or one row saying none match."""
    trace = f'<td><a class="trace-link" href="/trace?checkin=%d">{w["hist.trace"]}</a></td>'
    out = []
    for r in items:
        last = (trace % int(r["id"]) if r["full"] else "<td></td>") if officer else ""
        out.append(f'<tr data-id="{int(r["id"])}"{_FULL if r["full"] else ""}>{cells(r)}{last}</tr>\n')
    if not out:
        out.append(f'<tr><td colspan="{columns}" id="none">{w["hist.none"]}</td></tr>\n')
    return Markup("".join(out))


def scan_rows(items: Iterable[dict], lang: str, officer: bool) -> Markup:
    """``<tr>`` per check-in (server.checkins.views.present_checkin): time, venue,
    direction, person, card and station."""
    w = _words(lang)
    names: dict[str, str] = {}

    def cards(kind: str) -> str:
        """A card kind as words (CCCD, Thẻ BHYT...), escaped once per kind."""
        if kind not in names:
            names[kind] = _esc(i18n.card_name(lang, kind))
        return names[kind]

    def cells(r: dict) -> str:
        if r["time_corrected"]:
            time_attr, tag = "", f' <span class="tag small">{w["checkins.corrected"]}</span>'
        else:
            time_attr, tag = ("" if r["clock_synced"] else ' class="unsynced"'), ""
        if r["self_declared"]:
            station = f'<span class="tag self">{w["checkins.self"]}</span>'
        elif r.get("phone"):  # a phone scanning as a station, and whose account enrolled it
            station = _esc(i18n.translate(lang, "checkins.phone", number=r["phone"]["number"],
                                          account=masked_phone(r["phone"]["account_phone"])))
        else:  # the station by the name it was given, not "gate-1#30"
            station = _esc(r["station_id"])
        direction = r["direction"]
        return (f'<td{time_attr}><time datetime="{_esc(r["time"])}">{_esc(r["time_text"])}</time>{tag}</td>'
                f'<td class="wrap venue">{_esc(r["venue"])}</td>'
                f'<td class="dir-{_esc(direction)}">{w["checkins.in"] if direction == "in" else w["checkins.out"]}</td>'
                f'{_person(r)}<td>{cards(r["kind"])}</td><td>{station}</td>')

    return _rows(items, w, officer, cells, 9)


def visit_rows(items: Iterable[dict], lang: str, officer: bool) -> Markup:
    """``<tr>`` per visit (server.checkins.views.present_visit): in, out, minutes, venue
    and person; an end or start without a scan is tagged as estimated."""
    w = _words(lang)
    estimated = f' <span class="tag">{w["hist.estimated"]}</span>'

    def cells(r: dict) -> str:
        return (f'<td><time datetime="{_esc(r["start"])}">{_esc(r["start_text"])}</time>'
                f'{"" if r["start_scanned"] else estimated}</td>'
                f'<td><time datetime="{_esc(r["end"])}">{_esc(r["end_text"])}</time>'
                f'{"" if r["end_scanned"] else estimated}</td>'
                f'<td class="minutes">{int(r["minutes"])}</td><td class="wrap venue">{_esc(r["venue"])}</td>'
                f'{_person(r)}')

    return _rows(items, w, officer, cells, 8)
