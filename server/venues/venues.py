"""Venues with their area, address, parent venue and vehicle plate; members by role;
sharing invitations confirmed by a one-time code sent to the invited number."""

from __future__ import annotations

import logging
import re
import secrets
import time
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from qrgate.errors import UserError
from server.accounts.accounts import Account, Accounts, normalise_phone
from server.areas.areas import AreaDirectory
from server.venues.permissions import ROLE_NAMES, ROLES
from server.accounts.sms import quoted_name
from server.web import i18n

logger = logging.getLogger(__name__)

VENUE_KINDS = {
    "office": ("Cơ quan, công sở", "Office"),
    "factory": ("Nhà máy, xí nghiệp", "Factory"),
    "school": ("Trường học", "School"),
    "hospital": ("Bệnh viện, cơ sở y tế", "Hospital, clinic"),
    "market": ("Chợ, siêu thị, cửa hàng", "Market, shop"),
    "restaurant": ("Nhà hàng, quán ăn", "Restaurant"),
    "lodging": ("Cơ sở lưu trú", "Lodging"),
    "public": ("Địa điểm công cộng", "Public place"),
    "event": ("Sự kiện", "Event"),
    "vehicle": ("Phương tiện (xe đưa đón)", "Vehicle (shuttle)"),
    "other": ("Khác", "Other"),
}
i18n.register({f"kind.{kind}": pair for kind, pair in VENUE_KINDS.items()})

LIMITS = {"name": 200, "label": 60, "address": 300}

# 2-digit province number, a series of one or two letters optionally followed by a
# digit (51B, 30LD, 29D1), then four digits or five written NNN.NN: 51B-123.45, 30A-1234.
_PLATE = re.compile(r"(\d{2})([A-Z]{1,2}\d??)-?(\d{4}|\d{3}\.?\d{2})", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_ASCII_UPPER_TO_LOWER = str.maketrans("ABCDEFGHIJKLMNOPQRSTUVWXYZ", "abcdefghijklmnopqrstuvwxyz")
ROW_ID_MIN, ROW_ID_MAX = -(2**63), 2**63 - 1  # a BIGINT on both engines


class VenueError(UserError):
    """Venue input that cannot be saved; ``problems`` maps each field to a message."""

    def __init__(self, problems: Mapping[str, str]):
        super().__init__("; ".join(problems.values()))
        self.problems = dict(problems)


class InvitationConflict(VenueError):
    """A new invitation would cancel a pending one the inviter may not cancel."""


class NotFound(UserError):
    """No such venue, member or invitation (or not one this account may know about)."""


def normalise_plate(text: str) -> str:
    """``51b 12345`` -> ``51B-123.45``; ``30a-1234`` -> ``30A-1234``; VenueError if not a plate."""
    compact = re.sub(r"[\s]", "", (text or "").upper())
    match = _PLATE.fullmatch(compact)
    if not match:
        raise VenueError({"plate": "Biển số không đúng dạng, ví dụ 51B-123.45 hoặc 30A-1234."})
    digits = match.group(3).replace(".", "")
    number = digits if len(digits) == 4 else f"{digits[:3]}.{digits[3:]}"
    return f"{match.group(1)}{match.group(2)}-{number}"


def is_row_id(value: Any) -> bool:
    """Whether ``value`` can be a row id: a whole number that fits a BIGINT column. A
    larger one (from a URL or a form) names no row; the engines would refuse to bind it."""
    return isinstance(value, int) and not isinstance(value, bool) and ROW_ID_MIN <= value <= ROW_ID_MAX


def _fold_ascii(text: str) -> str:
    return text.translate(_ASCII_UPPER_TO_LOWER)


def clean_text(value: Any) -> str:
    """Form text as stored: NFC, control characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(value or ""))
    return " ".join(_CONTROL.sub("", text).split())


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


@dataclass
class VenueInput:
    """What the venue form sends; ``validate`` turns it into clean values or VenueError."""

    name: str = ""
    kind: str = ""
    label: str = ""
    address: str = ""
    province: str = ""
    district: str = ""
    ward: str = ""
    parent_id: int | None = None
    plate: str = ""

    def validate(self, areas: AreaDirectory) -> VenueInput:
        problems: dict[str, str] = {}
        values = {k: clean_text(getattr(self, k)) for k in ("name", "kind", "label", "address", "province",
                                                            "district", "ward", "plate")}
        if values["kind"] not in VENUE_KINDS:
            problems["kind"] = "Hãy chọn loại địa điểm."
        plate = ""
        if values["kind"] == "vehicle":
            try:
                plate = normalise_plate(values["plate"])
            except VenueError as exc:
                problems.update(exc.problems)
            if not values["name"] and plate:
                values["name"] = f"Xe BKS {plate}"
        elif values["plate"]:
            problems["plate"] = "Chỉ phương tiện mới có biển số."
        if not values["name"]:
            problems["name"] = "Hãy nhập tên địa điểm."
        if values["kind"] != "vehicle" and not values["address"]:
            problems["address"] = "Hãy nhập địa chỉ: số nhà, đường (hoặc thôn, tổ)."
        for key, limit in LIMITS.items():
            if len(values[key]) > limit:
                problems[key] = f"Quá dài: tối đa {limit} ký tự (đang có {len(values[key])})."
        for key, message in areas.check(values["province"], values["district"], values["ward"]):
            problems.setdefault(key, message)
        if problems:
            raise VenueError(problems)
        return VenueInput(values["name"], values["kind"], values["label"], values["address"], values["province"],
                          values["district"], values["ward"], self.parent_id, plate)


class VenueDirectory:
    """Venues, members and invitations in the server's database (``storage.sql``).

    Extends the ``venues`` table made by the storage with the columns it needs (an
    idempotent migration), so ``Storage.add_venue`` keeps working.
    """

    NEW_COLUMNS = {"label": "TEXT", "province": "TEXT", "district": "TEXT", "ward": "TEXT", "parent_id": "BIGINT",
                   "plate": "TEXT", "public_token": "TEXT"}

    def __init__(self, storage, accounts: Accounts, areas: AreaDirectory, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.accounts = accounts
        self.areas = areas
        self.clock = clock
        self._migrate()

    def _migrate(self) -> None:
        db = self.storage.sql
        have = db.columns("venues")
        for name, declaration in self.NEW_COLUMNS.items():
            if name not in have:
                db.ensure_column("venues", name, declaration)  # another process may have added it meanwhile
        if db.has_table("venue_members") and db.has_table("venue_invitations"):
            return
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

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- venues ------------------------------------------------------------------

    def _row(self, r: Mapping[str, Any]) -> Venue:
        return Venue(r["id"], r["name"], r["kind"] or "", r["label"] or "", r["address"] or "", r["province"] or "",
                     r["district"] or "", r["ward"] or "", r["parent_id"], r["plate"] or "",
                     r["public_token"] or "", r["created_ms"] or 0)

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

    def update(self, venue_id: int, data: VenueInput, by: Account) -> Venue:
        clean = data.validate(self.areas)
        self._check_parent(clean.parent_id, by, venue_id)
        self.storage.sql.execute("UPDATE venues SET name = ?, kind = ?, address = ? WHERE id = ?",
                                 [clean.name, clean.kind, clean.address, venue_id])
        self._save_extra(venue_id, clean)
        return self.get(venue_id)

    def _save_extra(self, venue_id: int, clean: VenueInput) -> None:
        self.storage.sql.execute(
            "UPDATE venues SET label = ?, province = ?, district = ?, ward = ?, parent_id = ?, plate = ?,"
            " public_token = COALESCE(public_token, ?) WHERE id = ?",
            [clean.label, clean.province, clean.district, clean.ward, clean.parent_id, clean.plate,
             secrets.token_urlsafe(12), venue_id],
        )

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
        return self.areas.describe(venue.province, venue.district, venue.ward)

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
               record: Callable[[Invitation, list[Invitation]], None] | None = None) -> list[Invitation]:
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
        return [self.invite_one(venue_id, phone, role, by, ip, may_replace, record)[0] for phone in phones]

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
                   ) -> tuple[Invitation, list[Invitation]]:
        """Invite one number; return the invitation and the pending ones it replaced.

        One transaction: the new invitation, its code, the cancelling of the earlier
        ones and ``record`` (the audit entries) happen together or not at all. So a code
        refused by the rate limit (AuthRefused) leaves no pending invitation behind and
        the earlier invitation as it was.
        """
        if role not in ROLES:
            raise VenueError({"role": "Hãy chọn vai trò."})
        phone = normalise_phone(phone)
        venue = self.get(venue_id)
        db = self.storage.sql
        with db.transaction(serial=f"venue-invitations:{venue_id}"):
            replaced = self.check_replaceable(venue_id, phone, may_replace)
            invitation_id = db.insert_id(
                "INSERT INTO venue_invitations (venue_id, phone, role, invited_by, created_ms) VALUES (?, ?, ?, ?, ?)",
                [venue_id, phone, role, by.id, self._now_ms()],
            )
            # The code goes out inside the transaction: refused, it takes the invitation with it.
            self.accounts.send_code(
                phone, f"share:{invitation_id}", ip,
                message=f"{by.phone} chia sẻ địa điểm {quoted_name(venue.name)} cho bạn với vai trò"
                        f" {ROLE_NAMES['vi'][role]}. Mã xác nhận: {{code}}",
            )
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
        self.accounts.check_code(account.phone, f"share:{invitation.id}", code, ip)
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

    def cancel_invitation(self, invitation_id: int) -> Invitation:
        if is_row_id(invitation_id):
            self.storage.sql.execute(
                "UPDATE venue_invitations SET state = 'cancelled' WHERE id = ? AND state = 'pending'", [invitation_id])
        return self.invitation(invitation_id)
