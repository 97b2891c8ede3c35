"""The weekly report page in a real headless browser (Debian's chromium through
Playwright), on a phone's width: the owner reads the unit's week, gives the address
the report is e-mailed to and is told it was added, removes it, and downloads the PDF.

Screenshots go to $QRGATE_TEST_ARTIFACTS/reports when that variable is set, else to the
test's temporary folder.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from conftest import new_storage, serve_app
from server.accounts.sms import DevSmsSender
from server.reports import report_routes
from server.venues.venues import VenueInput
from server.web.app import create_app
from test_export import OWNER, TZ, Gate
from test_web_flows import ARGS, CHROMIUM, login
from test_web_support import PLACE, every_route

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]


@pytest.fixture
def server(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)
    if not any(getattr(r, "endpoint", None) is report_routes.reports_page for r in every_route(app)):
        app.include_router(report_routes.router)  # until create_app includes it
    with serve_app(app, "web server start") as base:
        yield base, sender, app


def test_owner_reads_the_week_on_a_phone_and_sets_where_it_is_mailed(server, tmp_path):
    base, sender, app = server
    shots = Path(os.environ.get("QRGATE_TEST_ARTIFACTS") or tmp_path) / "reports"
    shots.mkdir(parents=True, exist_ok=True)
    services = app.state.services
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        context = browser.new_context(viewport={"width": 390, "height": 844}, accept_downloads=True)
        page = context.new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(page, base, sender, OWNER)
        account = services.accounts.account_for_phone(OWNER)
        head = services.venues.create(VenueInput(**{**PLACE, "name": "Công ty TNHH ABC"}), account)
        bus = services.venues.create(VenueInput(**{**PLACE, "kind": "vehicle", "name": "", "plate": "98C-123.45",
                                                   "address": "", "parent_id": head.id}), account)
        now_ms = int(time.time() * 1000)
        Gate(services.storage, bus.id, "bus-1").scan([{"name": "Lê Văn An", "id": "001090000001",
                                                       "wall_ms": now_ms - 60_000}])
        page.goto(f"{base}/venues/{head.id}/reports")
        monday = dt.datetime.now(TZ).date() - dt.timedelta(days=dt.datetime.now(TZ).weekday())
        assert f"({monday:%d/%m}–" in page.locator("#week-text").inner_text()
        assert page.locator("#fact-venues").inner_text() == "2" and page.locator("#fact-vehicles").inner_text() == "1"
        assert "Xe BKS 98C-123.45" in page.locator("#report-places").inner_text()
        # Nothing on the page needs the reader to scroll sideways.
        assert page.evaluate("document.documentElement.scrollWidth") <= 390
        page.fill("#email", "baocao@abc.vn")
        page.click("#add-address")
        page.wait_for_url(f"{base}/venues/{head.id}/reports")
        assert page.locator("#flash").inner_text() == "Đã thêm địa chỉ nhận báo cáo tuần."
        assert "baocao@abc.vn" in page.locator("#addresses").inner_text()
        page.screenshot(path=str(shots / "report-phone.png"), full_page=True)
        page.locator("#addresses button").click()
        page.wait_for_url(f"{base}/venues/{head.id}/reports")
        assert "không nhận báo cáo nữa" in page.locator("#flash").inner_text()
        assert page.locator("#no-addresses").is_visible()
        with page.expect_download() as info:
            page.click("#report-pdf")
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.name.startswith("bao-cao-tuan-") and saved.read_bytes().startswith(b"%PDF")
        assert dialogs == []
        browser.close()
