"""Attacks on the web server as an outsider or a member would make them, over HTTP against
the app served as the server serves it (uvicorn with server.cli.uvicorn_config): forged
X-Forwarded-For, the per-address and per-number limits behind one reverse proxy,
invitations that undo others, text in the invitation SMS, bodies that are not text or
are too big, failed logins in the audit trail; and what a newcomer gets by default (the
home page, retention, the demo's file modes)."""

from __future__ import annotations

import contextlib
import itertools
import json
import logging
import re
import stat
from pathlib import Path

import httpx
import pytest

from conftest import ON_POSTGRESQL, database_url, new_storage, serve_app, storage_for
from provisioning.broker import BrokerFiles, free_port
from provisioning.station import write_server_config
from server.config import ConfigError, load_server_config
from server.accounts.sms import DevSmsSender
from server.web.app import create_app
from test_web_support import CODE_IN_SMS, PLACE, FakeClock

pytestmark = pytest.mark.timeout(120)
REPO = Path(__file__).resolve().parents[1]
OWNER, MANAGER, INVITED = "0912486419", "0976929792", "0969201470"
_numbers = itertools.count(1)


def fresh_phone() -> str:
    return f"0933{next(_numbers):06d}"


class Browser:
    """One client of the served site, with its own cookies; ``forwarded_for`` is put in
    every request's X-Forwarded-For (what a client can always write)."""

    def __init__(self, site: "ServedSite", forwarded_for: str | None = None):
        self.site = site
        self.http = httpx.Client(base_url=site.base, follow_redirects=False, timeout=30)
        self.forwarded_for = forwarded_for

    def headers(self, extra: dict | None = None) -> dict:
        headers = {"X-Forwarded-For": self.forwarded_for} if self.forwarded_for else {}
        return {**headers, **(extra or {})}

    def csrf(self) -> str:
        return self.http.get("/api/session", headers=self.headers()).json()["csrf_token"]

    def api(self, method: str, path: str, json_body=None, **kwargs) -> httpx.Response:
        headers = self.headers({"X-CSRF-Token": self.csrf(), **kwargs.pop("headers", {})})
        return self.http.request(method, path, json=json_body, headers=headers, **kwargs)

    def get(self, path: str, **kwargs) -> httpx.Response:
        return self.http.get(path, headers=self.headers(kwargs.pop("headers", {})), **kwargs)

    def login(self, phone: str) -> "Browser":
        assert self.api("POST", "/api/login/code", {"phone": phone}).status_code == 200
        response = self.api("POST", "/api/login", {"phone": phone, "code": self.site.last_code(phone)})
        assert response.status_code == 200, response.text
        return self

    def create_venue(self, **fields) -> int:
        response = self.api("POST", "/api/venues", {**PLACE, **fields})
        assert response.status_code == 201, response.text
        return response.json()["id"]


class ServedSite:
    def __init__(self, app, base: str, sender: DevSmsSender, storage):
        self.app, self.base, self.sender, self.storage = app, base, sender, storage

    @property
    def services(self):
        return self.app.state.services

    def browser(self, forwarded_for: str | None = None) -> Browser:
        return Browser(self, forwarded_for)

    def last_code(self, phone: str) -> str:
        return CODE_IN_SMS.search(self.sender.last_text_to(phone)).group(1)

    def audit(self, prefix: str) -> list[dict]:
        rows = self.storage.sql.rows("SELECT action, ip, phone, venue_id, data FROM audit_log WHERE action LIKE ?"
                                     " ORDER BY id", [prefix + "%"])
        return [{"action": a, "ip": ip, "account": phone, "venue_id": v, **json.loads(d)}
                for a, ip, phone, v, d in rows]


@contextlib.contextmanager
def served(tmp_path, **kwargs):
    """The web app on a temporary database, served by uvicorn as the server serves it."""
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender, clock=FakeClock(), **kwargs)
    with serve_app(app) as base:
        yield ServedSite(app, base, sender, storage)


@contextlib.contextmanager
def served_from_config(tmp_path, extra: str = "", **options):
    """The web app built from a server.toml as `qrgate-server run` builds it (web_app):
    the file `qrgate-provision server` writes (``options`` are its own), ``extra`` appended."""
    from server.cli import web_app

    broker = BrokerFiles.create(tmp_path / "broker", port=free_port())
    path = write_server_config(tmp_path / "server" / "server.toml", broker=broker, password="not-used",
                               web_port=free_port(), database=database_url(tmp_path / "server"), **options)
    path.write_text(path.read_text(encoding="utf-8") + extra, encoding="utf-8")
    cfg = load_server_config(path)
    storage = storage_for(cfg)
    app = web_app(cfg, storage)
    with serve_app(app) as base:
        yield ServedSite(app, base, app.state.services.sender, storage), cfg


# -- forged addresses -------------------------------------------------------------------------

def test_a_forged_forwarded_for_neither_enters_the_audit_trail_nor_resets_the_code_limit(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser(forwarded_for="203.0.113.99").login(OWNER)
        assert {e["ip"] for e in site.audit("qrgate.account.login")} == {"127.0.0.1"}
        venue = owner.create_venue()
        # A forged X-Forwarded-Proto does not change the scheme of the poster's link either.
        url = owner.get(f"/api/venues/{venue}", headers={"X-Forwarded-Proto": "https"}).json()["selfcheckin_url"]
        assert url.startswith("http://127.0.0.1:")
        # 20 codes per address per 15 minutes, the login's one included: a new
        # X-Forwarded-For per request changes nothing.
        statuses = [site.browser(forwarded_for=f"198.51.100.{i}").api(
            "POST", "/api/login/code", {"phone": fresh_phone()}).status_code for i in range(1, 21)]
        assert statuses == [200] * 19 + [429]


def test_a_forged_forwarded_for_does_not_reset_the_self_checkin_limit(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        token = owner.get(f"/api/venues/{venue}").json()["selfcheckin_url"].rsplit("/", 1)[1]
        declaration = {"id_number": "024083123451", "name": "Nguyễn Văn Bình", "birth_year": "1983", "direction": "in"}
        statuses = [site.browser(forwarded_for=f"198.51.100.{i}").api(
            "POST", f"/api/self-checkin/{token}", declaration).status_code for i in range(1, 32)]
        assert statuses == [201] * 30 + [429]


def test_behind_a_trusted_proxy_each_client_has_its_own_address_and_limits(tmp_path):
    # Every request comes from the proxy (127.0.0.1); the proxy appends the address it saw.
    with served(tmp_path, trusted_proxies=("127.0.0.1",)) as site:
        # What a client wrote itself is left of the proxy's entry and is not read.
        owner = site.browser(forwarded_for="6.6.6.6, 198.51.100.7").login(OWNER)
        assert [e["ip"] for e in site.audit("qrgate.account.login")] == ["198.51.100.7"]
        # The proxy says the visitor came over HTTPS: links the server prints say so too.
        venue = owner.create_venue()
        url = owner.get(f"/api/venues/{venue}", headers={"X-Forwarded-Proto": "https"}).json()["selfcheckin_url"]
        assert url.startswith("https://127.0.0.1:")
        first = [site.browser(forwarded_for="198.51.100.1").api("POST", "/api/login/code", {"phone": fresh_phone()})
                 .status_code for _ in range(21)]
        assert first == [200] * 20 + [429]
        other = site.browser(forwarded_for="198.51.100.2").api("POST", "/api/login/code", {"phone": fresh_phone()})
        assert other.status_code == 200
        # One IPv6 subscriber line is one address for the limits: its /64.
        line = [site.browser(forwarded_for=f"2001:db8:7:1::{i:x}").api(
            "POST", "/api/login/code", {"phone": fresh_phone()}).status_code for i in range(1, 22)]
        assert line == [200] * 20 + [429]


def test_whatever_address_is_claimed_a_number_gets_three_codes_and_ten_wrong_tries(tmp_path):
    with served(tmp_path, trusted_proxies=("127.0.0.1",)) as site:
        addresses = (f"198.51.100.{i}" for i in itertools.count(1))
        sent = [site.browser(next(addresses)).api("POST", "/api/login/code", {"phone": INVITED}).status_code
                for _ in range(4)]
        assert sent == [200, 200, 200, 429]
        code = site.last_code(INVITED)
        wrong = f"{(int(code) + 1) % 1_000_000:06d}"
        tries = [site.browser(next(addresses)).api("POST", "/api/login", {"phone": INVITED, "code": wrong}).status_code
                 for _ in range(10)]
        assert tries == [400] * 10
        locked = site.browser(next(addresses)).api("POST", "/api/login", {"phone": INVITED, "code": code})
        assert locked.status_code == 429


def test_the_address_list_is_checked_when_the_config_is_read(tmp_path):
    with pytest.raises(ConfigError, match=r"section \[web\]: option 'trusted_proxies' must list IP addresses"):
        with served_from_config(tmp_path, trusted_proxies=("proxy.example.vn",)):
            pass


# -- failed logins in the audit trail ------------------------------------------------------------

def test_failed_logins_and_the_lock_out_are_audited_without_the_codes(tmp_path):
    with served(tmp_path) as site:
        site.browser().login(INVITED)  # the number has an account
        attacker = site.browser()
        assert attacker.api("POST", "/api/login/code", {"phone": INVITED}).status_code == 200
        code = site.last_code(INVITED)
        guesses = [f"{(int(code) + n) % 1_000_000:06d}" for n in range(1, 11)]
        statuses = [attacker.api("POST", "/api/login", {"phone": INVITED, "code": g}).status_code for g in guesses]
        assert statuses == [400] * 10
        assert attacker.api("POST", "/api/login", {"phone": INVITED, "code": code}).status_code == 429
        failed = site.audit("qrgate.account.login.failed")
        assert len(failed) == 10
        assert {(e["phone"], e["ip"], e["account"]) for e in failed} == {(INVITED, "127.0.0.1", INVITED)}
        assert {e["reason"] for e in failed} == {"bad_code"}
        locked = site.audit("qrgate.account.locked")
        assert [(e["phone"], e["minutes"]) for e in locked] == [(INVITED, 15)]
        # The refusal of a locked number is not a checked code: no entry for it.
        assert len(site.audit("qrgate.account.login.failed")) == 10
        trail = json.dumps(site.audit("qrgate."))
        assert not any(g in trail for g in guesses) and code not in trail
        # A number nobody has logged in with is audited too, with no account.
        stranger = fresh_phone()
        attacker.api("POST", "/api/login/code", {"phone": stranger})
        attacker.api("POST", "/api/login", {"phone": stranger, "code": "000000"})
        last = site.audit("qrgate.account.login.failed")[-1]
        assert (last["phone"], last["account"]) == (stranger, "")


def test_a_wrong_invitation_code_is_in_the_venues_history(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": INVITED, "role": "controller"})
        invitee = site.browser().login(INVITED)
        invitation = invitee.get("/api/invitations").json()["invitations"][0]["id"]
        assert invitee.api("POST", f"/api/invitations/{invitation}/accept", {"code": "12345x"}).status_code == 400
        history = owner.get(f"/api/venues/{venue}/history").json()["history"]
        assert history[0]["action"] == "qrgate.venue.invitation.code_failed"
        assert history[0]["account"] == INVITED and "12345x" not in json.dumps(history)


# -- invitations -------------------------------------------------------------------------------

def pending(owner: Browser, venue: int) -> list[tuple[str, str]]:
    return [(p["phone"], p["role"]) for p in owner.get(f"/api/venues/{venue}/members").json()["pending"]]


def test_a_manager_cannot_undo_an_owners_invitation_by_inviting_the_number_again(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        site.services.venues.add_member(venue, site.services.accounts.account_for_phone(MANAGER), "manager")
        manager = site.browser().login(MANAGER)
        assert owner.api("POST", f"/api/venues/{venue}/invitations",
                         {"phones": INVITED, "role": "owner"}).status_code == 201
        refused = manager.api("POST", f"/api/venues/{venue}/invitations", {"phones": INVITED, "role": "controller"})
        assert refused.status_code == 409
        assert pending(owner, venue) == [(INVITED, "owner")]
        # The owner may replace it; the replaced invitation is in the history as cancelled.
        assert owner.api("POST", f"/api/venues/{venue}/invitations",
                         {"phones": INVITED, "role": "manager"}).status_code == 201
        assert pending(owner, venue) == [(INVITED, "manager")]
        cancelled = site.audit("qrgate.venue.invitation.cancelled")
        assert [(e["phone"], e["role"], e["account"]) for e in cancelled] == [(INVITED, "owner", OWNER)]
        history = owner.get(f"/api/venues/{venue}/history").json()["history"]
        assert any(h["action"] == "qrgate.venue.invitation.cancelled" for h in history)


def test_an_invitation_refused_by_the_sms_limit_leaves_the_last_one_pending_and_every_replacement_audited(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        roles = ["controller", "manager", "owner", "controller"]
        statuses = [owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": INVITED, "role": role}).status_code
                    for role in roles]
        assert statuses == [201, 201, 201, 429]  # three codes per number per 15 minutes
        assert pending(owner, venue) == [(INVITED, "owner")]
        invited = site.audit("qrgate.venue.member.invited")
        assert [e["role"] for e in invited] == ["controller", "manager", "owner"]
        cancelled = site.audit("qrgate.venue.invitation.cancelled")
        assert [e["role"] for e in cancelled] == ["controller", "manager"]
        # The invitation left pending is the one whose code was the last sent.
        assert "với vai trò Chủ sở hữu" in site.sender.last_text_to(INVITED)
        assert len([m for m in site.sender.outbox if m.phone == INVITED]) == 3


def test_the_invitation_sms_carries_the_venue_name_quoted_and_bounded_with_no_link_or_number_of_its_own(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        name = "Trúng thưởng 50 triệu tại https://evil.example/nhan-qua hoặc EVIL.VN, gọi 0900 123 456 {0} {code}"
        venue = owner.create_venue(name=name)
        assert owner.api("POST", f"/api/venues/{venue}/invitations",
                         {"phones": INVITED, "role": "controller"}).status_code == 201
        text = site.sender.last_text_to(INVITED)
        quoted = re.search("«([^»]*)»", text).group(1)
        assert len(quoted) <= 40 and quoted.startswith("Trúng thưởng 50 triệu tại")
        for bait in ("https", "evil", "EVIL", "0900", "123 456", "{"):
            assert bait not in text, (bait, text)
        # The only link is the server's own, to the invitation.
        assert re.fullmatch(r"0912486419 chia sẻ địa điểm «[^»]*» cho bạn với vai trò Người kiểm soát vào ra\."
                            r" Nhận lời mời tại http://127\.0\.0\.1:\d+/invitations/\d+ Mã xác nhận: \d{6}\."
                            r" Mã hết hạn sau 24 giờ\. Không đưa mã này cho ai\.", text), text


# -- bodies -------------------------------------------------------------------------------------

@pytest.fixture
def server_log():
    """Every log record of the served app (uvicorn's loggers do not reach the root)."""
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record):
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    loggers = [logging.getLogger(name) for name in ("", "uvicorn", "uvicorn.error", "server")]
    yield records, handler, loggers
    for logger in loggers:
        logger.removeHandler(handler)


def _text(record: logging.LogRecord) -> str:
    text = record.getMessage()
    if record.exc_info:
        text += logging.Formatter().formatException(record.exc_info)
    return text


def test_a_lone_surrogate_in_a_json_body_is_refused_with_400_and_never_logged(tmp_path, server_log):
    records, handler, loggers = server_log
    with served(tmp_path) as site:
        for logger in loggers:  # after uvicorn configured its loggers
            logger.addHandler(handler)
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        token = owner.get(f"/api/venues/{venue}").json()["selfcheckin_url"].rsplit("/", 1)[1]
        anonymous = site.browser()
        csrf = anonymous.csrf()
        bodies = [
            ("/api/login/code", anonymous, csrf, b'{"phone": "0912\\ud800"}'),
            ("/api/login/code", anonymous, csrf, b'{"phone": "0912\xed\xa0\x80"}'),  # the same, raw
            (f"/api/self-checkin/{token}", anonymous, csrf,
             b'{"id_number": "\\udc00", "name": "A", "birth_year": "", "direction": "in"}'),
            ("/api/venues", owner, owner.csrf(),
             json.dumps({**PLACE, "name": "X"}).replace('"X"', '"\\ud83dX"').encode()),
        ]
        for path, who, token_, body in bodies:
            response = who.http.post(path, content=body, headers={"X-CSRF-Token": token_,
                                                                  "Content-Type": "application/json"})
            assert response.status_code == 400, (path, response.status_code, response.text[:200])
        # A surrogate pair (an emoji) is text: refused only for what it means.
        emoji = anonymous.http.post("/api/login/code", content=b'{"phone": "\\ud83d\\ude00"}',
                                    headers={"X-CSRF-Token": csrf, "Content-Type": "application/json"})
        assert emoji.status_code == 400 and "Số điện thoại" in emoji.json()["detail"]
    logged = "\n".join(_text(r) for r in records)
    assert "\ud800" not in logged and "\\ud800" not in logged and "udc00" not in logged
    assert not [r for r in records if r.levelno >= logging.ERROR], logged[-2000:]


def test_bodies_over_a_megabyte_are_refused_and_a_roster_upload_has_its_own_bound(tmp_path):
    with served(tmp_path) as site:
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        anonymous = site.browser()
        csrf = anonymous.csrf()
        big = json.dumps({"phone": "1" * (2 * 1024 * 1024)}).encode()
        assert anonymous.http.post("/api/login/code", content=big, headers={
            "X-CSRF-Token": csrf, "Content-Type": "application/json"}).status_code == 413
        form = anonymous.http.post("/login", data={"csrf": csrf, "phone": "0" * (2 * 1024 * 1024)})
        assert form.status_code == 413

        def chunks():  # no Content-Length: the size is counted as it arrives
            for _ in range(40):
                yield b"x" * 65536

        chunked = anonymous.http.post("/api/login/code", content=chunks(), headers={
            "X-CSRF-Token": csrf, "Content-Type": "application/json"})
        assert chunked.status_code == 413
        # A roster file may be up to 5 MB: 3 MB reaches the roster's own checks ...
        roster = owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()},
                                 files={"file": ("r.csv", b"Ten,Tuoi\n" + b"a,1\n" * (3 * 1024 * 1024 // 4),
                                                 "text/csv")})
        assert roster.status_code == 400 and "employee_no" in roster.text
        # ... and twice the roster's limit is refused before it is read.
        huge = owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()},
                               files={"file": ("r.csv", b"a" * (10 * 1024 * 1024), "text/csv")})
        assert huge.status_code == 413


# -- what a newcomer gets ---------------------------------------------------------------------------

def test_a_newcomer_opening_the_home_page_sees_no_ones_checkins(tmp_path):
    with served_from_config(tmp_path) as (site, cfg):
        assert cfg.web.public_feed is False
        owner = site.browser().login(OWNER)
        venue = owner.create_venue()
        token = owner.get(f"/api/venues/{venue}").json()["selfcheckin_url"].rsplit("/", 1)[1]
        visitor = site.browser()
        declared = visitor.api("POST", f"/api/self-checkin/{token}", {
            "id_number": "024083123451", "name": "Nguyễn Văn Bình", "birth_year": "1983", "direction": "in"})
        assert declared.status_code == 201
        home = site.browser().get("/")
        assert home.status_code == 200
        assert "Nguyễn" not in home.text and "451" not in home.text and 'id="checkins"' not in home.text
        assert site.browser().get("/api/checkins").status_code == 404
        assert owner.get("/").status_code == 303  # members go to their venues, not a feed
        assert owner.get("/api/checkins").status_code == 404


def test_the_documented_public_feed_default_is_the_one_the_code_has():
    from server.config import WebSection

    doc = (REPO / "docs" / "permissions.md").read_text(encoding="utf-8")
    said = re.findall(r"public[\s_]feed`?[^.]*?defaults?\s+to\s+(on|off)", doc)
    assert said == ["on" if WebSection().public_feed else "off"]


def test_the_history_page_says_how_long_checkins_are_kept(tmp_path):
    with served_from_config(tmp_path) as (site, cfg):
        assert cfg.retention.days == 30  # shipped: a deployment lengthens it on purpose
        owner = site.browser().login(OWNER)
        owner.create_venue()
        page = owner.get("/history")
        assert page.status_code == 200
        assert "Lượt ra vào được lưu 30 ngày" in page.text
    with served_from_config(tmp_path / "longer", extra="\n[retention]\ndays = 90\n") as (site, cfg):
        owner = site.browser().login(OWNER)
        owner.create_venue()
        owner.get("/lang/en")
        assert "kept 90 days" in owner.get("/history").text


def test_the_demo_keeps_its_database_and_wal_to_its_user(tmp_path):
    from test_demo import RunningDemo

    data = tmp_path / "demo"
    demo = RunningDemo(data, tmp_path / "demo.log")
    try:
        demo.wait_started()
        database = data / "server" / "data" / "qrgate.sqlite3"
        wal = database.with_name(database.name + "-wal")
        assert wal.exists()
        for path, mode in ((data, 0o700), (database.parent, 0o700), (database, 0o600), (wal, 0o600)):
            assert stat.S_IMODE(path.stat().st_mode) == mode, (path, oct(path.stat().st_mode))
    finally:
        demo.stop()
