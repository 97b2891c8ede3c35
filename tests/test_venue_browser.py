"""The venue form and page in a real headless browser (Chromium through Playwright), on a
phone's screen: the communes offered are those of the chosen province (2025 map), the
contact person is saved, and closing the venue asks first and then says what it did."""

from __future__ import annotations

import shutil

import pytest
from playwright.sync_api import sync_playwright

from conftest import new_storage, serve_app
from server.accounts.sms import DevSmsSender
from server.web.app import create_app

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]


def test_an_owner_registers_a_venue_on_the_2025_map_and_closes_it_after_confirming(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    app = create_app(storage, sender=DevSmsSender())
    token = app.state.services.accounts.issue_login_link("0912486419")
    with serve_app(app, "web server start") as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(viewport={"width": 390, "height": 844}, is_mobile=True, has_touch=True).new_page()
        answers, dialogs = [False], []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept() if answers[0] else d.dismiss()))
        page.goto(f"{base}/login/link?token={token}&next=/venues/new")
        page.select_option("#kind", "market")
        page.fill("#name", "TP-Chợ Bến Thành")
        page.fill("#address", "Số 1 Lê Lợi")
        assert page.locator("#district").count() == 0  # no district level since 1 July 2025
        page.select_option("#province", "79")
        page.wait_for_selector("#ward option[value='26743']", state="attached")
        wards = page.locator("#ward option").all_inner_texts()
        assert len(wards) == 169 and "Phường Bến Thành" in wards and "Phường Ba Đình" not in wards
        page.select_option("#ward", "26743")
        page.fill("#contact_name", "Nguyễn Thị Liên")
        page.fill("#contact_phone", "0912 486 419")
        page.click("#save-venue")
        assert page.locator("#flash").inner_text() == "Đã tạo địa điểm."
        assert page.locator("#venue-address").inner_text() == "Số 1 Lê Lợi, Phường Bến Thành, Thành phố Hồ Chí Minh"
        assert "Nguyễn Thị Liên" in page.locator("#contact").inner_text()
        venue_id = int(page.url.rsplit("/", 1)[1])
        services = app.state.services
        services.venues.add_member(venue_id, services.accounts.account_for_phone("0976929792"), "manager")
        page.reload()
        answers[0] = True
        page.click("#members button[data-phone='0976929792']")
        page.wait_for_selector("#flash")
        assert page.locator("#flash").inner_text() == "Đã hủy quyền truy cập của người này."
        assert dialogs.pop() == "Hủy quyền truy cập của 0976929792?"
        assert "0976929792" not in page.locator("#members").inner_text()
        answers[0] = False
        page.click("#close-venue")
        assert dialogs and dialogs[0].startswith("Đóng cửa địa điểm TP-Chợ Bến Thành?")
        assert page.locator("#closed-notice").count() == 0  # dismissed: nothing happened
        answers[0] = True
        page.click("#close-venue")
        page.wait_for_selector("#closed-notice")
        assert page.locator("#flash").inner_text().startswith("Đã đóng cửa địa điểm")
        assert page.locator("#selfcheckin-link").count() == 0
        browser.close()
