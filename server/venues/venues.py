"""Venues with their area, address, parent venue, vehicle plate and contact person;
closing and reopening them; members by role; sharing invitations confirmed by a code
sent by SMS to the invited number with a link to accept."""

from __future__ import annotations

import hashlib
import hmac
import logging
import re
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qrgate.errors import UserError
from server.accounts.accounts import Account, Accounts, AuthRefused, address_key, normalise_phone, server_secret
from server.areas.areas import CURRENT, LEGACY, AreaDirectory, mark_legacy
from server.venues.permissions import ROLE_NAMES, ROLES
from server.accounts.sms import quoted_name
# Re-exported: callers have long imported the venue's input from here.
from server.venues.venue_input import (LIMITS, VENUE_KINDS, VenueError, VenueInput, change_words,  # noqa: F401
                                       changed_fields, clean_text, join_address, normalise_plate)

logger = logging.getLogger(__name__)

ROW_ID_MIN, ROW_ID_MAX = -(2**63), 2**63 - 1  # a BIGINT on both engines
INVITATION_CODE_HOURS = 24  # long enough for the invited person to see the SMS and act on it
MAX_WRONG_INVITATION_CODES = 5  # then the code is burned: the inviter sends a new invitation
_ASCII_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")


class InvitationConflict(VenueError):
    """A new invitation would cancel a pending one the inviter may not cancel."""


class NotFound(UserError):
    """No such venue, member or invitation (or not one this account may know about)."""


def is_row_id(value: Any) -> bool:
    """Whether ``value`` can be a row id: a whole number that fits a BIGINT column. A
    larger one (from a URL or a form) names no row; the engines would refuse to bind it."""
    return isinstance(value, int) and not isinstance(value, bool) and ROW_ID_MIN <= value <= ROW_ID_MAX


def _fold_ascii(text: str) -> str:
    return text.translate(_ASCII_UPPER_TO_LOWER)


@dataclass(frozen=True)
class Venue:
    id: int
    name: str
    kind: str
    label: str
    address: str
    province: str
    district: str
    ward: str
    parent_id: int | None
    plate: str
    public_token: str
    created_ms: int
    area_map: str = CURRENT     # LEGACY: province/district/ward are old three-level codes
    closed_ms: int | None = None  # closed: kept for the retention period, takes no new check-ins
    contact_name: str = ""      # the venue's contact person for the authorities
    contact_role: str = ""
    contact_phone: str = ""

    @property
    def closed(self) -> bool:
        return self.closed_ms is not None

    @property
    def legacy_area(self) -> bool:
        """Its area is an old three-level code, waiting to be converted to the 2025 map."""
        return self.area_map == LEGACY

    def as_dict(self) -> dict[str, Any]:
        return {k: getattr(self, k) for k in self.__dataclass_fields__}


@dataclass(frozen=True)
class Member:
    account_id: int
    phone: str
    role: str
    granted_ms: int


@dataclass(frozen=True)
class Invitation:
    id: int
    venue_id: int
    phone: str
    role: str
    invited_by: int
    created_ms: int
    state: str  # pending / accepted / cancelled


class VenueDirectory:
    """Venues, members and invitations in the server's database (``storage.sql``).

    Extends the ``venues`` table made by the storage with the columns it needs (an
    idempotent migration), so ``Storage.add_venue`` keeps working.
    """

    NEW_COLUMNS = {"label": "TEXT", "province": "TEXT", "district": "TEXT", "ward": "TEXT", "parent_id": "BIGINT",
                   "plate": "TEXT", "public_token": "TEXT", "closed_ms": "BIGINT", "contact_name": "TEXT",
                   "contact_role": "TEXT", "contact_phone": "TEXT"}
    INVITATION_COLUMNS = {"code_hash": "TEXT", "code_expires_ms": "BIGINT", "code_wrong": "INTEGER"}

    def __init__(self, storage, accounts: Accounts, areas: AreaDirectory, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.accounts = accounts
        self.areas = areas
        self.clock = clock
        self._migrate()
        self._code_key = server_secret(storage, "invitation-codes")

    def _migrate(self) -> None:
        db = self.storage.sql
        have = db.columns("venues")
        for name, declaration in self.NEW_COLUMNS.items():
            if name not in have:
                db.ensure_column("venues", name, declaration)  # another process may have added it meanwhile
        if "area_map" not in have:
            # Upgrading from before the 2025 map: the areas venues hold are old codes.
            mark_legacy(db, "venues", "coalesce(province, '') <> '' OR coalesce(ward, '') <> ''")
            db.schema("CREATE INDEX IF NOT EXISTS venues_ward ON venues (ward)")  # a commune's dashboard, officers
        if not (db.has_table("venue_members") and db.has_table("venue_invitations")):
            db.schema(
                """
                CREATE UNIQUE INDEX IF NOT EXISTS venues_public_token ON venues (public_token);
                CREATE TABLE IF NOT EXISTS venue_members (
                    venue_id BIGINT NOT NULL REFERENCES venues(id), account_id BIGINT NOT NULL REFERENCES accounts(id),
                    role TEXT NOT NULL, granted_by BIGINT, granted_ms BIGINT NOT NULL,
                    PRIMARY KEY (venue_id, account_id));
                CREATE INDEX IF NOT EXISTS venue_members_account ON venue_members (account_id);
                CREATE TABLE IF NOT EXISTS venue_invitations (
                    id {pk}, venue_id BIGINT NOT NULL REFERENCES venues(id), phone TEXT NOT NULL,
                    role TEXT NOT NULL, invited_by BIGINT NOT NULL, created_ms BIGINT NOT NULL,
                    state TEXT NOT NULL DEFAULT 'pending');
                CREATE INDEX IF NOT EXISTS venue_invitations_phone ON venue_invitations (phone, state);
                """
            )
        have = db.columns("venue_invitations")
        for name, declaration in self.INVITATION_COLUMNS.items():
            if name not in have:
                db.ensure_column("venue_invitations", name, declaration)

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- venues ------------------------------------------------------------------

    def _row(self, r: Mapping[str, Any]) -> Venue:
        return Venue(r["id"], r["name"], r["kind"] or "", r["label"] or "", r["address"] or "", r["province"] or "",
                     r["district"] or "", r["ward"] or "", r["parent_id"], r["plate"] or "",
                     r["public_token"] or "", r["created_ms"] or 0, LEGACY if r.get("area_map") == LEGACY else CURRENT,
                     r.get("closed_ms"), r.get("contact_name") or "", r.get("contact_role") or "",
                     r.get("contact_phone") or "")

    def get(self, venue_id: int) -> Venue | None:
        if not is_row_id(venue_id):
            return None
        rows = self.storage.sql.dicts("SELECT * FROM venues WHERE id = ?", [venue_id])
        return self._row(rows[0]) if rows else None

    def by_token(self, token: str) -> Venue | None:
        if not token or len(token) > 64 or "\x00" in token:
            return None
        rows = self.storage.sql.dicts("SELECT * FROM venues WHERE public_token = ?", [token])
        return self._row(rows[0]) if rows else None

    def create(self, data: VenueInput, owner: Account) -> Venue:
        """Validate and store a venue; ``owner`` becomes its first owner."""
        clean = data.validate(self.areas)
        self._check_parent(clean.parent_id, owner, None)
        venue_id = self.storage.add_venue(clean.name, clean.kind, clean.address)
        self._save_extra(venue_id, clean)
        self.storage.sql.execute(
            "INSERT INTO venue_members (venue_id, account_id, role, granted_by, granted_ms) VALUES (?, ?, 'owner', ?, ?)",
            [venue_id, owner.id, owner.id, self._now_ms()],
        )
        logger.info("venue %d created by %s", venue_id, owner.phone)
        return self.get(venue_id)

    def update(self, venue_id: int, data: VenueInput, by: Account) -> tuple[Venue, list[str]]:
        """Save the form; the venue as it is now and the fields that changed (their
        keys in CHANGE_WORDS), for the audit trail."""
        clean = data.validate(self.areas)
        self._check_parent(clean.parent_id, by, venue_id)
        before = self.get(venue_id)
        self.storage.sql.execute("UPDATE venues SET name = ?, kind = ?, address = ? WHERE id = ?",
                                 [clean.name, clean.kind, clean.address, venue_id])
        self._save_extra(venue_id, clean)
        after = self.get(venue_id)
        return after, changed_fields(before, after)

    def _save_extra(self, venue_id: int, clean: VenueInput) -> None:
        self.storage.sql.execute(
            "UPDATE venues SET label = ?, province = ?, district = '', ward = ?, area_map = ?, parent_id = ?,"
            " plate = ?, contact_name = ?, contact_role = ?, contact_phone = ?,"
            " public_token = COALESCE(public_token, ?) WHERE id = ?",
            [clean.label, clean.province, clean.ward, CURRENT, clean.parent_id, clean.plate, clean.contact_name,
             clean.contact_role, clean.contact_phone, secrets.token_urlsafe(12), venue_id],
        )

    def close(self, venue_id: int) -> Venue:
        """Close a venue: its data is kept (for the retention period, like any other),
        self check-in and enrolment codes are refused; reopening undoes it."""
        self.storage.sql.execute("UPDATE venues SET closed_ms = ? WHERE id = ? AND closed_ms IS NULL",
                                 [self._now_ms(), venue_id])
        return self.get(venue_id)

    def reopen(self, venue_id: int) -> Venue:
        self.storage.sql.execute("UPDATE venues SET closed_ms = NULL WHERE id = ?", [venue_id])
        return self.get(venue_id)

    def scans_after_closing(self, venue: Venue) -> tuple[int, int | None]:
        """(count, latest wall ms) of station scans stored for a closed venue since it
        closed: stations still at its gates, to be retired or moved (docs/web.md)."""
        if venue.closed_ms is None:
            return 0, None
        db = self.storage.sql
        stations = " AND station_id NOT IN (SELECT station_id FROM self_stations)" if db.has_table("self_stations") else ""
        row = db.one(f"SELECT count(*), max(wall_ms) FROM checkins WHERE venue_id = ? AND wall_ms >= ?{stations}",
                     [venue.id, venue.closed_ms])
        return (row[0] or 0, row[1]) if row else (0, None)

    def _check_parent(self, parent_id: int | None, by: Account, venue_id: int | None) -> None:
        if parent_id is None:
            return
        # A parent must be a venue the person may edit: otherwise anyone could hang
        # their venue under someone else's (and learn which ids exist).
        if self.role_of(parent_id, by.id) not in ("owner", "manager"):
            raise VenueError({"parent_id": "Hãy chọn một địa điểm bạn quản lý."})
        seen = set()
        current = parent_id
        while current is not None and current not in seen:
            if current == venue_id:
                raise VenueError({"parent_id": "Một địa điểm không thể nằm trong chính nó."})
            seen.add(current)
            parent = self.get(current)
            current = parent.parent_id if parent else None

    def ensure_public_token(self, venue_id: int) -> str:
        """The unguessable token in the venue's self check-in URL (made once)."""
        self.storage.sql.execute("UPDATE venues SET public_token = ? WHERE id = ? AND public_token IS NULL",
                                 [secrets.token_urlsafe(12), venue_id])
        return self.get(venue_id).public_token

    def for_account(self, account_id: int) -> list[tuple[Venue, str]]:
        """The account's venues with its role in each, by name (ASCII letters folded, as
        SQLite's NOCASE did) then id: the same order on every engine and collation."""
        rows = self.storage.sql.dicts(
            "SELECT v.*, m.role AS member_role FROM venues v JOIN venue_members m ON m.venue_id = v.id"
            " WHERE m.account_id = ?", [account_id],
        )
        rows.sort(key=lambda r: (_fold_ascii(r["name"] or ""), r["id"]))
        return [(self._row(r), r["member_role"]) for r in rows]

    def area_text(self, venue: Venue) -> str:
        return self.areas.describe_venue(venue)

    def address_text(self, venue: Venue) -> str:
        """Street address and area in one line (a vehicle may have no street address)."""
        return join_address(venue.address, self.area_text(venue))

    # -- members -----------------------------------------------------------------

    def role_of(self, venue_id: int, account_id: int | None) -> str | None:
        if account_id is None or not is_row_id(venue_id):
            return None
        return self.storage.sql.value("SELECT role FROM venue_members WHERE venue_id = ? AND account_id = ?",
                                      [venue_id, account_id])

    def members(self, venue_id: int) -> list[Member]:
        rows = self.storage.sql.rows(
            "SELECT m.account_id, a.phone, m.role, m.granted_ms FROM venue_members m JOIN accounts a"
            " ON a.id = m.account_id WHERE m.venue_id = ? ORDER BY m.granted_ms, a.phone", [venue_id],
        )
        return [Member(*r) for r in rows]

    def add_member(self, venue_id: int, account: Account, role: str) -> None:
        """Give ``account`` a role directly (operators' tools and the demo; people use
        invitations, which need the invited person's code)."""
        if role not in ROLES:
            raise VenueError({"role": "Hãy chọn vai trò."})
        self.storage.sql.execute(
            "INSERT INTO venue_members (venue_id, account_id, role, granted_ms) VALUES (?, ?, ?, ?)"
            " ON CONFLICT (venue_id, account_id) DO UPDATE SET role = excluded.role", [venue_id, account.id, role,
                                                                                    self._now_ms()])

    def _owners(self, venue_id: int) -> int:
        return self.storage.sql.value("SELECT count(*) FROM venue_members WHERE venue_id = ? AND role = 'owner'",
                                      [venue_id], 0)

    def revoke(self, venue_id: int, account_id: int) -> Member:
        """Remove a member; refuses to remove the venue's last owner."""
        db = self.storage.sql
        # Two owners removing each other at once must not leave the venue with none.
        with db.transaction(serial=f"venue-members:{venue_id}"):
            member = next((m for m in self.members(venue_id) if m.account_id == account_id), None)
            if member is None:
                raise NotFound("Người này không có quyền với địa điểm.")
            if member.role == "owner" and self._owners(venue_id) <= 1:
                raise VenueError({"member": "Địa điểm phải luôn có ít nhất một chủ sở hữu."})
            db.execute("DELETE FROM venue_members WHERE venue_id = ? AND account_id = ?", [venue_id, account_id])
        return member

    # -- invitations -------------------------------------------------------------

    def invite(self, venue_id: int, phones: list[str], role: str, by: Account, ip: str,
               may_replace: Callable[[str], bool] = lambda role: True,
               record: Callable[[Invitation, list[Invitation]], None] | None = None,
               link_base: str = "") -> list[Invitation]:
        """Invite each number to ``role``; each receives its own confirmation code.

        Every number is checked before any code is sent (:meth:`check_replaceable`);
        then each is invited by :meth:`invite_one`. A refusal to send (AuthRefused) stops
        the list there: the numbers before it are invited, that one is not.
        """
        if role not in ROLES:
            raise VenueError({"role": "Hãy chọn vai trò."})
        phones = [normalise_phone(p) for p in phones]
        for phone in phones:
            self.check_replaceable(venue_id, phone, may_replace)
        return [self.invite_one(venue_id, phone, role, by, ip, may_replace, record, link_base)[0] for phone in phones]

    def check_replaceable(self, venue_id: int, phone: str, may_replace: Callable[[str], bool]) -> list[Invitation]:
        """The number's pending invitations at the venue, which a new one would cancel;
        InvitationConflict if the inviter may not cancel one of them (a manager cannot
        undo an owner's invitation by inviting the same number as gate controller)."""
        pending = [i for i in self.pending_for_venue(venue_id) if i.phone == phone]
        for invitation in pending:
            if not may_replace(invitation.role):
                raise InvitationConflict({"phones": f"{phone} đang có lời mời với vai trò khác mà bạn không được"
                                                    " thay đổi. Hãy nhờ chủ sở hữu địa điểm."})
        return pending

    def invite_one(self, venue_id: int, phone: str, role: str, by: Account, ip: str,
                   may_replace: Callable[[str], bool] = lambda role: True,
                   record: Callable[[Invitation, list[Invitation]], None] | None = None,
                   link_base: str = "") -> tuple[Invitation, list[Invitation]]:
        """Invite one number; return the invitation and the pending ones it replaced.

        The SMS carries a link to accept (``link_base``/invitations/<id>) and a code that
        lasts INVITATION_CODE_HOURS hours. One transaction: the new invitation, its code,
        the cancelling of the earlier ones and ``record`` (the audit entries) happen
        together or not at all. So a code refused by the rate limit (AuthRefused) leaves
        no pending invitation behind and the earlier invitation as it was.
        """
        if role not in ROLES:
            raise VenueError({"role": "Hãy chọn vai trò."})
        phone = normalise_phone(phone)
        venue = self.get(venue_id)
        db = self.storage.sql
        with db.transaction(serial=f"venue-invitations:{venue_id}"):
            replaced = self.check_replaceable(venue_id, phone, may_replace)
            code = f"{secrets.randbelow(1_000_000):06d}"
            now = self._now_ms()
            invitation_id = db.insert_id(
                "INSERT INTO venue_invitations (venue_id, phone, role, invited_by, created_ms, code_expires_ms,"
                " code_wrong) VALUES (?, ?, ?, ?, ?, ?, 0)",
                [venue_id, phone, role, by.id, now, now + INVITATION_CODE_HOURS * 3_600_000],
            )
            db.execute("UPDATE venue_invitations SET code_hash = ? WHERE id = ?",
                       [self._code_hash(invitation_id, code), invitation_id])
            # Counted with the login codes: the same limits per number and per address.
            # Refused, the exception takes the invitation with it (one transaction).
            self._count_sms(phone, ip)
            link = f"{link_base.rstrip('/')}/invitations/{invitation_id}" if link_base else ""
            self.accounts.sender.send(phone, invitation_sms(by.phone, venue.name, role, code, link))
            for old in replaced:
                db.execute("UPDATE venue_invitations SET state = 'cancelled' WHERE id = ? AND state = 'pending'",
                           [old.id])
            invitation = self.invitation(invitation_id)
            if record is not None:
                record(invitation, replaced)
        return invitation, replaced

    def invitation(self, invitation_id: int) -> Invitation | None:
        if not is_row_id(invitation_id):
            return None
        row = self.storage.sql.one(
            "SELECT id, venue_id, phone, role, invited_by, created_ms, state FROM venue_invitations WHERE id = ?",
            [invitation_id],
        )
        return Invitation(*row) if row else None

    def pending_for_phone(self, phone: str) -> list[Invitation]:
        rows = self.storage.sql.rows(
            "SELECT id, venue_id, phone, role, invited_by, created_ms, state FROM venue_invitations"
            " WHERE phone = ? AND state = 'pending' ORDER BY id DESC", [phone],
        )
        return [Invitation(*r) for r in rows]

    def invitations_waiting(self, phone: str) -> list[dict]:
        """The invitations waiting for ``phone``, with their venue's name, for its pages."""
        out = []
        for inv in self.pending_for_phone(phone):
            venue = self.get(inv.venue_id)
            out.append({"id": inv.id, "venue": venue.name if venue else "", "role": inv.role})
        return out

    def pending_for_venue(self, venue_id: int) -> list[Invitation]:
        rows = self.storage.sql.rows(
            "SELECT id, venue_id, phone, role, invited_by, created_ms, state FROM venue_invitations"
            " WHERE venue_id = ? AND state = 'pending' ORDER BY id DESC", [venue_id],
        )
        return [Invitation(*r) for r in rows]

    def accept(self, invitation_id: int, account: Account, code: str, ip: str) -> Invitation:
        """The invited person confirms with the code sent to their number."""
        invitation = self.invitation(invitation_id)
        if invitation is None or invitation.phone != account.phone or invitation.state != "pending":
            raise NotFound("Không tìm thấy lời mời.")
        self._check_code(invitation, code)
        db = self.storage.sql
        with db.transaction(serial=f"venue-members:{invitation.venue_id}"):
            current = self.role_of(invitation.venue_id, account.id)
            if current == "owner" and invitation.role != "owner" and self._owners(invitation.venue_id) <= 1:
                raise VenueError({"role": "Địa điểm phải luôn có ít nhất một chủ sở hữu."})
            db.execute(
                "INSERT INTO venue_members (venue_id, account_id, role, granted_by, granted_ms) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (venue_id, account_id) DO UPDATE SET role = excluded.role,"
                " granted_by = excluded.granted_by, granted_ms = excluded.granted_ms",
                [invitation.venue_id, account.id, invitation.role, invitation.invited_by, self._now_ms()],
            )
            db.execute("UPDATE venue_invitations SET state = 'accepted' WHERE id = ?", [invitation.id])
        return self.invitation(invitation.id)

    def _code_hash(self, invitation_id: int, code: str) -> str:
        return hmac.new(self._code_key, f"{invitation_id}:{code}".encode(), hashlib.sha256).hexdigest()

    def _count_sms(self, phone: str, ip: str) -> None:
        s = self.accounts.settings
        if not self.accounts.allow(f"send:phone:{phone}", s.codes_per_phone, s.send_window_s):
            raise AuthRefused("rate_limited", "Đã gửi quá nhiều mã tới số này. Vui lòng thử lại sau 15 phút.",
                              s.send_window_s)
        if not self.accounts.allow(f"send:ip:{address_key(ip)}", s.codes_per_ip, s.send_window_s):
            raise AuthRefused("rate_limited", "Quá nhiều yêu cầu từ địa chỉ này. Vui lòng thử lại sau.",
                              s.send_window_s)

    def _check_code(self, invitation: Invitation, code: str) -> None:
        """The invitation's own code, consumed by the acceptance; AuthRefused (``expired``,
        ``bad_code``) otherwise. Only the invited number's account gets here, so the code
        confirms a person who already proved that number by logging in."""
        code = re.sub(r"\s", "", str(code or ""))
        db = self.storage.sql
        refusal = None
        with db.transaction(serial=f"venue-invitations:{invitation.venue_id}"):
            row = db.one("SELECT code_hash, code_expires_ms, code_wrong FROM venue_invitations"
                         " WHERE id = ? AND state = 'pending'", [invitation.id])
            code_hash, expires_ms, wrong = row if row else (None, 0, 0)
            if not code_hash or (wrong or 0) >= MAX_WRONG_INVITATION_CODES:
                refusal = AuthRefused("bad_code", "Mã đã bị khóa do nhập sai nhiều lần. Hãy nhờ người mời gửi lại"
                                                  " lời mời.", counted=True)
            elif self._now_ms() >= (expires_ms or 0):
                refusal = AuthRefused("expired", "Mã đã hết hạn. Hãy nhờ người mời gửi lại lời mời.", counted=True)
            elif not hmac.compare_digest(code_hash, self._code_hash(invitation.id, code)):
                burned = (wrong or 0) + 1 >= MAX_WRONG_INVITATION_CODES
                db.execute("UPDATE venue_invitations SET code_wrong = coalesce(code_wrong, 0) + 1 WHERE id = ?",
                           [invitation.id])
                refusal = AuthRefused("bad_code", "Mã không đúng." + (" Hãy nhờ người mời gửi lại lời mời."
                                                                      if burned else ""), counted=True)
        if refusal is not None:
            raise refusal  # after the commit: the wrong guess stays counted

    def cancel_invitation(self, invitation_id: int) -> Invitation:
        if is_row_id(invitation_id):
            self.storage.sql.execute(
                "UPDATE venue_invitations SET state = 'cancelled' WHERE id = ? AND state = 'pending'", [invitation_id])
        return self.invitation(invitation_id)


def invitation_sms(inviter_phone: str, venue_name: str, role: str, code: str, link: str) -> str:
    """The invitation SMS, in Vietnamese: who shares which venue in what role, the link
    to accept and the code (the same phrasing as the login codes' expiry)."""
    text = (f"{inviter_phone} chia sẻ địa điểm {quoted_name(venue_name)} cho bạn với vai trò"
            f" {ROLE_NAMES['vi'][role]}.")
    if link:
        text += f" Nhận lời mời tại {link}"
    return (f"{text} Mã xác nhận: {code}. Mã hết hạn sau {INVITATION_CODE_HOURS} giờ."
            " Không đưa mã này cho ai.")
