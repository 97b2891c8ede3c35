"""The audit trail: who changed or read what, when and from where; append-only.

Kept apart from the technical log. Action codes are dotted (``qrgate.venue.member.granted``)
and form a closed list (ACTIONS) so the history page can say each one in words. Triggers
refuse UPDATE and DELETE on the table (and TRUNCATE on PostgreSQL) with an integrity
error: not even a bug in this server can rewrite history through its database connection.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

logger = logging.getLogger(__name__)

ACTIONS: list[str] = [
    "qrgate.account.login",
    "qrgate.account.login.failed",  # a wrong or expired login code (never the code itself)
    "qrgate.account.locked",  # the failure that locked the number
    "qrgate.account.logout",
    "qrgate.venue.created",
    "qrgate.venue.updated",
    "qrgate.venue.member.invited",
    "qrgate.venue.member.granted",
    "qrgate.venue.member.revoked",
    "qrgate.venue.invitation.cancelled",  # by hand, or replaced by a new invitation (data: replaced_by)
    "qrgate.venue.invitation.code_failed",  # a wrong or expired code for accepting an invitation
    "qrgate.venue.poster.downloaded",
    "qrgate.venue.checkins.exported",
    "qrgate.checkins.unmasked.read",
    "qrgate.station.enrol_code",
    "qrgate.station.retired",
    "qrgate.station.reassigned",
    "qrgate.trace.run",
    "qrgate.retention.deleted",
]


def register_actions(*actions: str) -> None:
    """A feature module adds its own action codes (with their words in server.web.i18n)."""
    for action in actions:
        if not action.startswith("qrgate."):
            raise ValueError(f"audit action {action!r} must start with 'qrgate.'")
        if action not in ACTIONS:
            ACTIONS.append(action)


@dataclass(frozen=True, slots=True)
class AuditEntry:
    id: int
    ts_ms: int
    account_id: int | None
    phone: str
    ip: str
    action: str
    venue_id: int | None
    data: dict[str, Any]


_TABLE = """
    CREATE TABLE IF NOT EXISTS audit_log (
        id {pk}, ts_ms BIGINT NOT NULL, account_id BIGINT, phone TEXT NOT NULL DEFAULT '',
        ip TEXT NOT NULL DEFAULT '', action TEXT NOT NULL, venue_id BIGINT, data TEXT NOT NULL DEFAULT '{}');
    CREATE INDEX IF NOT EXISTS audit_log_venue ON audit_log (venue_id, id);
"""

_SCHEMA = {
    # RAISE(ABORT) is an integrity error to SQLite's clients.
    "sqlite": _TABLE + """
        CREATE TRIGGER IF NOT EXISTS audit_log_no_update BEFORE UPDATE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END;
        CREATE TRIGGER IF NOT EXISTS audit_log_no_delete BEFORE DELETE ON audit_log
            BEGIN SELECT RAISE(ABORT, 'audit_log is append-only'); END
    """,
    # SQLSTATE 23000 (integrity_constraint_violation) makes it an IntegrityError here too.
    "postgresql": _TABLE + """
        CREATE OR REPLACE FUNCTION audit_log_append_only() RETURNS trigger LANGUAGE plpgsql AS $$
            BEGIN
                RAISE EXCEPTION 'audit_log is append-only' USING ERRCODE = 'integrity_constraint_violation';
            END $$;
        CREATE OR REPLACE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
        CREATE OR REPLACE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
            FOR EACH ROW EXECUTE FUNCTION audit_log_append_only();
        CREATE OR REPLACE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
            FOR EACH STATEMENT EXECUTE FUNCTION audit_log_append_only();
    """,
}


class AuditLog:
    """Append-only log of security-relevant actions, in the server's database (``storage.sql``)."""

    def __init__(self, storage, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.clock = clock
        db = storage.sql
        # On PostgreSQL the table and its triggers are made in one transaction: replacing
        # the triggers at every start would only lock out writers for nothing.
        if db.dialect == "sqlite" or not db.has_table("audit_log"):
            db.schema(_SCHEMA)

    def record(self, action: str, *, account=None, ip: str = "", venue_id: int | None = None,
               **data: Any) -> int:
        """Append one entry; ``account`` is an accounts.Account or None (anonymous)."""
        if action not in ACTIONS:
            raise ValueError(f"unknown audit action {action!r}")
        return self.storage.sql.insert_id(
            "INSERT INTO audit_log (ts_ms, account_id, phone, ip, action, venue_id, data) VALUES (?, ?, ?, ?, ?, ?, ?)",
            [int(self.clock() * 1000), getattr(account, "id", None), getattr(account, "phone", ""), ip or "",
             action, venue_id, json.dumps(data, ensure_ascii=False, sort_keys=True)],
        )

    def for_venue(self, venue_id: int, limit: int = 200) -> list[AuditEntry]:
        """The venue's history, newest first."""
        rows = self.storage.sql.rows(
            "SELECT id, ts_ms, account_id, phone, ip, action, venue_id, data FROM audit_log"
            " WHERE venue_id = ? ORDER BY id DESC LIMIT ?", [venue_id, limit],
        )
        return [AuditEntry(*r[:7], json.loads(r[7])) for r in rows]

    def for_account(self, account_id: int, limit: int = 200) -> list[AuditEntry]:
        rows = self.storage.sql.rows(
            "SELECT id, ts_ms, account_id, phone, ip, action, venue_id, data FROM audit_log"
            " WHERE account_id = ? ORDER BY id DESC LIMIT ?", [account_id, limit],
        )
        return [AuditEntry(*r[:7], json.loads(r[7])) for r in rows]
