"""The check-ins page in a real headless browser (Debian's chromium driven by Playwright)."""

from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import sync_playwright

from conftest import new_storage, serve_app
from qrgate import protocol
from server.ingest.bridge import Bridge
from server.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


@pytest.fixture
def web(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    venue = storage.add_venue("Trường THCS <b>Lê Lợi</b>")
    key = Ed25519PrivateKey.generate()
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    names = ["Lê Việt Hưng", "<img src=x onerror=alert(1)>", "=cmd|' /C calc'!A0"]
    records = [
        protocol.canonical_json(protocol.sign_record(
            {"v": 1, "type": "checkin", "st": "gate-1", "seq": i + 1, "ts": 1_790_000_000_000 + i * 1000, "mono": i, "boot": "b",
             "sync": i != 2, "dir": "in" if i % 2 == 0 else "out", "kind": "cccd",
             "person": {"id": f"0010900000{i:02d}", "name": name, "birth": "1990-01-01", "sex": "M"}}, key))
        for i, name in enumerate(names)
    ]
    Bridge(storage).handle(protocol.records_topic("gate-1"), protocol.encode_batch(records))
    with serve_app(create_app(storage, public_feed=True), "web server start") as base:
        yield base + "/"


def test_checkins_page_shows_masked_rows_and_never_runs_hostile_text(web):
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(web)
        rows = page.locator("#checkins tbody tr")
        assert rows.count() == 3
        names = page.locator("#checkins td.name").all_inner_texts()
        assert "Lê V*** H***" in names
        assert all("Việt" not in n for n in names)
        assert page.locator("#total").inner_text() == "3"
        # The venue name with markup is shown as text, not as bold markup.
        assert page.locator("#checkins b").count() == 0
        assert "<b>Lê Lợi</b>" in page.locator("#checkins tbody").inner_text()
        assert page.locator("#checkins img").count() == 0
        assert dialogs == []
        # The record made while the station's clock was not synced is flagged, and the page says why.
        assert page.locator("#checkins td.unsynced").count() == 1
        assert "đồng hồ của trạm chưa được đồng bộ" in page.locator("#legend").inner_text()
        assert "giờ Việt Nam (UTC+7)" in page.locator("#legend").inner_text()
        # Words, not codes: the card kind and the direction; the station by its name, no record number.
        table = page.locator("#checkins tbody").inner_text()
        assert "CCCD" in table and "cccd" not in table and "Vào" in table and "Ra" in table
        assert "gate-1" in table and "#" not in table
        browser.close()
