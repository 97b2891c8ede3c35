"""Weekly reports by e-mail: an outbox in the database and its delivery over SMTP
(the standard library's smtplib and email; docs/reports.md, "E-mail").

The schedule queues one message per report and address (``report_mail``) after the
report is kept; sending happens apart, on the scheduler's pool (``deliver_due``), so a
slow or absent mail server never holds the schedule up. A message that cannot be sent
(connection refused, time-out, a 4xx answer) is tried again after 1, 5, 15 and 30
minutes, then every hour, for ``[mail] retry_hours``; a permanent refusal (a 5xx answer
for the recipient or the message) fails at once. A round stops at the first failure of
the connection (the others wait for the next round), so a hung server costs one
time-out a round, not one per message. Every failure is logged; a message
given up is marked failed with its reason, shown beside the report, which stays on the
server whatever happens to its e-mail.

Several server processes may share the database: a message is claimed by an UPDATE
before it is sent, and a claim older than LEASE_S (a process that died while sending)
may be taken again, so a message is sent at least once and, but for such a death,
exactly once.
"""

from __future__ import annotations

import logging
import re
import smtplib
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from email.message import EmailMessage
from email.utils import formatdate, make_msgid, parseaddr
from pathlib import Path

from qrgate.config import resolve
from server.audit import register_actions
from server.config import MailSection
from server.reports.report_files import week_words
from server.storage.sql import in_list
from server.web import i18n

logger = logging.getLogger(__name__)

RETRY_DELAYS_S = (60, 300, 900, 1800, 3600)  # then every hour
LEASE_S = 600  # a claim older than this was made by a process that died while sending
BATCH = 50  # messages sent per connection and round

register_actions("qrgate.report.mailed", "qrgate.report.mail_failed")
i18n.register({
    "mail.state.pending": ("Đang chờ gửi", "Waiting to be sent"),
    "mail.state.sending": ("Đang gửi", "Sending"),
    "mail.state.sent": ("Đã gửi", "Sent"),
    "mail.state.failed": ("Không gửi được", "Could not be sent"),
    "mail.problem.refused": ("máy chủ thư từ chối (mã {code})", "the mail server refused (code {code})"),
    "mail.problem.timeout": ("máy chủ thư không trả lời", "the mail server did not answer"),
    "mail.problem.tls": ("không lập được kết nối bảo mật (TLS) với máy chủ thư",
                         "no secure (TLS) connection to the mail server"),
    "mail.problem.connect": ("không kết nối được máy chủ thư", "the mail server could not be reached"),
    "mail.problem.compose": ("không lập được thư từ báo cáo", "the message could not be made from the report"),
    "mail.problem.other": ("lỗi khi gửi thư", "sending failed"),
}, history={
    "qrgate.report.mailed": ("Gửi báo cáo tuần {week} tới {to}", "Sent weekly report {week} to {to}"),
    "qrgate.report.mail_failed": ("Không gửi được báo cáo tuần {week} tới {to}: {error}",
                                  "Could not send weekly report {week} to {to}: {error}"),
})


class PermanentRefusal(Exception):
    """The mail server refused the message for good (a 5xx answer)."""


@dataclass(frozen=True)
class Delivery:
    id: int
    report_id: int
    email: str
    lang: str
    state: str  # pending / sending / sent / failed
    attempts: int
    next_ms: int
    created_ms: int
    sent_ms: int | None
    error: str


_COLUMNS = "id, report_id, email, lang, state, attempts, next_ms, created_ms, sent_ms, error"


class SmtpSender:
    """Sends EmailMessages through the [mail] server: one connection per round."""

    def __init__(self, settings: MailSection, base: Path):
        self.settings = settings
        self.base = Path(base)

    def _password(self) -> str:
        path = resolve(self.base, self.settings.password_file)
        try:
            return path.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise OSError(f"[mail] password_file {path}: {exc.strerror}") from None

    def _context(self) -> ssl.SSLContext:
        ca = str(resolve(self.base, self.settings.ca_file)) if self.settings.ca_file else None
        return ssl.create_default_context(cafile=ca)

    def connect(self) -> smtplib.SMTP:
        s = self.settings
        if s.security == "tls":
            smtp = smtplib.SMTP_SSL(s.host, s.port, timeout=s.timeout_s, context=self._context())
        else:
            smtp = smtplib.SMTP(s.host, s.port, timeout=s.timeout_s)
        try:
            smtp.ehlo()
            if s.security == "starttls":
                smtp.starttls(context=self._context())
                smtp.ehlo()
            if s.user:
                smtp.login(s.user, self._password())
        except BaseException:
            smtp.close()
            raise
        return smtp

    @staticmethod
    def send(smtp: smtplib.SMTP, message: EmailMessage) -> None:
        try:
            refused = smtp.send_message(message)
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            if codes and all(code >= 500 for code in codes):
                raise PermanentRefusal("; ".join(f"{code} {text.decode(errors='replace')}"
                                                 for code, text in exc.recipients.values())) from None
            raise
        except smtplib.SMTPResponseException as exc:
            if exc.smtp_code >= 500 and not isinstance(exc, (smtplib.SMTPSenderRefused,)):
                raise PermanentRefusal(f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}") from None
            raise
        if refused:  # one recipient per message: a refusal raises above
            raise PermanentRefusal(str(refused))


class ReportMail:
    """The outbox of report e-mails (``report_mail``) and its delivery.

    ``compose(delivery)`` builds the EmailMessage of a queued delivery (the report's
    words, its files); ``settings`` None or without a host: messages are queued for
    nobody and nothing is sent.
    """

    def __init__(self, storage, settings: MailSection | None, base: Path | str = ".",
                 compose: Callable[[Delivery, str], EmailMessage] | None = None,
                 clock: Callable[[], float] = time.time, audit=None):
        self.db = storage.sql
        self.settings = settings or MailSection()
        self.sender = SmtpSender(self.settings, Path(base))
        self.compose = compose
        self.clock = clock
        self.audit = audit
        if not self.db.has_table("report_mail"):
            self.db.schema(
                """
                CREATE TABLE IF NOT EXISTS report_mail (
                    id {pk}, report_id BIGINT NOT NULL, email TEXT NOT NULL, lang TEXT NOT NULL,
                    state TEXT NOT NULL DEFAULT 'pending', attempts BIGINT NOT NULL DEFAULT 0,
                    next_ms BIGINT NOT NULL, created_ms BIGINT NOT NULL, claimed_ms BIGINT, sent_ms BIGINT,
                    error TEXT NOT NULL DEFAULT '', UNIQUE (report_id, email));
                CREATE INDEX IF NOT EXISTS report_mail_due ON report_mail (state, next_ms)
                """
            )

    @property
    def enabled(self) -> bool:
        return self.settings.enabled

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)

    def queue(self, report_id: int, addresses) -> int:
        """Queue the report for each address (``.email``, ``.lang``); an address already
        queued for this report is left as it is (a rerun sends nothing twice)."""
        if not self.enabled:
            return 0
        now = self._now_ms()
        queued = 0
        for address in addresses:
            queued += self.db.execute(
                "INSERT INTO report_mail (report_id, email, lang, next_ms, created_ms) VALUES (?, ?, ?, ?, ?)"
                " ON CONFLICT (report_id, email) DO NOTHING", [report_id, address.email, address.lang, now, now])
        return queued

    def for_report(self, report_id: int) -> list[Delivery]:
        return self._select("WHERE report_id = ? ORDER BY email", [report_id])

    def for_reports(self, report_ids: list[int]) -> dict[int, list[Delivery]]:
        """for_report of each of these reports, in one query (a page lists up to 60)."""
        if not report_ids:
            return {}
        condition, params = in_list(self.db, "report_id", report_ids)
        found: dict[int, list[Delivery]] = {}
        for delivery in self._select(f"WHERE {condition} ORDER BY email", params):
            found.setdefault(delivery.report_id, []).append(delivery)
        return found

    def get(self, delivery_id: int) -> Delivery | None:
        rows = self._select("WHERE id = ?", [delivery_id])
        return rows[0] if rows else None

    def _select(self, where: str, params: list) -> list[Delivery]:
        return [Delivery(*r) for r in self.db.rows(f"SELECT {_COLUMNS} FROM report_mail {where}", params)]

    # -- delivery ----------------------------------------------------------------------

    def deliver_due(self) -> dict[str, int]:
        """Send what is due now, one connection for the round; return how many messages
        were sent, put back for later and given up. Never raises for a mail problem."""
        done = {"sent": 0, "retry": 0, "failed": 0}
        if not self.enabled or self.compose is None:
            return done
        now = self._now_ms()
        due = self.db.rows(
            "SELECT id, state, claimed_ms FROM report_mail WHERE (state = 'pending' AND next_ms <= ?)"
            " OR (state = 'sending' AND claimed_ms <= ?) ORDER BY next_ms, id LIMIT ?", [now, now - LEASE_S * 1000,
                                                                                      BATCH])
        smtp = None
        try:
            for delivery_id, state, claimed_ms in due:
                if not self._claim(delivery_id, state, claimed_ms):
                    continue  # another process took it
                delivery = self.get(delivery_id)
                try:
                    message = self.compose(delivery, self.settings.from_address)
                except Exception as exc:  # a report that cannot be put into a message: no retry helps
                    logger.exception("report e-mail %d could not be composed", delivery.id)
                    self._give_up(delivery, f"could not compose the message: {exc}")
                    done["failed"] += 1
                    continue
                try:
                    if smtp is None:
                        smtp = self.sender.connect()
                    self.sender.send(smtp, message)
                except PermanentRefusal as exc:
                    self._give_up(delivery, str(exc))
                    done["failed"] += 1
                except smtplib.SMTPRecipientsRefused as exc:  # this address, for now (4xx): the others go on
                    done["retry" if self._retry(delivery, _reason(exc)) else "failed"] += 1
                except Exception as exc:  # down, slow, refusing for now, or set up wrong: tried again
                    if not isinstance(exc, (OSError, smtplib.SMTPException)):
                        logger.exception("report e-mail %d: unexpected error from the mail server", delivery.id)
                    smtp = _close(smtp)
                    done["retry" if self._retry(delivery, _reason(exc)) else "failed"] += 1
                    break  # the rest wait for the next round: a hung server costs one time-out, not fifty
                else:
                    self._sent(delivery)
                    done["sent"] += 1
        finally:
            if smtp is not None:
                try:
                    smtp.quit()
                except (OSError, smtplib.SMTPException):
                    smtp.close()
        return done

    def _claim(self, delivery_id: int, state: str, claimed_ms: int | None) -> bool:
        return self.db.execute(
            "UPDATE report_mail SET state = 'sending', claimed_ms = ?, attempts = attempts + 1 WHERE id = ?"
            " AND state = ? AND coalesce(claimed_ms, -1) = ?",
            [self._now_ms(), delivery_id, state, -1 if claimed_ms is None else claimed_ms]) == 1

    def _sent(self, delivery: Delivery) -> None:
        self.db.execute("UPDATE report_mail SET state = 'sent', sent_ms = ?, error = '' WHERE id = ?",
                        [self._now_ms(), delivery.id])
        logger.info("report e-mail %d (report %d) sent to an address at %s", delivery.id, delivery.report_id,
                    _domain(delivery.email))
        self._audit("qrgate.report.mailed", delivery, "")

    def _retry(self, delivery: Delivery, reason: str) -> bool:
        """Put the message back for later; False if its time is up (then it failed)."""
        now = self._now_ms()
        if now - delivery.created_ms >= self.settings.retry_hours * 3600 * 1000:
            self._give_up(delivery, reason)
            return False
        attempts = delivery.attempts  # the claim counted this attempt
        delay = RETRY_DELAYS_S[min(attempts, len(RETRY_DELAYS_S)) - 1]
        self.db.execute("UPDATE report_mail SET state = 'pending', next_ms = ?, claimed_ms = NULL, error = ?"
                        " WHERE id = ?", [now + delay * 1000, reason[:500], delivery.id])
        logger.warning("report e-mail %d to an address at %s not sent (attempt %d): %s; next try in %d s",
                       delivery.id, _domain(delivery.email), attempts, reason, delay)
        return True

    def _give_up(self, delivery: Delivery, reason: str) -> None:
        self.db.execute("UPDATE report_mail SET state = 'failed', claimed_ms = NULL, error = ? WHERE id = ?",
                        [reason[:500], delivery.id])
        logger.error("report e-mail %d to an address at %s given up: %s (the report stays on the server)",
                     delivery.id, _domain(delivery.email), reason)
        self._audit("qrgate.report.mail_failed", delivery, reason[:200])

    def _audit(self, action: str, delivery: Delivery, error: str) -> None:
        if self.audit is None:
            return
        row = self.db.one("SELECT scope, subject, year, week FROM kept_reports WHERE id = ?", [delivery.report_id])
        if row is None:
            return
        scope, subject, year, week = row
        data = {"to": delivery.email, "week": week_words(int(year), int(week))}
        if error:
            data["error"] = error
        if scope == "unit" and subject.isdigit():
            self.audit.record(action, ip="scheduler", venue_id=int(subject), **data)
        else:
            self.audit.record(action, ip="scheduler", area=subject, **data)


_SMTP_CODE = re.compile(r"^([45]\d\d)\b")


def mail_problem(lang: str, error: str) -> str:
    """What went wrong with a message, in words for its page (the technical reason is
    in the log and in ``report_mail.error``)."""
    code = _SMTP_CODE.match(error or "")
    if code:
        return i18n.translate(lang, "mail.problem.refused", code=code.group(1))
    for key, marks in (("compose", ("could not compose",)), ("timeout", ("timeout", "timed out")),
                       ("tls", ("SSL", "certificate", "STARTTLS")),
                       ("connect", ("Connection", "gaierror", "OSError", "unreachable", "Disconnected"))):
        if any(mark.lower() in error.lower() for mark in marks):
            return i18n.translate(lang, f"mail.problem.{key}")
    return i18n.translate(lang, "mail.problem.other")


def _close(smtp):
    if smtp is not None:
        smtp.close()
    return None


def _reason(exc: BaseException) -> str:
    if isinstance(exc, smtplib.SMTPResponseException):
        return f"{exc.smtp_code} {exc.smtp_error.decode(errors='replace')}"
    if isinstance(exc, smtplib.SMTPRecipientsRefused):
        return "; ".join(f"{code} {text.decode(errors='replace')}" for code, text in exc.recipients.values())
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


def _domain(email: str) -> str:
    """Where an address is, for the technical log (the address itself is in the audit
    trail, which says who received what)."""
    return parseaddr(email)[1].rsplit("@", 1)[-1]


def new_message(from_address: str, to: str, subject: str, body: str, attachments: list[tuple[bytes, str, str]]
                ) -> EmailMessage:
    """A plain-text message (UTF-8) with attachments (content, MIME type, file name)."""
    message = EmailMessage()
    message["Subject"] = subject
    message["From"] = from_address
    message["To"] = to
    message["Date"] = formatdate(localtime=True)
    domain = parseaddr(from_address)[1].rsplit("@", 1)[-1] or None
    message["Message-ID"] = make_msgid(domain=domain)
    message["Auto-Submitted"] = "auto-generated"  # RFC 3834: no vacation replies, please
    message.set_content(body)
    for content, mime, filename in attachments:
        maintype, subtype = mime.split("/", 1)
        message.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)
    return message
