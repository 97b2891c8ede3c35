"""A manager's roster day in a real headless browser (Debian's chromium through Playwright):
a refused hostile file, a good upload, who has not checked in today, printing passes (the
PDF's codes decode and verify), and revoking one."""

from __future__ import annotations

import datetime as dt
import time

import pypdfium2
import pytest
import zxingcpp
from playwright.sync_api import sync_playwright

from conftest import new_storage, serve_app
from qrgate.keyfiles import load_or_create_key
from qrgate.personal_pass import key_id, verify_pass
from server.accounts.sms import DevSmsSender
from server.ingest.stationconfig import StationConfigStore
from server.venues.venues import VenueInput
from server.web.app import create_app
from test_roster import Gate, TZ
from test_web_flows import ARGS, CHROMIUM, login

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
OWNER, MANAGER = "0912486419", "0976929792"
ROSTER = ("ma_nv,ho_ten,cccd,nam_sinh,bo_phan,dien_thoai\n"
          "NV001,Nguyễn Văn Lâm,024083123451,1983,Tổ cắt,0912486419\n"
          "NV002,Trần Thị Mai,,1990,Tổ may,\n"
          "NV003,Lê Thị Hồng Nhung,,1995,Tổ may,\n"
          "NV004,Phạm Văn Đức,001196004321,1988,Kho,0969201470\n")
HOSTILE = ("ma_nv,ho_ten\n"
           "NV001,<img src=x onerror=alert(1)>\n"
           "NV002,=cmd|' /C calc'!A0\n")


@pytest.fixture
def server(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)
    services = app.state.services
    owner = services.accounts.account_for_phone(OWNER)
    venue = services.venues.create(VenueInput(name="Công ty May Bắc Giang", kind="factory", label="", address="KCN Đình Trám",
                                              province="79", district="760", ward="26743", parent_id=None, plate=""),
                                   owner)
    services.venues.add_member(venue.id, services.accounts.account_for_phone(MANAGER), "manager")
    with serve_app(app, "web server start") as base:
        yield base, sender, storage, venue.id, tmp_path


def test_a_manager_uploads_sees_who_is_missing_prints_and_revokes(server):
    base, sender, storage, venue, tmp_path = server
    (tmp_path / "hostile.csv").write_text(HOSTILE, encoding="utf-8")
    (tmp_path / "roster.csv").write_text(ROSTER, encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(accept_downloads=True)
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        login(page, base, sender, MANAGER)

        page.goto(f"{base}/venues/{venue}/roster")
        assert page.locator("#roster-empty").is_visible()
        page.set_input_files("#file", str(tmp_path / "hostile.csv"))
        page.click("#upload-send")
        problems = page.locator("#upload-problems")
        problems.wait_for()
        assert "trông như công thức bảng tính" in problems.inner_text()
        assert "chỉ được có chữ cái" in problems.inner_text()
        assert page.locator("img").count() == 0 and dialogs == []

        page.set_input_files("#file", str(tmp_path / "roster.csv"))
        page.click("#upload-send")
        page.locator("#upload-done").wait_for()
        assert "thêm 4" in page.locator("#upload-done").inner_text()
        assert page.locator("#roster tbody tr").count() == 4
        assert "Lê Thị Hồng Nhung" in page.locator("#roster").inner_text()  # a manager sees full names
        assert "*********451" in page.locator("#roster").inner_text()  # ID numbers are masked for all roles
        assert "024083123451" not in page.content()

        # NV001 checks in at the gate this morning with the chip ID card.
        Gate(storage, venue, "gate-1").scan(dt.datetime.now(TZ), "cccd", "024083123451")
        page.click("#absent-link")
        assert page.locator("#absent-count").inner_text() == "3 / 4 người chưa quét"
        missing = page.locator("#absent tbody tr").evaluate_all("rows => rows.map(r => r.dataset.employee)")
        assert sorted(missing) == ["NV002", "NV003", "NV004"]

        # Passes for the two people without a phone, picked on the roster.
        page.goto(f"{base}/venues/{venue}/roster")
        for number in ("NV002", "NV003"):
            page.locator(f"#roster tr[data-employee='{number}'] input.pick").check()
        page.fill("#days", "30")
        page.click("#issue-selected")
        page.locator(".notice-line").first.wait_for()
        assert "Đã cấp 2 thẻ (đợt 1)." in page.locator(".notice-line").first.inner_text()
        with page.expect_download() as download:
            page.click("#pdf-1")
        pdf = download.value.path().read_bytes()
        document = pypdfium2.PdfDocument(pdf)
        image = document[0].render(scale=150 / 72).to_pil()
        texts = [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
        key = load_or_create_key(tmp_path / "pass-signing.key").public_key()
        claims = [verify_pass(t, {key_id(key): key}, dt.datetime.now(TZ).date()) for t in texts]
        assert sorted(c["n"] for c in claims) == ["Lê Thị Hồng Nhung", "Trần Thị Mai"]
        assert all(c["exp"] == (dt.date.fromisoformat(c["iat"]) + dt.timedelta(days=29)).isoformat() for c in claims)

        # Trần Thị Mai lost hers: revoke (the browser asks to confirm) and reissue.
        lost = next(c["pid"] for c in claims if c["n"] == "Trần Thị Mai")
        row = page.locator(f"#passes tr[data-pid='{lost}']")
        row.locator("input[name=reason]").fill("mất thẻ <b>ở cổng</b>")
        row.locator("input[name=reissue]").check()
        row.locator("button").click()
        page.locator(f"#passes tr[data-pid='{lost}'].state-revoked").wait_for()
        assert dialogs == ["Thu hồi thẻ này? Các trạm sẽ từ chối thẻ."]
        assert "mất thẻ <b>ở cổng</b>" in page.locator(f"#passes tr[data-pid='{lost}']").inner_text()
        notices = " ".join(page.locator(".notice-line").all_inner_texts())
        assert f"Đã thu hồi thẻ {lost}." in notices and "Thẻ mới" in notices
        active = page.locator("#passes tr.state-active")
        assert active.count() == 2
        # The replacement is valid to the same day as the lost card.
        expiry = next(c["exp"] for c in claims if c["n"] == "Trần Thị Mai")
        replacement = active.filter(has_text="Trần Thị Mai")
        shown = dt.date.fromisoformat(expiry).strftime("%d/%m/%Y")  # as people write a date
        assert shown in replacement.inner_text() and lost not in replacement.inner_text()
        browser.close()
    assert StationConfigStore(storage).blocked_keys(int(time.time() * 1000)) == [f"pass:{lost}"]


def test_replacing_the_roster_asks_first_and_merging_does_not(server):
    base, sender, storage, venue, tmp_path = server
    (tmp_path / "roster.csv").write_text(ROSTER, encoding="utf-8")
    (tmp_path / "two.csv").write_text("\n".join(ROSTER.splitlines()[:3]) + "\n", encoding="utf-8")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        answers, asked = [False, True], []
        page.on("dialog", lambda d: (asked.append(d.message), d.accept() if answers.pop(0) else d.dismiss()))
        login(page, base, sender, OWNER)
        page.goto(f"{base}/venues/{venue}/roster")
        page.set_input_files("#file", str(tmp_path / "roster.csv"))
        page.click("#upload-send")  # merge: nothing to ask
        page.locator("#upload-done").wait_for()
        assert asked == [] and page.locator("#roster tbody tr").count() == 4

        page.click("#upload summary")
        page.set_input_files("#file", str(tmp_path / "two.csv"))
        page.check("#mode-replace")
        page.click("#upload-send")  # "no": the roster stays as it is
        assert asked == ["Thay thế cả danh sách bằng tệp này? Người không có trong tệp sẽ bị xoá và thẻ ra vào "
                         "của họ bị thu hồi."]
        assert page.locator("#roster tbody tr").count() == 4
        with page.expect_navigation():
            page.click("#upload-send")  # "yes"
        assert "xoá 2" in page.locator("#upload-done").inner_text()
        assert page.locator("#roster tbody tr").count() == 2
        browser.close()
