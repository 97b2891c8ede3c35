"""What a Vietnamese page, file or SMS must not say: English words, raw codes and ISO
dates. Shared by the browser walk (tests/test_layout_browser.py) and the files and
messages check (tests/test_words_vi.py), so that both look for the same things.

NOT_WORDS finds:

- ISO dates and weeks (2026-12-06, 2026-W49, 2026-12-06T08:00) and the hint YYYY-MM-DD:
  people write 06/12/2026 and "Tuần 49";
- card kinds, directions, roles, venue kinds, states and other codes as the database
  keeps them (cccd, bhyt, national, pass, in/out as ``out``, controller, factory,
  legacy, queued...): the pages say them in words (server/web/i18n.py);
- station ids with their record's number (gate-1#30), self check-in sources (self-2);
- minutes or counts as floats (15.0, 41.0, 2.5): people read ``41 phút``, and write a
  decimal with a comma (an IP address, a version 1.4.2 or a plate 51B-123.45 is no float);
- common English words of a user interface (the, and, of, venue, download, week...).

Vietnamese words that are spelt like English ones without their marks are left out on
purpose: ``in`` (print), ``to`` (big), ``do`` (because), ``tin`` (message), ``sang``,
``may`` (sewing: "May Mặc"), ``an``, ``con``, ``long``, ``ban``.
"""

from __future__ import annotations

import html.parser
import re

ENGLISH = (
    "the", "and", "of", "is", "not", "yes", "no", "none", "true", "false", "null", "unknown", "never", "with",
    "for", "from", "your", "you", "this", "that", "are", "was", "has", "have", "will", "please", "all",
    "broker", "station", "stations", "retired", "online", "offline", "error", "errors", "active", "revoked",
    "expired", "minute", "minutes", "hour", "hours", "day", "days", "week", "weeks", "month", "year",
    "venue", "venues", "history", "export", "exports", "report", "reports", "download", "upload", "page",
    "next", "previous", "search", "filter", "total", "name", "time", "date", "direction", "kind", "card",
    "cards", "area", "areas", "province", "ward", "commune", "district", "contact", "contacts", "trace",
    "dashboard", "roster", "member", "members", "phone", "login", "logout", "save", "cancel", "delete",
    "back", "home", "status", "state", "pending", "queued", "running", "done", "failed", "legacy",
    "merge", "replace", "owner", "manager", "controller", "officer", "operator", "invited", "granted",
    "factory", "office", "school", "hospital", "market", "restaurant", "lodging", "public", "vehicle",
    "out", "self", "unsynced", "synced", "masked", "checkin", "checkins", "birth", "born", "passes", "poster",
    "sheet", "code", "codes", "link", "message", "messages", "people", "person", "scan", "scans", "check",
)
# Codes in lower case only: CCCD and BHYT are how Vietnamese write the card kinds.
CODES = r"\b(?:cccd|bhyt|national|pass)\b"
NOT_WORDS = re.compile(
    r"\b\d{4}-\d{2}-\d{2}|\b\d{4}-W\d{2}\b|\b(?i:yyyy-mm-dd)\b|" + CODES + r"|\S#\d+|\bself-\d+\b"
    r"|(?<![\d.])\d+\.\d(?![\d.])"
    r"|\b(?i:" + "|".join(ENGLISH) + r")\b")


def leftovers(text: str, where: str) -> list[str]:
    """Each thing ``text`` says that NOT_WORDS finds, with a little of its surroundings."""
    return [f"{where}: says {m.group(0)!r} in {text[max(0, m.start() - 30):m.end() + 30]!r}"
            for m in NOT_WORDS.finditer(text)]


# What a person reads or hears of a page, as tests/test_layout_browser.py's SAID takes it
# from a browser: the title, each text node but in <code> (a file's column names, an MQTT
# topic: codes on purpose), scripts and styles, and the words of some attributes.
_SILENT = frozenset({"code", "script", "style"})
_SAID_ATTRIBUTES = ("placeholder", "title", "aria-label", "data-confirm", "alt")
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track",
                   "wbr"})


class _PageWords(html.parser.HTMLParser):
    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.said: list[str] = []
        self.open: list[str] = []

    def handle_starttag(self, tag, attrs):
        values = dict(attrs)
        self.said += [values[name] or "" for name in _SAID_ATTRIBUTES if name in values]
        if tag == "input" and values.get("type") in ("submit", "button"):
            self.said.append(values.get("value") or "")
        if tag not in _VOID:
            self.open.append(tag)

    def handle_endtag(self, tag):
        if tag in self.open:
            del self.open[len(self.open) - 1 - self.open[::-1].index(tag):]

    def handle_data(self, data):
        if not _SILENT.intersection(self.open):
            self.said.append(data.strip())


def page_words(page: str) -> str:
    """The words of an HTML page, one text a line."""
    parser = _PageWords()
    parser.feed(page)
    parser.close()
    return "\n".join(text for text in parser.said if text)


# A link in a message or e-mail is an address, not words: the week in a report's
# (?week=2026-W47) is what the page's week field takes.
_LINK = re.compile(r"https?://\S+")


def message_leftovers(text: str, where: str) -> list[str]:
    """leftovers() of a message's text, its links left out."""
    return leftovers(_LINK.sub("…", text), where)
