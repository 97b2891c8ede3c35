"""Exporting check-ins in a real headless browser (Debian's chromium through Playwright):
an owner asks for an XLSX file, watches the progress bar reach 100 %, downloads it, and
the file opened with openpyxl shows hostile names as text; a gate controller cannot.

Screenshots go to $QRGATE_TEST_ARTIFACTS/export when that variable is set, else to the
test's temporary folder.
"""

from __future__ import annotations

import datetime as dt
import os
import time
from pathlib import Path

import openpyxl
import pytest
from playwright.sync_api import expect, sync_playwright

from conftest import new_storage, serve_app
from qrgate.masking import mask_person_name
from server.accounts.sms import DevSmsSender
from server.venues.venues import VenueInput
from server.web.app import create_app
from test_export import CONTROLLER, HOSTILE, OWNER, TZ, Gate, _bulk_rows
from test_web_flows import ARGS, CHROMIUM, login
from test_web_support import PLACE

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
BULK = 20_000  # enough rows that the file takes a moment and the bar has something to show


@pytest.fixture
def server(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)
    with serve_app(app, "web server start") as base:
        yield base, sender, app


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("QRGATE_TEST_ARTIFACTS") or tmp_path) / "export"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def venue_with_checkins(app) -> int:
    services = app.state.services
    owner = services.accounts.account_for_phone(OWNER)
    venue = services.venues.create(VenueInput(**{**PLACE, "name": "Chợ =cmd|' /C calc'!A0 <b>Bến Thành</b>"}), owner)
    services.venues.add_member(venue.id, services.accounts.account_for_phone(CONTROLLER), "controller")
    now_ms = int(time.time() * 1000)
    midnight = dt.datetime.fromtimestamp(now_ms / 1000, TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    start_ms = int(midnight.timestamp() * 1000)
    _bulk_rows(services.storage, venue.id, BULK, start_ms)
    Gate(services.storage, venue.id).scan([{"name": n, "id": f"00109000{i:04d}", "wall_ms": min(now_ms, start_ms + 60_000 * (i + 1))}
                                           for i, n in enumerate(HOSTILE)])
    return venue.id


def test_owner_watches_the_export_progress_and_gets_a_safe_xlsx(server, shots, tmp_path):
    base, sender, app = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        owner = browser.new_context(accept_downloads=True).new_page()
        dialogs = []
        owner.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(owner, base, sender, OWNER)
        venue = venue_with_checkins(app)
        owner.goto(f"{base}/venues/{venue}/export")
        assert "=cmd|' /C calc'!A0 <b>Bến Thành</b>" in owner.locator("#venue-name").inner_text()
        # The quick CSV link follows the chosen days and gives a CSV with a BOM, formulas neutralised.
        today = dt.datetime.now(TZ).date().isoformat()
        owner.fill("#start", today)
        href = owner.locator("#quick-csv").get_attribute("href")
        assert href.endswith(f"?venue={venue}&from={today}&to={today}")
        quick = owner.request.get(base + href)
        assert quick.status == 200 and quick.body().startswith(b"\xef\xbb\xbf")
        assert "\n'=cmd|' /* c*******" in quick.text().replace(",", "\n")
        owner.select_option("#format", "xlsx")
        owner.screenshot(path=str(shots / "export-form.png"), full_page=True)
        owner.click("#start-export")
        owner.wait_for_url(f"{base}/exports/*")
        job_id = owner.url.rsplit("/", 1)[1]
        bar = owner.locator("#export-bar")
        # The page's script polls the job and moves the bar; wait for it to reach 100.
        expect(owner.locator("#export-percent")).to_have_text("100 %", timeout=90_000)
        assert bar.evaluate("bar => bar.value") == 100 and bar.get_attribute("max") == "100"
        assert owner.locator("#export-percent").inner_text() == "100 %"
        assert owner.locator("#export-rows").inner_text().startswith(f"{BULK + len(HOSTILE)} / {BULK + len(HOSTILE)}")
        download_link = owner.locator("#export-download")
        assert download_link.is_visible()
        owner.screenshot(path=str(shots / "export-done.png"), full_page=True)
        with owner.expect_download() as info:
            download_link.click()
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.name.startswith(f"luot-ra-vao-dia-diem-{venue}-") and saved.suffix == ".xlsx"

        sheet = openpyxl.load_workbook(saved).active
        assert sheet.max_row == 1 + BULK + len(HOSTILE)
        assert [c.value for c in sheet[1]][:4] == ["Thời gian", "Địa điểm", "Chiều", "Họ tên"]
        names = {sheet.cell(row=r, column=4).value: sheet.cell(row=r, column=4)
                 for r in range(sheet.max_row - len(HOSTILE) + 1, sheet.max_row + 1)}
        for name in HOSTILE[:4] + HOSTILE[7:]:  # =cmd, +1, -2+3, @SUM, the HTML one, the Vietnamese one
            assert names[mask_person_name(name)].data_type == "s"  # text, not a formula
        assert "Lê V*** H***" in names
        assert names["=cmd|' /* c*******"].quotePrefix
        assert not any(c.data_type == "f" for row in sheet.iter_rows() for c in row)
        # The file was deleted after its download: a second fetch finds nothing.
        again = owner.request.get(f"{base}/exports/{job_id}/download")
        assert again.status == 404
        assert dialogs == []
        browser.close()
    audit = app.state.services.audit.for_venue(venue)
    assert any(e.action == "qrgate.venue.checkins.exported" and e.data["format"] == "xlsx" for e in audit)


def test_a_gate_controller_cannot_export_or_see_an_owners_job(server, shots):
    base, sender, app = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        owner = browser.new_context().new_page()
        login(owner, base, sender, OWNER)
        venue = venue_with_checkins(app)
        owner.goto(f"{base}/venues/{venue}/export")
        owner.select_option("#format", "csv")
        owner.click("#start-export")
        owner.wait_for_url(f"{base}/exports/*")
        job_id = owner.url.rsplit("/", 1)[1]

        controller = browser.new_context().new_page()
        login(controller, base, sender, CONTROLLER)
        response = controller.goto(f"{base}/venues/{venue}/export")
        assert response.status == 403
        assert "Bạn không có quyền" in controller.locator("main").inner_text()
        controller.screenshot(path=str(shots / "export-controller.png"), full_page=True)
        assert controller.goto(f"{base}/exports/{job_id}").status == 404
        assert controller.request.get(f"{base}/api/exports/{job_id}").status == 404
        assert controller.request.get(f"{base}/exports/{job_id}/download").status == 404
        assert controller.request.get(f"{base}/venues/{venue}/export.csv").status == 403
        expect(owner.locator("#export-percent")).to_have_text("100 %", timeout=90_000)
        browser.close()


def test_owner_chooses_several_venues_for_one_file(server, shots, tmp_path):
    base, sender, app = server
    services = app.state.services
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        owner = browser.new_context(accept_downloads=True).new_page()
        dialogs = []
        owner.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        login(owner, base, sender, OWNER)
        account = services.accounts.account_for_phone(OWNER)
        head = services.venues.create(VenueInput(**{**PLACE, "name": "Công ty TNHH ABC"}), account)
        bus = services.venues.create(VenueInput(**{**PLACE, "kind": "vehicle", "name": "", "plate": "98C-123.45",
                                                   "address": "", "parent_id": head.id}), account)
        now_ms = int(time.time() * 1000)
        for n, venue in enumerate((head, bus)):
            Gate(services.storage, venue.id, f"gate-{n}").scan([
                {"name": f"Công Nhân {n}", "id": f"00109000{n:04d}", "wall_ms": now_ms - 60_000 * (n + 1)}])
        owner.goto(f"{base}/exports")
        boxes = owner.locator("#venues input[name=venue]")
        assert boxes.count() == 2 and all(boxes.nth(i).is_checked() for i in range(2))
        owner.click("#venues-none")
        assert not any(boxes.nth(i).is_checked() for i in range(2))
        assert "venue=" not in owner.locator("#quick-csv").get_attribute("href")
        owner.click("#venues-all")
        href = owner.locator("#quick-csv").get_attribute("href")
        assert f"venue={head.id}&venue={bus.id}&from=" in href
        owner.screenshot(path=str(shots / "export-several.png"), full_page=True)
        owner.select_option("#format", "csv")
        owner.click("#start-export")
        owner.wait_for_url(f"{base}/exports/*")
        assert "Đã bắt đầu tạo tệp" in owner.locator("#flash").inner_text()
        expect(owner.locator("#export-percent")).to_have_text("100 %", timeout=90_000)
        with owner.expect_download() as info:
            owner.locator("#export-download").click()
        saved = tmp_path / info.value.suggested_filename
        info.value.save_as(saved)
        assert saved.name.startswith("luot-ra-vao-2-dia-diem-")
        text = saved.read_text(encoding="utf-8-sig")
        assert "Công ty TNHH ABC" in text and "Xe BKS 98C-123.45" in text and ",Vào," in text
        assert dialogs == []
        browser.close()
