"""Who receives the weekly reports by e-mail: addresses an owner or manager sets for
their unit, and the one address a health officer sets for themself (their area reports).

Accounts are phone numbers; an e-mail address is the only thing added, kept until it is
removed (or, for an officer, until their last area is withdrawn: then nothing is sent to
it), with the language the reports are written in for it. Addresses are not verified by
a message: a report holds counts only, never personal data (docs/reports.md, "E-mail").
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass

from qrgate.errors import UserError
from server.web import i18n

UNIT_ADDRESSES_MAX = 5
EMAIL_MAX = 254
# A plain address: a dot-atom local part (RFC 5322) at a domain name with a dot; no
# quoted local parts, comments or spaces, so nothing can break out of a mail header.
_EMAIL = re.compile(r"[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
                    r"@(?:[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?\.)+[A-Za-z]{2,63}", re.ASCII)

i18n.register({
    "report.email_bad": ("Địa chỉ thư điện tử không hợp lệ, ví dụ: baocao@congty.vn.",
                         "Not a valid e-mail address, e.g. reports@company.vn."),
    "report.email_too_many": ("Mỗi đơn vị nhận báo cáo ở tối đa {n} địa chỉ.",
                              "A unit's reports go to at most {n} addresses."),
})


class RecipientError(UserError):
    """An address that cannot be kept; ``key`` is the text that says why (i18n)."""

    def __init__(self, key: str, **values):
        super().__init__(i18n.translate("en", key, **values))
        self.key = key
        self.values = values


@dataclass(frozen=True)
class Address:
    email: str
    lang: str
    added_ms: int


def clean_email(text: str) -> str:
    """The address as kept (domain in lower case), or RecipientError."""
    value = (text or "").strip()
    if len(value) > EMAIL_MAX or not _EMAIL.fullmatch(value):
        raise RecipientError("report.email_bad")
    local, domain = value.rsplit("@", 1)
    return f"{local}@{domain.lower()}"


def clean_lang(lang: str) -> str:
    return lang if lang in i18n.LANGUAGES else "vi"


class ReportRecipients:
    """The addresses, in the server's database (``storage.sql``)."""

    def __init__(self, storage, clock: Callable[[], float] = time.time):
        self.db = storage.sql
        self.clock = clock
        if not (self.db.has_table("unit_report_addresses") and self.db.has_table("officer_report_addresses")):
            self.db.schema(
                """
                CREATE TABLE IF NOT EXISTS unit_report_addresses (
                    venue_id BIGINT NOT NULL, email TEXT NOT NULL, lang TEXT NOT NULL, added_by BIGINT,
                    added_ms BIGINT NOT NULL, PRIMARY KEY (venue_id, email));
                CREATE TABLE IF NOT EXISTS officer_report_addresses (
                    account_id BIGINT PRIMARY KEY, email TEXT NOT NULL, lang TEXT NOT NULL,
                    added_ms BIGINT NOT NULL);
                """
            )

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    # -- a unit's addresses -------------------------------------------------------------

    def for_unit(self, head_id: int) -> list[Address]:
        rows = self.db.rows("SELECT email, lang, added_ms FROM unit_report_addresses WHERE venue_id = ?"
                            " ORDER BY added_ms, email", [head_id])
        return [Address(*r) for r in rows]

    def add_unit(self, head_id: int, email: str, lang: str, by_account: int | None) -> str:
        """Add (or change the language of) one of the unit's addresses; return it as kept."""
        email = clean_email(email)
        with self.db.transaction(serial=f"unit-report-addresses:{head_id}") as db:
            known = {a.email for a in self.for_unit(head_id)}
            if email not in known and len(known) >= UNIT_ADDRESSES_MAX:
                raise RecipientError("report.email_too_many", n=UNIT_ADDRESSES_MAX)
            db.execute("INSERT INTO unit_report_addresses (venue_id, email, lang, added_by, added_ms)"
                       " VALUES (?, ?, ?, ?, ?) ON CONFLICT (venue_id, email) DO UPDATE SET lang = excluded.lang",
                       [head_id, email, clean_lang(lang), by_account, self._now_ms()])
        return email

    def remove_unit(self, head_id: int, email: str) -> bool:
        email = (email or "").strip()
        if len(email) > EMAIL_MAX or not _EMAIL.fullmatch(email):
            return False  # no address kept can look like this (and PostgreSQL refuses NUL in text)
        return self.db.execute("DELETE FROM unit_report_addresses WHERE venue_id = ? AND email = ?",
                               [head_id, email]) > 0

    # -- an officer's address -------------------------------------------------------------

    def for_officer(self, account_id: int) -> Address | None:
        row = self.db.one("SELECT email, lang, added_ms FROM officer_report_addresses WHERE account_id = ?",
                          [account_id])
        return Address(*row) if row else None

    def set_officer(self, account_id: int, email: str, lang: str) -> str:
        email = clean_email(email)
        self.db.execute("INSERT INTO officer_report_addresses (account_id, email, lang, added_ms) VALUES (?, ?, ?, ?)"
                        " ON CONFLICT (account_id) DO UPDATE SET email = excluded.email, lang = excluded.lang,"
                        " added_ms = excluded.added_ms", [account_id, email, clean_lang(lang), self._now_ms()])
        return email

    def clear_officer(self, account_id: int) -> bool:
        return self.db.execute("DELETE FROM officer_report_addresses WHERE account_id = ?", [account_id]) > 0

    def for_area(self, area_code: str) -> list[Address]:
        """The addresses of the officers who hold ``area_code`` today."""
        if not self.db.has_table("area_officers"):
            return []
        rows = self.db.rows(
            "SELECT a.email, a.lang, a.added_ms FROM officer_report_addresses a JOIN area_officers o"
            " ON o.account_id = a.account_id WHERE o.area_code = ? AND coalesce(o.area_map, '') <> 'legacy'"
            " ORDER BY a.email", [area_code])
        seen, out = set(), []
        for r in rows:
            if r[0] not in seen:
                seen.add(r[0])
                out.append(Address(*r))
        return out
