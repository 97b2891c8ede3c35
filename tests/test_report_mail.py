"""Weekly reports by e-mail through a real SMTP server (aiosmtpd, started here on a free
port, STARTTLS or implicit TLS with a certificate of the project's CA, with a login):
who receives what, the Vietnamese subject, the figures of the attached CSV; a mail
server that is down or refuses holds nothing up, loses no report, and is retried; the
[mail] section of server.toml."""

from __future__ import annotations

import csv
import datetime as dt
import email
import email.policy
import io
import socket
import ssl
import threading
import warnings
from pathlib import Path

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult

from provisioning.broker import _make_ca, _make_server_cert, free_port
from qrgate.errors import ConfigError
from server.config import MailSection, RetentionSection, load_server_config
from server.scheduler import ServerScheduler
from test_export import TZ
from test_reports import FRIDAY_3PM, OFFICER, add_bus, week  # noqa: F401 (week is a fixture)

pytestmark = pytest.mark.timeout(120)

USER, PASSWORD = "baocao@example.vn", "mat-khau s3cret!"
MONDAY = dt.datetime(2026, 11, 16, 8, 0, tzinfo=TZ)
FRIDAY = dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ)


class Inbox:
    """What the SMTP server received: (envelope sender, recipients, message, TLS?, login)."""

    def __init__(self, refuse: dict[str, str] | None = None):
        self.messages: list[tuple[str, list[str], email.message.EmailMessage, bool, bytes | None]] = []
        self.refuse = refuse or {}  # address -> the server's answer to RCPT
        self.arrived = threading.Event()

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if address in self.refuse:
            return self.refuse[address]
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        message = email.message_from_bytes(envelope.original_content or envelope.content,
                                           policy=email.policy.default)
        login = session.auth_data.login if session.auth_data is not None else None
        over_tls = server.transport.get_extra_info("ssl_object") is not None
        self.messages.append((envelope.mail_from, list(envelope.rcpt_tos), message, over_tls, login))
        self.arrived.set()
        return "250 Message accepted for delivery"

    def to(self, address: str):
        found = [m for m in self.messages if address in m[1]]
        assert len(found) == 1, f"{len(found)} messages to {address}"
        return found[0]


def authenticator(server, session, envelope, mechanism, auth_data):
    return AuthResult(success=auth_data.login == USER.encode() and auth_data.password == PASSWORD.encode(),
                      auth_data=auth_data)


@pytest.fixture
def tls_files(tmp_path):
    """A CA and a certificate for 127.0.0.1 made as the project makes the broker's."""
    folder = tmp_path / "smtp-tls"
    folder.mkdir()
    ca, ca_key = _make_ca(folder)
    _make_server_cert(folder, ca, ca_key, ["127.0.0.1", "localhost"])
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server.crt", folder / "server.key")
    (tmp_path / "smtp-password").write_text(PASSWORD + "\n", encoding="utf-8")
    return folder / "ca.crt", context


class SmtpServer:
    def __init__(self, tls_files, security: str = "starttls", port: int | None = None, refuse=None):
        ca, context = tls_files
        self.ca = ca
        self.port = port or free_port()
        self.inbox = Inbox(refuse)
        self.security = security
        options = dict(authenticator=authenticator, auth_required=True)
        if security == "tls":
            with warnings.catch_warnings():  # the whole connection is TLS: AUTH needs no STARTTLS first
                warnings.filterwarnings("ignore", "Requiring AUTH while not requiring TLS")
                self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, ssl_context=context,
                                             auth_require_tls=False, **options)
        else:
            self.controller = Controller(self.inbox, hostname="127.0.0.1", port=self.port, tls_context=context,
                                         require_starttls=True, **options)

    def settings(self, **extra) -> MailSection:
        return MailSection(**{"host": "127.0.0.1", "port": self.port, "security": self.security, "user": USER,
                              "password_file": "smtp-password", "from_address": f"QR gate <{USER}>",
                              "ca_file": str(self.ca), "timeout_s": 10, **extra})

    def __enter__(self):
        self.controller.start()
        return self

    def __exit__(self, *exc):
        self.controller.stop()


@pytest.fixture
def smtp(tls_files):
    with SmtpServer(tls_files) as server:
        yield server


def make_scheduler(site, tmp_path, settings: MailSection) -> ServerScheduler:
    jobs = ServerScheduler(site.storage, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=0), clock=site.clock,
                           mail=settings, base=tmp_path, officers=site.services.officers,
                           public_url="https://qr.example.vn")
    assert jobs.run_due(MONDAY) == {}  # the first look only notes the time
    return jobs


def attachments(message) -> dict[str, tuple[str, bytes]]:
    return {part.get_filename(): (part.get_content_type(), part.get_payload(decode=True))
            for part in message.iter_attachments()}


def csv_rows(data: bytes) -> list[list[str]]:
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_unit_and_area_reports_arrive_by_email_in_each_readers_language(week, smtp, tmp_path):
    site, owner, venue = week
    add_bus(site, owner, venue)
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn", "lang": "vi"})
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "buyer@partner.com", "lang": "en"})
    province = site.services.venues.get(venue).province
    site.services.officers.grant(site.services.accounts, OFFICER, province)
    officer = site.visitor("203.0.113.30").login(OFFICER)
    officer.form("/reports/email", {"email": "canbo@yte.gov.vn", "lang": "vi"})
    jobs = make_scheduler(site, tmp_path, smtp.settings())

    assert jobs.run_due(FRIDAY) == {"weekly_reports": 2}  # the unit and the officer's area
    assert smtp.inbox.messages == []  # the schedule only queued them
    assert jobs.deliver_mail() == {"sent": 3, "retry": 0, "failed": 0}

    sender, recipients, message, over_tls, login = smtp.inbox.to("giamdoc@phuclam.vn")
    assert sender == USER and recipients == ["giamdoc@phuclam.vn"] and over_tls and login == USER.encode()
    assert message["Subject"] == "Báo cáo tuần 47 (16/11–22/11/2026): Công ty Giày da Phúc Lâm"
    assert message["To"] == "giamdoc@phuclam.vn" and message["Auto-Submitted"] == "auto-generated"
    body = message.get_body(("plain",)).get_content()
    assert "Trong tuần: 9 lượt vào, 3 lượt ra, 5 người." in body
    assert "- Thứ Hai 16/11/2026: 5 lượt vào, 2 lượt ra, 4 người" in body
    assert f"https://qr.example.vn/venues/{venue}/reports?week=2026-W47" in body
    files = attachments(message)
    assert set(files) == {f"bao-cao-tuan-47-2026-don-vi-{venue}.pdf", f"bao-cao-tuan-47-2026-don-vi-{venue}.csv"}
    pdf_type, pdf = files[f"bao-cao-tuan-47-2026-don-vi-{venue}.pdf"]
    assert pdf_type == "application/pdf" and pdf.startswith(b"%PDF")
    rows = csv_rows(files[f"bao-cao-tuan-47-2026-don-vi-{venue}.csv"][1])
    report = site.app.state.reports.archive.for_unit(venue)[0].report
    total = next(r for r in rows if r[1:2] == ["Cả tuần"])
    assert total[2:4] == [str(report.total("scans_in")), str(report.total("scans_out"))] == ["9", "3"]
    assert ["16/11/2026", "Thứ Hai", "5", "2", "4", "3", "0", "0", "0"] in rows
    assert ["Số điểm kiểm soát đã đăng ký", "2"] in rows

    _, _, english, _, _ = smtp.inbox.to("buyer@partner.com")
    assert english["Subject"] == "Weekly report, week 47 (16/11–22/11/2026): Công ty Giày da Phúc Lâm"
    english_rows = csv_rows(attachments(english)[f"weekly-report-week-47-2026-unit-{venue}.csv"][1])
    assert ["16/11/2026", "Monday", "5", "2", "4", "3", "0", "0", "0"] in english_rows

    _, _, area, _, _ = smtp.inbox.to("canbo@yte.gov.vn")
    area_name = site.services.officers.areas_of(site.services.accounts.account_for_phone(OFFICER).id)[0].name
    assert area["Subject"] == f"Báo cáo tuần 47 (16/11–22/11/2026): khu vực {area_name}"
    area_rows = csv_rows(attachments(area)[f"bao-cao-tuan-47-2026-khu-vuc-{province}.csv"][1])
    assert ["Công ty Giày da Phúc Lâm", "2", "2", "2", "9", "3"] in area_rows

    # The owner sees where the week's report went; the unit's trail says so too.
    page = owner.http.get(f"/venues/{venue}/reports").text
    kept = page.split('id="kept-reports"')[1]
    assert "giamdoc@phuclam.vn</span>: đã gửi lúc 20/11/2026 15:00" in kept
    mailed = [e.data["to"] for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.mailed"]
    assert sorted(mailed) == ["buyer@partner.com", "giamdoc@phuclam.vn"]
    assert jobs.deliver_mail() == {"sent": 0, "retry": 0, "failed": 0}  # each is sent once
    assert jobs.run_due(FRIDAY + dt.timedelta(days=7)) == {"weekly_reports": 2}
    assert jobs.deliver_mail()["sent"] == 3  # next week's


@pytest.mark.filterwarnings("ignore:Requiring AUTH while not requiring TLS")
def test_implicit_tls_delivers_too(week, tls_files, tmp_path):
    site, owner, venue = week
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn"})
    with SmtpServer(tls_files, "tls") as smtp:
        jobs = make_scheduler(site, tmp_path, smtp.settings())
        jobs.run_due(FRIDAY)
        assert jobs.deliver_mail()["sent"] == 1
        _, _, message, over_tls, login = smtp.inbox.to("giamdoc@phuclam.vn")
        assert over_tls and login == USER.encode() and message["Subject"].startswith("Báo cáo tuần 47")


def test_a_mail_server_that_is_down_holds_nothing_up_and_the_report_arrives_later(week, tls_files, tmp_path):
    site, owner, venue = week
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn"})
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "ketoan@phuclam.vn"})
    listener = socket.socket()  # takes connections and never answers: a hung mail server
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    listener.setblocking(False)
    hung = MailSection(host="127.0.0.1", port=listener.getsockname()[1], from_address=f"QR gate <{USER}>",
                       timeout_s=5)
    try:
        jobs = make_scheduler(site, tmp_path, hung)
        assert jobs.run_due(FRIDAY) == {"weekly_reports": 1}
        with pytest.raises(BlockingIOError):
            listener.accept()  # the weekly run made and kept the report without touching the mail server
    finally:
        listener.close()
    kept = site.app.state.reports.archive.for_unit(venue)
    assert len(kept) == 1 and Path(kept[0].pdf_file).is_file()

    port = free_port()  # nothing listens there yet: the server is down
    with SmtpServer(tls_files, port=port) as later:
        settings = later.settings()
    jobs = make_scheduler(site, tmp_path, settings)  # the same outbox, now pointing at the down server
    # The first message finds the server down; the round stops there (one failure, not one per message).
    assert jobs.deliver_mail() == {"sent": 0, "retry": 1, "failed": 0}
    waiting = {d.email: d.attempts for d in jobs.mail.for_report(kept[0].id)}
    assert sorted(waiting.values()) == [0, 1]
    page = site.visitor().login("0912486419").http.get(f"/venues/{venue}/reports").text
    assert "giamdoc@phuclam.vn</span>: đang chờ gửi (đã thử 1 lần: không kết nối được máy chủ thư)" in page
    site.clock.advance(59)
    assert jobs.deliver_mail() == {"sent": 0, "retry": 1, "failed": 0}  # the other one; the first waits
    assert {d.email: d.attempts for d in jobs.mail.for_report(kept[0].id)} == {
        "giamdoc@phuclam.vn": 1, "ketoan@phuclam.vn": 1}
    with SmtpServer(tls_files, port=port) as smtp:
        site.clock.advance(1)  # a minute after the first try of the first
        assert jobs.deliver_mail() == {"sent": 1, "retry": 0, "failed": 0}
        _, _, message, _, _ = smtp.inbox.to("giamdoc@phuclam.vn")
        assert message["Subject"].startswith("Báo cáo tuần 47 (16/11–22/11/2026)")
        site.clock.advance(59)
        assert jobs.deliver_mail() == {"sent": 1, "retry": 0, "failed": 0}
        assert smtp.inbox.to("ketoan@phuclam.vn")


def test_a_refused_address_fails_at_once_and_the_others_arrive(week, tls_files, tmp_path):
    site, owner, venue = week
    for address in ("nobody@phuclam.vn", "busy@phuclam.vn", "giamdoc@phuclam.vn"):
        owner.form(f"/venues/{venue}/reports/addresses", {"email": address})
    refuse = {"nobody@phuclam.vn": "550 5.1.1 No such mailbox here", "busy@phuclam.vn": "450 4.2.1 Try later"}
    with SmtpServer(tls_files, refuse=refuse) as smtp:
        jobs = make_scheduler(site, tmp_path, smtp.settings())
        jobs.run_due(FRIDAY)
        assert jobs.deliver_mail() == {"sent": 1, "retry": 1, "failed": 1}
        del smtp.inbox.refuse["busy@phuclam.vn"]  # the mailbox takes mail again
        site.clock.advance(24 * 3600)
        assert jobs.deliver_mail() == {"sent": 1, "retry": 0, "failed": 0}  # the 4xx again, never the 5xx
        assert sorted(m[1][0] for m in smtp.inbox.messages) == ["busy@phuclam.vn", "giamdoc@phuclam.vn"]
    owner = site.visitor().login("0912486419")  # a day later: a new session
    page = owner.http.get(f"/venues/{venue}/reports").text
    assert "nobody@phuclam.vn</span>: không gửi được: máy chủ thư từ chối (mã 550)" in page
    delivery = next(d for d in owner.http.get(f"/api/venues/{venue}/reports").json()["reports"][0]["deliveries"]
                    if d["email"] == "nobody@phuclam.vn")
    assert delivery["state"] == "failed" and delivery["error"] == "550 5.1.1 No such mailbox here"
    failed = [e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.mail_failed"]
    assert [e.data["to"] for e in failed] == ["nobody@phuclam.vn"]


def test_retries_end_after_retry_hours_and_the_report_stays(week, tmp_path):
    site, owner, venue = week
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn"})
    down = MailSection(host="127.0.0.1", port=free_port(), from_address=f"QR gate <{USER}>", retry_hours=2)
    jobs = make_scheduler(site, tmp_path, down)
    jobs.run_due(FRIDAY)
    outcomes = []
    for _ in range(4):
        outcomes.append(jobs.deliver_mail())
        site.clock.advance(3600)
    assert [o["retry"] for o in outcomes[:2]] == [1, 1] and outcomes[2]["failed"] == 1
    delivery = jobs.mail.for_report(site.app.state.reports.archive.for_unit(venue)[0].id)[0]
    assert delivery.state == "failed" and delivery.attempts == 3 and "ConnectionRefusedError" in delivery.error
    assert owner.http.get(f"/venues/{venue}/reports/kept/{delivery.report_id}.pdf").content.startswith(b"%PDF")


def test_the_background_thread_sends_queued_mail(week, smtp, tmp_path):
    site, owner, venue = week
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn"})
    jobs = make_scheduler(site, tmp_path, smtp.settings())
    jobs.run_due(FRIDAY)
    jobs.start()  # sends at once, then every minute
    try:
        assert smtp.inbox.arrived.wait(60), "the background thread sent nothing"
    finally:
        jobs.shutdown()
    assert smtp.inbox.to("giamdoc@phuclam.vn")[2]["Subject"].startswith("Báo cáo tuần 47")


def test_without_mail_settings_nothing_is_queued(week, tmp_path):
    site, owner, venue = week
    owner.form(f"/venues/{venue}/reports/addresses", {"email": "giamdoc@phuclam.vn"})
    jobs = make_scheduler(site, tmp_path, MailSection())
    assert jobs.run_due(FRIDAY) == {"weekly_reports": 1}
    assert jobs.mail.for_report(site.app.state.reports.archive.for_unit(venue)[0].id) == []
    site.app.state.reports.mail_enabled = False
    assert 'id="mail-off"' in owner.http.get(f"/venues/{venue}/reports").text


# -- [mail] in server.toml -------------------------------------------------------------------------

def write_config(tmp_path, mail: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "data"\n[mqtt]\ntls = false\n[mail]\n{mail}', encoding="utf-8")
    return path


def test_config_reads_the_mail_section(tmp_path):
    (tmp_path / "smtp-password").write_text("s3cret\n", encoding="utf-8")
    cfg = load_server_config(write_config(tmp_path, 'host = "smtp.example.vn"\nport = 465\nsecurity = "tls"\n'
                                                    'user = "baocao@example.vn"\npassword_file = "smtp-password"\n'
                                                    'from_address = "QR gate <baocao@example.vn>"\n'))
    assert cfg.mail.enabled and (cfg.mail.host, cfg.mail.port, cfg.mail.security) == ("smtp.example.vn", 465, "tls")
    assert not load_server_config(write_config(tmp_path, "")).mail.enabled


@pytest.mark.parametrize("mail, message", [
    ('host = "smtp.example.vn"\nfrom_address = "not an address"\n', "option 'from_address' must be an e-mail"),
    ('host = "smtp.example.vn"\nsecurity = "none"\nfrom_address = "a@b.vn"\n',
     "'security' may be \"none\" only for a relay on this machine"),
    ('host = "smtp.example.vn"\nsecurity = "ssl"\n', "option 'security' must be one of starttls, tls, none"),
    ('host = "smtp.example.vn"\nfrom_address = "a@b.vn"\nuser = "u"\npassword_file = "missing"\n',
     "option 'password_file': no file"),
    ('host = "smtp.example.vn"\nfrom_address = "a@b.vn"\npassword_file = "x"\n', "'password_file' needs 'user'"),
    ('host = "smtp.example.vn"\nport = 0\n', "option 'port' must be at least 1"),
    ('hots = "smtp.example.vn"\n', "option 'hots' is not valid"),
    ('host = "smtp.example.vn"\nfrom_address = "a@b.vn"\nuser = "u"\npassword_file = "accented"\n',
     "the SMTP user and password must be ASCII"),
])
def test_mail_config_mistakes_name_the_section_and_key(tmp_path, mail, message):
    (tmp_path / "accented").write_text("mật khẩu\n", encoding="utf-8")
    with pytest.raises(ConfigError, match=r"section \[mail\]"):
        load_server_config(write_config(tmp_path, mail))
    with pytest.raises(ConfigError) as caught:
        load_server_config(write_config(tmp_path, mail))
    assert message in str(caught.value)
