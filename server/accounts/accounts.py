"""Accounts by phone number: one-time codes, rate limits, lock-out and sessions.

Follows NIST SP 800-63B for out-of-band codes: six random digits, valid five minutes,
single use, compared in constant time, and a lock-out after ten consecutive failures
for a number (far below the 100 the guideline allows). Only HMACs of codes and hashes
of session tokens are stored, so a copy of the database opens no session.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import logging
import re
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass

from qrgate.errors import UserError

logger = logging.getLogger(__name__)

_SEPARATORS = re.compile(r"[\s.\-()]")
_NATIONAL = re.compile(r"0[1-9]\d{8,9}", re.ASCII)  # 10-digit mobiles, 11-digit landlines


class PhoneError(UserError):
    """A phone number that cannot be a Vietnamese number; the message is for the user."""


class AuthRefused(UserError):
    """A code request or check was refused; ``reason`` is one of
    ``rate_limited``, ``locked``, ``bad_code``, ``expired``. ``counted`` says the refusal
    was a failed check that counts towards the lock-out (``bad_code``, ``expired``), and
    ``locked_now`` that this very failure locked the number."""

    def __init__(self, reason: str, message: str, retry_after_s: int = 0, *, counted: bool = False,
                 locked_now: bool = False):
        super().__init__(message)
        self.reason = reason
        self.retry_after_s = retry_after_s
        self.counted = counted
        self.locked_now = locked_now


def address_key(ip: str) -> str:
    """What a per-address limit counts under: the IPv4 address, or the /64 network of an
    IPv6 one (one subscriber line holds a whole /64, so counting single IPv6 addresses
    would give each attacker billions of fresh limits)."""
    try:
        address = ipaddress.ip_address(ip)
    except ValueError:
        return ip
    if address.version == 6:
        if address.ipv4_mapped is not None:
            return str(address.ipv4_mapped)
        return str(ipaddress.IPv6Network((address, 64), strict=False))
    return str(address)


def normalise_phone(text: str) -> str:
    """One spelling per number: ``0912 486 419``, ``+84912486419`` and ``84912486419``
    all become ``0912486419`` (the national form people read and type)."""
    digits = _SEPARATORS.sub("", str(text or ""))
    if digits.startswith("+84"):
        digits = "0" + digits[3:]
    elif digits.startswith("0084"):
        digits = "0" + digits[4:]
    elif digits.startswith("84") and len(digits) in (11, 12):
        digits = "0" + digits[2:]
    if not _NATIONAL.fullmatch(digits):
        raise PhoneError("Số điện thoại không hợp lệ: hãy nhập 10 chữ số, ví dụ 0912 486 419 hoặc +84912486419.")
    return digits


def parse_phone_list(text: str, limit: int = 20) -> list[str]:
    """Several numbers separated by commas (or semicolons, new lines), normalised and
    de-duplicated in order; raises PhoneError naming the first bad one."""
    parts = [p.strip() for p in re.split(r"[,;\n]", text or "") if p.strip()]
    if not parts:
        raise PhoneError("Hãy nhập ít nhất một số điện thoại.")
    if len(parts) > limit:
        raise PhoneError(f"Tối đa {limit} số điện thoại mỗi lần.")
    phones: list[str] = []
    for part in parts:
        try:
            phone = normalise_phone(part)
        except PhoneError:
            shown = part if len(part) <= 30 else part[:30] + "…"
            raise PhoneError(f"Số điện thoại không hợp lệ: {shown}") from None
        if phone not in phones:
            phones.append(phone)
    return phones


@dataclass(frozen=True, slots=True)
class AuthSettings:
    """Limits for codes and sessions; the defaults follow NIST SP 800-63B."""

    code_ttl_s: int = 300
    max_wrong_per_code: int = 5  # then the code is burned and a new one must be sent
    max_failures: int = 10  # consecutive failures for a number before it is locked
    lockout_s: int = 900
    codes_per_phone: int = 3  # codes sent to one number per window
    codes_per_ip: int = 20  # codes requested from one address per window
    send_window_s: int = 900
    failures_per_ip: int = 50  # failed checks from one address per lock-out window
    session_ttl_s: int = 12 * 3600
    link_ttl_s: int = 900


@dataclass(frozen=True, slots=True)
class Account:
    id: int
    phone: str
    is_operator: bool


def server_secret(storage, name: str, nbytes: int = 32) -> bytes:
    """A random secret kept in the database, made on first use (HMAC keys, server keys).
    Two processes starting together agree on one: the first insert wins."""
    db = storage.sql
    if not db.has_table("server_secrets"):
        db.schema("CREATE TABLE IF NOT EXISTS server_secrets (name TEXT PRIMARY KEY, value {blob} NOT NULL)")
    db.execute("INSERT INTO server_secrets (name, value) VALUES (?, ?) ON CONFLICT (name) DO NOTHING",
               [name, secrets.token_bytes(nbytes)])
    return bytes(db.value("SELECT value FROM server_secrets WHERE name = ?", [name]))


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


class Accounts:
    """Accounts, one-time codes and sessions, in the server's database (``storage.sql``).

    ``clock`` returns seconds since the epoch; tests pass a fake one to step over expiry.
    """

    def __init__(self, storage, sender, settings: AuthSettings = AuthSettings(),
                 clock: Callable[[], float] = time.time):
        self.storage = storage
        self.sender = sender
        self.settings = settings
        self.clock = clock
        self._create()
        self._key = server_secret(storage, "auth-hmac")

    def _create(self) -> None:
        self.storage.sql.schema(
            """
            CREATE TABLE IF NOT EXISTS accounts (
                id {pk}, phone TEXT NOT NULL UNIQUE, is_operator BIGINT NOT NULL DEFAULT 0,
                created_ms BIGINT NOT NULL, last_login_ms BIGINT);
            CREATE TABLE IF NOT EXISTS otp_codes (
                id {pk}, phone TEXT NOT NULL, purpose TEXT NOT NULL, code_hash TEXT NOT NULL,
                created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL, wrong BIGINT NOT NULL DEFAULT 0,
                state TEXT NOT NULL DEFAULT 'active');
            CREATE INDEX IF NOT EXISTS otp_codes_lookup ON otp_codes (phone, purpose, state);
            CREATE INDEX IF NOT EXISTS otp_codes_hash ON otp_codes (code_hash);
            CREATE TABLE IF NOT EXISTS auth_events (key TEXT NOT NULL, ts_ms BIGINT NOT NULL);
            CREATE INDEX IF NOT EXISTS auth_events_key ON auth_events (key, ts_ms);
            CREATE TABLE IF NOT EXISTS sessions (
                token_hash TEXT PRIMARY KEY, account_id BIGINT NOT NULL REFERENCES accounts(id),
                created_ms BIGINT NOT NULL, expires_ms BIGINT NOT NULL)
            """
        )

    # -- helpers -----------------------------------------------------------------

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def _code_hash(self, purpose: str, phone: str, code: str) -> str:
        return hmac.new(self._key, f"{purpose}|{phone}|{code}".encode(), hashlib.sha256).hexdigest()

    def _count(self, key: str, window_s: int) -> int:
        since = self._now_ms() - window_s * 1000
        return self.storage.sql.value("SELECT count(*) FROM auth_events WHERE key = ? AND ts_ms > ?", [key, since])

    def _event(self, key: str) -> None:
        now = self._now_ms()
        db = self.storage.sql
        db.execute("INSERT INTO auth_events (key, ts_ms) VALUES (?, ?)", [key, now])
        # Events older than a day never count again: keep the table small.
        db.execute("DELETE FROM auth_events WHERE ts_ms < ?", [now - 86_400_000])

    # -- one-time codes ----------------------------------------------------------

    def send_code(self, phone: str, purpose: str, ip: str, message: str | None = None) -> None:
        """Send a new six-digit code for ``purpose`` (``login``, ``share:<id>``) to
        ``phone``; earlier codes for the same purpose stop working."""
        phone = normalise_phone(phone)
        ip = address_key(ip)
        s = self.settings
        code = f"{secrets.randbelow(1_000_000):06d}"
        db = self.storage.sql
        # Counted and recorded as one step: requests arriving together, even at
        # different server workers, cannot all pass under the limit.
        with db.transaction(serial="auth:send"):
            if self._count(f"send:phone:{phone}", s.send_window_s) >= s.codes_per_phone:
                raise AuthRefused("rate_limited", "Đã gửi quá nhiều mã tới số này. Vui lòng thử lại sau 15 phút.",
                                  s.send_window_s)
            if self._count(f"send:ip:{ip}", s.send_window_s) >= s.codes_per_ip:
                raise AuthRefused("rate_limited", "Quá nhiều yêu cầu từ địa chỉ này. Vui lòng thử lại sau.",
                                  s.send_window_s)
            self._event(f"send:phone:{phone}")
            self._event(f"send:ip:{ip}")
            now = self._now_ms()
            db.execute("UPDATE otp_codes SET state = 'superseded' WHERE phone = ? AND purpose = ? AND state = 'active'",
                       [phone, purpose])
            db.execute(
                "INSERT INTO otp_codes (phone, purpose, code_hash, created_ms, expires_ms) VALUES (?, ?, ?, ?, ?)",
                [phone, purpose, self._code_hash(purpose, phone, code), now, now + s.code_ttl_s * 1000],
            )
        minutes = max(1, s.code_ttl_s // 60)
        # replace(), not format(): a message may quote a name someone typed, braces and all.
        text = (message or "Mã xác thực QR gate của bạn là {code}").replace("{code}", code)
        self.sender.send(phone, f"{text}. Mã hết hạn sau {minutes} phút. Không đưa mã này cho ai.")
        logger.info("one-time code for %s sent to %s", purpose, phone)

    def locked_for_s(self, phone: str) -> int:
        """Seconds until ``phone`` may try a code again (0: not locked)."""
        s = self.settings
        since = self._now_ms() - s.lockout_s * 1000
        rows = self.storage.sql.rows(
            "SELECT ts_ms FROM auth_events WHERE key = ? AND ts_ms > ? ORDER BY ts_ms DESC",
            [f"fail:phone:{phone}", since],
        )
        if len(rows) < s.max_failures:
            return 0
        return max(1, (rows[s.max_failures - 1][0] + s.lockout_s * 1000 - self._now_ms()) // 1000)

    def check_code(self, phone: str, purpose: str, code: str, ip: str) -> str:
        """Consume the code if it is right; return the normalised phone. Raises
        AuthRefused (``locked``, ``rate_limited``, ``expired``, ``bad_code``)."""
        phone = normalise_phone(phone)
        ip = address_key(ip)
        code = re.sub(r"\s", "", str(code or ""))
        # One check at a time: guesses sent together cannot slip past the lock-out or the
        # per-code limit, and a code is consumed once. The refusal is raised after the
        # commit, so the failure it counted stays counted.
        with self.storage.sql.transaction(serial="auth:check"):
            refusal = self._check_code(phone, purpose, code, ip)
        if refusal is not None:
            raise refusal
        return phone

    def _check_code(self, phone: str, purpose: str, code: str, ip: str) -> AuthRefused | None:
        s = self.settings
        wait = self.locked_for_s(phone)
        if wait:
            return AuthRefused("locked", f"Số này tạm bị khóa do nhập sai nhiều lần. Thử lại sau {wait // 60 + 1} phút.",
                               wait)
        if self._count(f"fail:ip:{ip}", s.lockout_s) >= s.failures_per_ip:
            return AuthRefused("rate_limited", "Quá nhiều lần nhập sai từ địa chỉ này. Vui lòng thử lại sau.",
                               s.lockout_s)
        db = self.storage.sql
        row = db.one(
            "SELECT id, code_hash, expires_ms, wrong FROM otp_codes WHERE phone = ? AND purpose = ? AND state = 'active'"
            " ORDER BY id DESC LIMIT 1", [phone, purpose],
        )
        if row is None:
            return self._fail(phone, ip, "bad_code", "Mã không đúng hoặc đã được dùng. Hãy yêu cầu mã mới.")
        code_id, code_hash, expires_ms, wrong = row
        if self._now_ms() >= expires_ms:
            db.execute("UPDATE otp_codes SET state = 'expired' WHERE id = ? AND state = 'active'", [code_id])
            return self._fail(phone, ip, "expired", "Mã đã hết hạn. Hãy yêu cầu mã mới.")
        if not hmac.compare_digest(code_hash, self._code_hash(purpose, phone, code)):
            burned = wrong + 1 >= s.max_wrong_per_code
            db.execute("UPDATE otp_codes SET wrong = wrong + 1, state = ? WHERE id = ? AND state = 'active'",
                       ["burned" if burned else "active", code_id])
            return self._fail(phone, ip, "bad_code", "Mã không đúng." + (" Hãy yêu cầu mã mới." if burned else ""))
        if db.execute("UPDATE otp_codes SET state = 'used' WHERE id = ? AND state = 'active'", [code_id]) != 1:
            return AuthRefused("bad_code", "Mã không đúng hoặc đã được dùng. Hãy yêu cầu mã mới.")
        db.execute("DELETE FROM auth_events WHERE key = ?", [f"fail:phone:{phone}"])
        return None

    def allow(self, key: str, limit: int, window_s: int) -> bool:
        """Count one event under ``key``; False if ``limit`` were already counted within
        ``window_s`` (used for per-address limits such as self check-in)."""
        with self.storage.sql.transaction(serial=f"auth:{key}"):
            if self._count(key, window_s) >= limit:
                return False
            self._event(key)
        return True

    def _fail(self, phone: str, ip: str, reason: str, message: str) -> AuthRefused:
        """Count a failed check against the number and the address; the refusal to raise."""
        self._event(f"fail:phone:{phone}")
        self._event(f"fail:ip:{ip}")
        logger.info("wrong one-time code for %s from %s", phone, ip)
        return AuthRefused(reason, message, counted=True, locked_now=self.locked_for_s(phone) > 0)

    # -- accounts ----------------------------------------------------------------

    def account_for_phone(self, phone: str, create: bool = True) -> Account | None:
        phone = normalise_phone(phone)
        db = self.storage.sql
        if create:
            db.execute("INSERT INTO accounts (phone, created_ms) VALUES (?, ?) ON CONFLICT (phone) DO NOTHING",
                       [phone, self._now_ms()])
        row = db.one("SELECT id, phone, is_operator FROM accounts WHERE phone = ?", [phone])
        return Account(row[0], row[1], bool(row[2])) if row else None

    def account(self, account_id: int) -> Account | None:
        row = self.storage.sql.one("SELECT id, phone, is_operator FROM accounts WHERE id = ?", [account_id])
        return Account(row[0], row[1], bool(row[2])) if row else None

    def set_operator(self, phone: str, is_operator: bool = True) -> Account:
        account = self.account_for_phone(phone)
        self.storage.sql.execute("UPDATE accounts SET is_operator = ? WHERE id = ?", [int(is_operator), account.id])
        return self.account(account.id)

    # -- sessions ----------------------------------------------------------------

    def start_session(self, account: Account, old_token: str | None = None) -> str:
        """A new session token for ``account``; the old one (if any) stops working, so a
        token planted before login is worthless after it (no session fixation)."""
        if old_token:
            self.end_session(old_token)
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        db = self.storage.sql
        db.execute("INSERT INTO sessions (token_hash, account_id, created_ms, expires_ms) VALUES (?, ?, ?, ?)",
                   [_token_hash(token), account.id, now, now + self.settings.session_ttl_s * 1000])
        db.execute("UPDATE accounts SET last_login_ms = ? WHERE id = ?", [now, account.id])
        db.execute("DELETE FROM sessions WHERE expires_ms < ?", [now])
        return token

    def session_account(self, token: str | None) -> Account | None:
        if not token or len(token) > 200:
            return None
        row = self.storage.sql.one(
            "SELECT account_id, expires_ms FROM sessions WHERE token_hash = ?", [_token_hash(token)])
        if row is None or row[1] <= self._now_ms():
            return None
        return self.account(row[0])

    def end_session(self, token: str | None) -> None:
        if token:
            self.storage.sql.execute("DELETE FROM sessions WHERE token_hash = ?", [_token_hash(token)])

    def end_all_sessions(self, account_id: int) -> int:
        """Log the account out on every device (a lost phone, a shared computer); how many
        sessions ended."""
        return self.storage.sql.execute("DELETE FROM sessions WHERE account_id = ?", [account_id])

    def session_count(self, account_id: int) -> int:
        """The account's sessions that still work (each a browser or device logged in)."""
        return self.storage.sql.value("SELECT count(*) FROM sessions WHERE account_id = ? AND expires_ms > ?",
                                      [account_id, self._now_ms()], 0)

    def csrf_token(self, binding: str) -> str:
        """The anti-forgery token for forms: an HMAC of the visitor's session (or
        pre-session) cookie, so a token from one browser is useless in another."""
        return hmac.new(self._key, f"csrf|{binding}".encode(), hashlib.sha256).hexdigest()

    def csrf_ok(self, binding: str, token: str | None) -> bool:
        return bool(binding and token) and hmac.compare_digest(self.csrf_token(binding), str(token))

    # -- login links (operators, the demo) -----------------------------------------

    def issue_login_link(self, phone: str) -> str:
        """A single-use token that logs ``phone`` in (for an operator's first login and
        the demo); valid ``link_ttl_s`` seconds."""
        account = self.account_for_phone(phone)
        token = secrets.token_urlsafe(32)
        now = self._now_ms()
        self.storage.sql.execute(
            "INSERT INTO otp_codes (phone, purpose, code_hash, created_ms, expires_ms) VALUES (?, 'link', ?, ?, ?)",
            [account.phone, self._code_hash("link", "", token), now, now + self.settings.link_ttl_s * 1000],
        )
        return token

    def redeem_login_link(self, token: str) -> Account | None:
        db = self.storage.sql
        row = db.one(
            "SELECT id, phone, expires_ms FROM otp_codes WHERE purpose = 'link' AND state = 'active' AND code_hash = ?",
            [self._code_hash("link", "", str(token or ""))],
        )
        if row is None or row[2] <= self._now_ms():
            return None
        if db.execute("UPDATE otp_codes SET state = 'used' WHERE id = ? AND state = 'active'", [row[0]]) != 1:
            return None
        return self.account_for_phone(row[1])
