"""Scan history and contact tracing in a real headless browser (Debian's chromium driven
by Playwright): a venue member pages through masked history; a health officer reads their
area in full and traces a person from a history row; hostile names stay text."""

from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import sync_playwright

from conftest import serve_app
from qrgate import protocol
from qrgate.masking import mask_person_name
from server.accounts.accounts import normalise_phone
from test_web_support import CODE_IN_SMS, Site

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OWNER, CONTROLLER, OFFICER = "0912000001", "0912000002", "0912000004"
H = 3_600_000
T0 = 1_789_948_800_000  # 2026-09-21 07:00 in Ho Chi Minh City; the site's clock reads the same day
HOSTILE = "=cmd|' /C calc'!A0 <img src=x onerror=alert(1)>"


@pytest.fixture
def served(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    factory = owner.create_venue(kind="factory", name="TP-Nhà máy <b>A</b>")
    site.services.venues.add_member(factory, site.services.accounts.account_for_phone(CONTROLLER), "controller")
    site.services.officers.grant(site.services.accounts, OFFICER, "79")
    key = Ed25519PrivateKey.generate()
    site.storage.add_station("gate-a", protocol.public_key_to_text(key.public_key()), factory)
    seq = iter(range(1, 1000))

    def scan(person_id, name, direction, at_ms):
        rec = {"v": 1, "type": "checkin", "st": "gate-a", "seq": next(seq), "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": "cccd",
               "person": {"id": person_id, "name": name, "birth": "1983-03-21", "sex": ""}}
        site.storage.store_records(site.storage.station("gate-a"), [protocol.sign_record(rec, key)])

    scan("024083123451", "Ca Bệnh", "in", T0 + 1 * H)
    scan("079190000002", "Đồng Nghiệp", "in", T0 + 1 * H + 60_000)
    scan("079190000003", HOSTILE, "in", T0 + 5 * H)
    scan("079190000002", "Đồng Nghiệp", "out", T0 + 8 * H)
    scan("024083123451", "Ca Bệnh", "out", T0 + 9 * H)
    with serve_app(site.app, "web server start") as base:
        yield base, site


def login(page, base: str, site, phone: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#phone", phone)
    page.click("#send-code")
    page.wait_for_selector("#code")
    page.fill("#code", CODE_IN_SMS.search(site.sender.last_text_to(normalise_phone(phone))).group(1))
    page.click("#check-code")
    # Each lands where their work is: venue members on their venues, officers on their areas.
    page.wait_for_url(lambda url: url.split("?")[0] in (f"{base}/venues", f"{base}/area", f"{base}/fleet"))


def test_a_member_pages_through_history_and_sees_only_masked_names(served):
    base, site = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, base, site, CONTROLLER)
        page.goto(f"{base}/history?limit=2")
        assert page.locator("#history td.name").all_inner_texts() == ["Ca B***", "Đồng N*****"]
        assert page.locator("#history td.idno").all_inner_texts() == ["*********451", "*********002"]
        assert page.locator("#unmasked-notice").count() == 0 and page.locator("#prev").count() == 0
        page.click("#next")
        assert page.locator("#history td.name").all_inner_texts() == [mask_person_name(HOSTILE), "Đồng N*****"]
        page.click("#next")
        assert page.locator("#history td.name").all_inner_texts() == ["Ca B***"]
        assert page.locator("#next").count() == 0
        page.click("#prev")
        assert len(page.locator("#history tbody tr").all()) == 2
        # Visits: entry and exit paired, with the time in between.
        page.goto(f"{base}/history")
        page.select_option("#f-view", "visits")
        page.click("#apply")
        assert page.locator("#history td.minutes").all_inner_texts() == ["60", "419", "480"]
        assert "Ca Bệnh" not in page.content() and "Việt" not in page.content()
        assert page.locator("#history img").count() == 0 and dialogs == []
        browser.close()


def test_an_officer_traces_a_person_from_history_and_sees_ranked_contacts(served):
    base, site = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, base, site, OFFICER)
        page.goto(f"{base}/area")
        page.click("#areas a")
        assert page.locator("#unmasked-notice").is_visible()
        page.fill("#f-q", "ca benh")
        page.click("#apply")
        assert page.locator("#history td.name").all_inner_texts() == ["Ca Bệnh", "Ca Bệnh"]
        page.locator("#history a.trace-link").first.click()
        assert page.locator("#trace-person .name").inner_text() == "Ca Bệnh"
        page.click("#trace-run")
        page.wait_for_selector("#trace-result")
        ranked = page.locator("#trace-contacts td.name").all_inner_texts()
        assert ranked == ["Đồng Nghiệp", HOSTILE]
        assert page.locator("#trace-contacts td.overlap").all_inner_texts() == ["419 phút", "60 phút"]
        assert page.locator("#trace-contacts img").count() == 0 and page.locator("#trace-visits b").count() == 0
        assert "TP-Nhà máy <b>A</b>" in page.locator("#trace-visits").inner_text()
        with page.expect_download() as download:
            page.click("#trace-csv")
        text = open(download.value.path(), encoding="utf-8-sig").read()
        assert "'=cmd|' /C calc'!A0" in text.splitlines()[2]
        assert dialogs == []
        browser.close()
    actions = [r[0] for r in site.storage.sql.rows("SELECT action FROM audit_log WHERE account_id IS NOT NULL"
                                                   " AND action != 'qrgate.account.login' ORDER BY id")]
    assert actions.count("qrgate.trace.run") == 2 and "qrgate.checkins.unmasked.read" in actions
