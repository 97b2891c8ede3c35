"""Printed personal passes for roster people without a phone: issue, print, revoke.

Personal passes (QG1, qrgate/personal_pass.py) are issued from a venue's roster.

The server signs every pass with its one pass-signing key (server.toml's data folder,
``pass-signing.key``): the key every station receives as ``pass_keys`` when it is
enrolled, and the key it checks pushed configs with. So a pass works at every station of
this server offline, like an ID card, and no station needs a new key when a venue starts
printing passes (docs/roster.md explains the choice).

A pass row keeps its id, the roster person, the validity dates and its state; not the
pass text. Ed25519 signatures are deterministic, so the same text is made again from the
roster for a reprint. A revoked pass goes on the server's block list until a day after
its expiry (after that the station refuses it as expired) and the new config is pushed at
once to the active stations of the venue and of the venues within it; other stations get
it with their next config.
"""

from __future__ import annotations

import datetime as dt
import io
import logging
import secrets
import time
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from PIL import Image, ImageDraw

from qrgate.errors import UserError
from qrgate.persons import person_key
from qrgate.personal_pass import issue_pass
from server.venues.poster import _font, _wrap
from server.roster.roster import RosterPerson, RosterStore
from server.storage.sql import code_point_order
from server.ingest.stationconfig import ConfigPublisher, StationConfigStore

logger = logging.getLogger(__name__)

PID_ALPHABET = "23456789ABCDEFGHJKMNPQRSTUVWXYZ"  # no 0/O, 1/I/L: read aloud over the phone
PID_LENGTH = 8  # 31^8 ≈ 8.5e11 ids
MAX_DAYS = 366
MAX_PER_BATCH = 500  # about 63 pages: one PDF is made within a web request
STATES = ("active", "revoked")

# The sheet: A4 portrait at 300 dpi, 2 columns x 4 rows of cards, 8 mm margins.
DPI = 300
A4 = (round(210 / 25.4 * DPI), round(297 / 25.4 * DPI))  # 2480 x 3508
MARGIN = round(8 / 25.4 * DPI)
COLUMNS, ROWS = 2, 4
PER_PAGE = COLUMNS * ROWS
CARD = ((A4[0] - 2 * MARGIN) // COLUMNS, (A4[1] - 2 * MARGIN) // ROWS)  # 97 x 70 mm
PADDING = round(3 / 25.4 * DPI)
QR_BOX = CARD[1] - 2 * PADDING  # the code is as tall as the card allows: about 64 mm


def _printable(text: str) -> str:
    """``text`` without control, format, surrogate or private-use characters (a NUL,
    which no database text column takes, among them)."""
    return "".join(c for c in text if unicodedata.category(c) not in ("Cc", "Cf", "Cs", "Co"))


def _mm(pixels: float) -> float:
    return pixels / DPI * 25.4


@dataclass(frozen=True)
class PassRecord:
    pid: str
    venue_id: int
    person_id: int | None
    batch_id: int
    issued: dt.date
    expires: dt.date
    state: str
    reason: str
    replaced_by: str

    @property
    def person_key(self) -> str:
        return person_key("pass", self.pid, "", "")

    def state_on(self, today: dt.date) -> str:
        """One of "active", "revoked" or "expired" (an active pass past its last day)."""
        if self.state == "active" and today > self.expires:
            return "expired"
        return self.state

    def as_dict(self, today: dt.date) -> dict[str, Any]:
        return {"pid": self.pid, "person_id": self.person_id, "batch_id": self.batch_id,
                "issued": self.issued.isoformat(), "expires": self.expires.isoformat(),
                "state": self.state_on(today), "reason": self.reason, "replaced_by": self.replaced_by}


@dataclass
class IssueResult:
    batch_id: int | None
    issued: list[PassRecord]
    skipped: list[int]  # person ids that already hold an active, unexpired pass


@dataclass
class PushResult:
    stations: int
    error: str = ""


class PassOffice:
    """Issues, lists, prints and revokes the passes of every venue."""

    def __init__(self, storage, signing_key: Ed25519PrivateKey, publisher: ConfigPublisher | None = None,
                 clock: Callable[[], float] = time.time):
        self.storage = storage
        self.key = signing_key
        self.publisher = publisher
        self.clock = clock
        self.roster = RosterStore(storage, clock)
        self.configs = StationConfigStore(storage)
        self.db = storage.sql
        if not (self.db.has_table("pass_batches") and self.db.has_table("passes")):
            self.db.schema(
                """
                CREATE TABLE IF NOT EXISTS pass_batches (
                    id {pk}, venue_id BIGINT NOT NULL, created_ms BIGINT NOT NULL,
                    account_id BIGINT, count BIGINT NOT NULL);
                CREATE TABLE IF NOT EXISTS passes (
                    pid TEXT PRIMARY KEY, venue_id BIGINT NOT NULL, person_id BIGINT, batch_id BIGINT NOT NULL,
                    issued TEXT NOT NULL, expires TEXT NOT NULL, state TEXT NOT NULL DEFAULT 'active',
                    created_ms BIGINT NOT NULL, revoked_ms BIGINT, reason TEXT NOT NULL DEFAULT '',
                    replaced_by TEXT NOT NULL DEFAULT '');
                CREATE INDEX IF NOT EXISTS passes_venue ON passes (venue_id, batch_id);
                CREATE INDEX IF NOT EXISTS passes_person ON passes (person_id)
                """
            )

    # -- reading -------------------------------------------------------------------------

    _COLUMNS = "pid, venue_id, person_id, batch_id, issued, expires, state, reason, replaced_by"

    @staticmethod
    def _record(row) -> PassRecord:
        return PassRecord(row[0], row[1], row[2], row[3], dt.date.fromisoformat(row[4]),
                          dt.date.fromisoformat(row[5]), row[6], row[7], row[8])

    def passes(self, venue_id: int, batch_id: int | None = None) -> list[PassRecord]:
        sql = f"SELECT {self._COLUMNS} FROM passes WHERE venue_id = ?"
        params: list[Any] = [venue_id]
        if batch_id is not None:
            sql += " AND batch_id = ?"
            params.append(batch_id)
        return [self._record(r) for r in self.db.rows(
            sql + f" ORDER BY batch_id DESC, {code_point_order(self.db, 'pid')}", params)]

    def get(self, venue_id: int, pid: str) -> PassRecord | None:
        row = self.db.one(f"SELECT {self._COLUMNS} FROM passes WHERE venue_id = ? AND pid = ?", [venue_id, pid])
        return self._record(row) if row else None

    def batches(self, venue_id: int) -> list[dict[str, Any]]:
        return [{"id": r[0], "created_ms": r[1], "count": r[2]} for r in self.db.rows(
            "SELECT id, created_ms, count FROM pass_batches WHERE venue_id = ? ORDER BY id DESC", [venue_id])]

    def keys_by_person(self, venue_id: int) -> dict[int, list[str]]:
        """person id -> the person keys of every pass issued to them (for "not checked in")."""
        out: dict[int, list[str]] = {}
        for pid, person_id in self.db.rows(
                "SELECT pid, person_id FROM passes WHERE venue_id = ? AND person_id IS NOT NULL", [venue_id]):
            out.setdefault(person_id, []).append(person_key("pass", pid, "", ""))
        return out

    def today(self, tz) -> dt.date:
        return dt.datetime.fromtimestamp(self.clock(), tz).date()

    # -- issuing -------------------------------------------------------------------------

    def _new_pid(self) -> str:
        while True:
            pid = "".join(secrets.choice(PID_ALPHABET) for _ in range(PID_LENGTH))
            if self.db.one("SELECT 1 FROM passes WHERE pid = ?", [pid]) is None:
                return pid

    def pass_text(self, record: PassRecord, person: RosterPerson) -> str:
        """The signed QG1 text of a pass (the same text every time: Ed25519 is deterministic)."""
        return issue_pass(self.key, pid=record.pid, name=person.name, issued=record.issued, expires=record.expires)

    def issue(self, venue_id: int, person_ids: list[int], days: int, today: dt.date,
              account_id: int | None = None) -> IssueResult:
        """New passes valid from ``today`` for ``days`` days, one batch; people who still
        hold an active pass are skipped (revoke and reissue instead)."""
        if not 1 <= days <= MAX_DAYS:
            raise UserError(f"a pass is valid for 1 to {MAX_DAYS} days, not {days}")
        if not person_ids:
            raise UserError("choose at least one person")
        if len(person_ids) > MAX_PER_BATCH:
            raise UserError(f"at most {MAX_PER_BATCH} passes at a time")
        people = [self.roster.get(venue_id, pid) for pid in dict.fromkeys(person_ids)]
        if any(p is None for p in people):
            raise UserError("a chosen person is not on this venue's roster")
        expires = today + dt.timedelta(days=days - 1)
        now = int(self.clock() * 1000)
        # Who holds a pass is read in the transaction that issues: two issues for the
        # same venue at once (two browser tabs) do not both give one person a pass.
        with self.db.transaction(serial=f"passes:{venue_id}"):
            holding = self._holding(venue_id, today)
            chosen = [p for p in people if p.id not in holding]
            skipped = [p.id for p in people if p.id in holding]
            if not chosen:
                return IssueResult(None, [], skipped)
            for person in chosen:
                # Checked before anything is stored: a name the pass cannot carry stops the batch.
                issue_pass(self.key, pid="X" * PID_LENGTH, name=person.name, issued=today, expires=expires)
            batch_id = self.db.insert_id(
                "INSERT INTO pass_batches (venue_id, created_ms, account_id, count) VALUES (?, ?, ?, ?)",
                [venue_id, now, account_id, len(chosen)])
            records = []
            for person in chosen:
                pid = self._new_pid()
                self.db.execute(
                    "INSERT INTO passes (pid, venue_id, person_id, batch_id, issued, expires, created_ms)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?)",
                    [pid, venue_id, person.id, batch_id, today.isoformat(), expires.isoformat(), now])
                records.append(PassRecord(pid, venue_id, person.id, batch_id, today, expires, "active", "", ""))
        return IssueResult(batch_id, records, skipped)

    def _holding(self, venue_id: int, today: dt.date) -> set[int]:
        """Roster people of the venue holding an active pass valid ``today``."""
        return {r[0] for r in self.db.rows(
            "SELECT person_id FROM passes WHERE venue_id = ? AND state = 'active' AND expires >= ?",
            [venue_id, today.isoformat()])}

    def without_phone(self, venue_id: int, today: dt.date | None = None) -> list[int]:
        """Roster people without a phone; with ``today``, only those holding no valid pass."""
        holding = self._holding(venue_id, today) if today is not None else set()
        return [p.id for p in self.roster.people(venue_id) if not p.has_phone and p.id not in holding]

    # -- revoking ------------------------------------------------------------------------

    def revoke(self, venue_id: int, pid: str, reason: str, today: dt.date, reissue_days: int = 0,
               account_id: int | None = None) -> tuple[PassRecord, PassRecord | None]:
        """Revoke a pass (lost, left) and block it on the stations; with ``reissue_days``,
        issue the same person a new pass. Returns the revoked pass and the new one."""
        record = self.get(venue_id, pid)
        if record is None:
            raise LookupError(pid)
        if record.state != "active":
            raise UserError(f"pass {pid} is already revoked")
        reason = " ".join(_printable(reason).split())[:200]
        now = int(self.clock() * 1000)
        self.db.execute(
            "UPDATE passes SET state = 'revoked', revoked_ms = ?, reason = ? WHERE pid = ? AND state = 'active'",
            [now, reason, pid])
        # A station refuses the pass as expired after its last day, wherever its time
        # zone; the entry stays one more day to cover the widest zone difference.
        until = dt.datetime.combine(record.expires + dt.timedelta(days=2), dt.time(), dt.timezone.utc)
        self.configs.block(record.person_key, f"pass revoked: {reason}"[:200], int(until.timestamp() * 1000))
        fresh = None
        if reissue_days and record.person_id is not None:
            result = self.issue(venue_id, [record.person_id], reissue_days, today, account_id)
            fresh = result.issued[0] if result.issued else None
            if fresh:
                self.db.execute("UPDATE passes SET replaced_by = ? WHERE pid = ?", [fresh.pid, pid])
        return self.get(venue_id, pid), fresh

    def revoke_people(self, venue_id: int, person_ids: list[int], reason: str, today: dt.date) -> list[str]:
        """Revoke every active pass of these people (they left the roster); their pids."""
        if not person_ids:
            return []
        marks = ",".join("?" * len(person_ids))
        pids = [r[0] for r in self.db.rows(
            f"SELECT pid FROM passes WHERE venue_id = ? AND state = 'active' AND person_id IN ({marks})"
            f" ORDER BY {code_point_order(self.db, 'pid')}", [venue_id, *person_ids])]
        for pid in pids:
            self.revoke(venue_id, pid, reason, today)
        return pids

    def push(self, venue_id: int) -> PushResult:
        """Send the block list now to the active stations of the venue and the venues within it."""
        stations = self.configs.stations_of(self.roster.venue_tree(venue_id))
        if self.publisher is None:
            return PushResult(0, "no broker is configured for this web server: run qrgate-provision push")
        try:
            return PushResult(self.publisher.publish(stations))
        except UserError as exc:
            logger.warning("block list not pushed for venue %d: %s", venue_id, exc)
            return PushResult(0, str(exc))

    # -- printing ------------------------------------------------------------------------

    def sheet_items(self, venue_id: int, batch_id: int) -> list[tuple[PassRecord, RosterPerson]]:
        """The active passes of a batch with their roster people (revoked ones are not printed)."""
        items = []
        for record in self.passes(venue_id, batch_id):
            person = self.roster.get(venue_id, record.person_id) if record.person_id is not None else None
            if record.state == "active" and person is not None:
                items.append((record, person))
        items.sort(key=lambda item: (item[1].department, item[1].employee_no))
        return items

    def sheet_pdf(self, venue_name: str, items: list[tuple[PassRecord, RosterPerson]]) -> bytes:
        if not items:
            raise UserError("no active passes to print in this batch")
        pages = [render_sheet(venue_name, [(self.pass_text(r, p), r, p) for r, p in items[i:i + PER_PAGE]])
                 for i in range(0, len(items), PER_PAGE)]
        out = io.BytesIO()
        pages[0].save(out, "PDF", resolution=DPI, save_all=True, append_images=pages[1:],
                      title=f"Thẻ ra vào {venue_name[:60]}")  # the sheet is in Vietnamese, its title too
        return out.getvalue()


QUIET_MODULES = 3  # plus the card's padding and the gap before the text: 4 or more in all


def _qr_modules(text: str) -> Image.Image:
    """The code at one pixel per module, no quiet zone (0 = dark)."""
    # zxing-cpp's writer (C++) takes about 2 ms a code where a pure-Python encoder takes
    # about 50: a 500-card batch prints in seconds. Error level L keeps the code small (a
    # pass is ~230 characters: version 10, 57 modules); a card is flat and clean, and
    # large modules matter more at 20-40 cm than error correction.
    code = zxingcpp.create_barcode(text, zxingcpp.BarcodeFormat.QRCode, ec_level="L")
    return Image.fromarray(np.asarray(code.to_image(scale=1, add_quiet_zones=False)))


def _scale_for(side_modules: int, box: int) -> int:
    return max(1, box // (side_modules + 2 * QUIET_MODULES))


def _qr_image(text: str, box: int) -> Image.Image:
    """The code with its quiet zone, modules as large as fit ``box`` pixels square."""
    modules = _qr_modules(text)
    scale = _scale_for(modules.width, box)
    quiet = QUIET_MODULES * scale
    image = Image.new("L", (modules.width * scale + 2 * quiet,) * 2, 255)
    image.paste(modules.resize((modules.width * scale, modules.height * scale), Image.Resampling.NEAREST),
                (quiet, quiet))
    return image


def _format_date(day: dt.date) -> str:
    return day.strftime("%d/%m/%Y")


def render_sheet(venue_name: str, cards: list[tuple[str, PassRecord, RosterPerson]]) -> Image.Image:
    """One A4 page of up to eight cards with cut marks (1-bit, 300 dpi)."""
    page = Image.new("L", A4, 255)
    draw = ImageDraw.Draw(page)
    for index, (text, record, person) in enumerate(cards):
        left = MARGIN + (index % COLUMNS) * CARD[0]
        top = MARGIN + (index // COLUMNS) * CARD[1]
        _draw_card(page, draw, left, top, venue_name, text, record, person)
    _cut_marks(draw)
    return page.convert("1", dither=Image.Dither.NONE)


def _cut_marks(draw: ImageDraw.ImageDraw) -> None:
    # Short ticks outside the grid where each cut goes, and a light dotted line between
    # cards: the page still makes sense cut with scissors or a guillotine.
    tick = round(5 / 25.4 * DPI)
    xs = [MARGIN + c * CARD[0] for c in range(COLUMNS + 1)]
    ys = [MARGIN + r * CARD[1] for r in range(ROWS + 1)]
    for x in xs:
        draw.line((x, MARGIN - tick, x, MARGIN - 12), fill=0, width=3)
        draw.line((x, ys[-1] + 12, x, ys[-1] + tick), fill=0, width=3)
        for y in range(ys[0], ys[-1], 40):
            draw.line((x, y, x, y + 8), fill=120, width=2)
    for y in ys:
        draw.line((MARGIN - tick, y, MARGIN - 12, y), fill=0, width=3)
        draw.line((xs[-1] + 12, y, xs[-1] + tick, y), fill=0, width=3)
        for x in range(xs[0], xs[-1], 40):
            draw.line((x, y, x + 8, y), fill=120, width=2)


def _draw_card(page: Image.Image, draw: ImageDraw.ImageDraw, left: int, top: int, venue_name: str, text: str,
               record: PassRecord, person: RosterPerson) -> None:
    code = _qr_image(text, QR_BOX)
    page.paste(code, (left + PADDING, top + (CARD[1] - code.height) // 2))
    x = left + PADDING + code.width + PADDING // 2
    width = left + CARD[0] - PADDING - x
    y = top + PADDING + 10
    small, bold, name_font = _font(30), _font(30, True), _font(42, True)
    for line in _wrap(draw, venue_name, small, width, 2):
        draw.text((x, y), line, font=small, fill=0)
        y += 38
    y += 14
    draw.text((x, y), "THẺ RA VÀO", font=bold, fill=0)
    y += 56
    for line in _wrap(draw, person.name, name_font, width, 3):
        draw.text((x, y), line, font=name_font, fill=0)
        y += 52
    y += 10
    details = [f"Mã NV: {person.employee_no}"]
    if person.department:
        details.append(person.department)
    details.append(f"Hạn: {_format_date(record.expires)}")
    for detail in details:
        for line in _wrap(draw, detail, small, width, 2):
            draw.text((x, y), line, font=small, fill=0)
            y += 38
    draw.text((x, top + CARD[1] - PADDING - 40), f"Số thẻ {record.pid}", font=_font(28), fill=0)


def qr_module_mm(text: str) -> float:
    """How wide one QR module of this pass is printed on a card, in millimetres."""
    return _mm(_scale_for(_qr_modules(text).width, QR_BOX))
