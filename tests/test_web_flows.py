"""The venue web UI in a real headless browser (Debian's chromium through Playwright):
log in with a code, register a venue, download its poster, check in through the poster's
link on a phone-sized page, share with two numbers, confirm as one, revoke, read the history.

Screenshots go to $QRGATE_TEST_ARTIFACTS/web_flows when that variable is set, else to the
test's temporary folder.
"""

from __future__ import annotations

import io
import os
import shutil
from pathlib import Path

import pytest
import zxingcpp
from PIL import Image
from playwright.sync_api import sync_playwright

from conftest import new_storage, serve_app
from server.accounts.accounts import normalise_phone
from server.accounts.sms import DevSmsSender
from server.web.app import create_app
from test_web_support import CODE_IN_SMS

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE_SCREEN = {"viewport": {"width": 390, "height": 844}, "is_mobile": True, "has_touch": True,
                "device_scale_factor": 2}
OWNER, ANH, BINH = "0912486419", "0976929792", "0969201470"


@pytest.fixture
def server(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender, public_feed=False)
    with serve_app(app, "web server start") as base:
        yield base, sender, app


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("QRGATE_TEST_ARTIFACTS") or tmp_path) / "web_flows"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def login(page, base: str, sender: DevSmsSender, phone: str) -> None:
    page.goto(f"{base}/login")
    page.fill("#phone", phone)
    page.click("#send-code")
    page.wait_for_selector("#code")
    page.fill("#code", CODE_IN_SMS.search(sender.last_text_to(normalise_phone(phone))).group(1))
    page.click("#check-code")
    # Each lands where their work is: venue members on their venues, officers on their areas.
    page.wait_for_url(lambda url: url.split("?")[0] in (f"{base}/venues", f"{base}/area", f"{base}/fleet"))


def open_menu(page) -> None:
    """On a phone the top menu is folded into one button: open it (on a wide screen it is open)."""
    if page.locator("#menu-button").is_visible():
        page.click("#menu-button")


def fits_the_screen(page) -> bool:
    return page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")


def test_venue_life_from_login_to_history(server, shots):
    base, sender, app = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        dialogs = []
        owner = browser.new_context(**PHONE_SCREEN, accept_downloads=True).new_page()
        owner.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))

        login(owner, base, sender, "0912 486 419")
        assert owner.locator("#flash").inner_text() == "Bạn đã đăng nhập."
        open_menu(owner)
        assert owner.locator("#me").inner_text() == OWNER
        assert owner.locator("#nav-venues").get_attribute("aria-current") == "page"
        owner.keyboard.press("Escape")  # the open menu folds away again
        assert not owner.locator("#me").is_visible()
        owner.screenshot(path=shots / "01-venues-empty.png", full_page=True)

        owner.click("#new-venue")
        owner.select_option("#kind", "market")
        owner.fill("#name", "TP-Chợ <b>Bến Thành</b>")
        owner.select_option("#province", "79")
        # Only the communes and wards of the chosen province are offered (two levels since 2025),
        # fetched when the province changes: wait for them to arrive.
        owner.locator('#ward option[value="26743"]').wait_for(state="attached")
        offered = owner.locator("#ward option:not([hidden])").all_inner_texts()
        assert "Phường Bến Thành" in offered and not any("Hoàn Kiếm" in name for name in offered)
        owner.select_option("#ward", "26743")
        owner.fill("#address", "Số 1 Lê Lợi")
        assert fits_the_screen(owner)
        owner.screenshot(path=shots / "02-venue-form.png", full_page=True)
        owner.click("#save-venue")
        owner.wait_for_selector("#venue-name")
        assert owner.locator("#venue-name").inner_text() == "TP-Chợ <b>Bến Thành</b>"
        assert owner.locator("#venue-name b").count() == 0
        address = owner.locator("#venue-address").inner_text()
        assert "Phường Bến Thành" in address and "Thành phố Hồ Chí Minh" in address
        assert owner.locator("#my-role").inner_text() == "Chủ sở hữu"
        assert fits_the_screen(owner)
        owner.screenshot(path=shots / "03-venue.png", full_page=True)
        venue_url = owner.url

        with owner.expect_download() as pdf:
            owner.click("#poster-pdf")
        assert Path(pdf.value.path()).read_bytes().startswith(b"%PDF")
        with owner.expect_download() as png:
            owner.click("#poster-png")
        poster = Image.open(io.BytesIO(Path(png.value.path()).read_bytes()))
        poster.save(shots / "04-poster.png")
        checkin_url = zxingcpp.read_barcodes(poster)[0].text
        assert checkin_url.startswith(f"{base}/c/")

        # A visitor's phone opens the poster's link and checks in, then out.
        visitor = browser.new_context(**PHONE_SCREEN).new_page()
        visitor.goto(checkin_url)
        visitor.fill("#id_number", "001090000123")
        visitor.fill("#name", "Lê Văn An")
        visitor.fill("#birth_year", "1990")
        assert fits_the_screen(visitor)
        visitor.screenshot(path=shots / "05-self-checkin.png", full_page=True)
        visitor.click("#check-in")
        visitor.wait_for_selector("#done")
        assert "VÀO" in visitor.locator("#done").inner_text() and "Lê V** A*" in visitor.locator("#done").inner_text()
        visitor.screenshot(path=shots / "06-self-checkin-done.png", full_page=True)
        # The phone remembers the person: next time it is one tap.
        visitor.goto(checkin_url)
        assert visitor.input_value("#id_number") == "001090000123"
        assert visitor.input_value("#name") == "Lê Văn An"
        visitor.click("#check-out")
        visitor.wait_for_selector("#done")
        assert "RA" in visitor.locator("#done").inner_text()

        owner.goto(venue_url)
        rows = owner.locator("#checkins tbody tr")
        assert rows.count() == 2
        assert owner.locator("#checkins .tag.self").count() == 2
        assert "Lê V** A*" in owner.locator("#checkins").inner_text()
        assert "Văn" not in owner.locator("#checkins").inner_text()

        # Share with two numbers at once as managers.
        owner.click("#share")
        owner.fill("#phones", "0976 929 792, +84969201470")
        owner.check("input[name=role][value=manager]")
        owner.click("#share-submit")
        assert ANH in owner.locator("#sent").inner_text() and BINH in owner.locator("#sent").inner_text()
        owner.screenshot(path=shots / "07-share.png", full_page=True)

        # Anh logs in on her own phone and confirms with the code sent to her.
        anh = browser.new_context(**PHONE_SCREEN).new_page()
        login(anh, base, sender, ANH)
        anh.click("#invitations a")
        share_sms = next(m.text for m in sender.outbox if m.phone == ANH and "chia sẻ" in m.text)
        anh.fill("#code", share_sms.split("Mã xác nhận: ")[1][:6])
        anh.click("#accept")
        anh.wait_for_selector("#my-role")
        assert anh.locator("#my-role").inner_text() == "Người quản lý"
        anh_venue_url = anh.url

        owner.goto(venue_url)
        assert ANH in owner.locator("#members").inner_text()
        assert BINH in owner.locator("#pending").inner_text()
        owner.click(f"#members button[data-phone='{ANH}']")
        owner.wait_for_url(venue_url)
        assert ANH not in owner.locator("#members").inner_text()
        anh.goto(anh_venue_url)
        assert "Không tìm thấy" in anh.locator("#error").inner_text()

        owner.click("#history")
        history = owner.locator("#history tbody").inner_text()
        assert "đã được chia sẻ cho 0976929792 với vai trò Người quản lý" in history
        assert "Hủy chia sẻ: 0976929792 đã bị hủy vai trò Người quản lý" in history
        assert "Tải file" in history and "127.0.0.1" in history
        owner.screenshot(path=shots / "08-history.png", full_page=True)

        open_menu(owner)
        owner.click("#lang")
        assert owner.locator("h1").inner_text() == "History"
        open_menu(owner)
        owner.click("#logout")
        assert owner.locator("#flash").inner_text() == "You are logged out."
        owner.goto(venue_url)
        assert "/login" in owner.url
        # Only the questions the pages ask before an action: nothing a hostile name wrote.
        assert all(message.endswith("?") or "?" in message for message in dialogs), dialogs
        browser.close()


def test_a_wrong_code_is_refused_on_the_page_and_the_hostile_number_is_not_run(server, shots):
    base, sender, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_context(**PHONE_SCREEN).new_page()
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
        page.goto(f"{base}/login")
        page.fill("#phone", "<img src=x onerror=alert(1)>")
        page.click("#send-code")
        assert "Số điện thoại không hợp lệ" in page.locator("#error").inner_text()
        page.fill("#phone", OWNER)
        page.click("#send-code")
        right = CODE_IN_SMS.search(sender.last_text_to(OWNER)).group(1)
        page.fill("#code", "000000" if right != "000000" else "111111")
        page.click("#check-code")
        assert "Mã không đúng" in page.locator("#error").inner_text()
        page.screenshot(path=shots / "09-wrong-code.png", full_page=True)
        assert dialogs == []
        browser.close()


def test_logging_out_on_every_device_asks_first_and_ends_the_other_sessions_too(server, shots):
    base, sender, _ = server
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        laptop = browser.new_context().new_page()
        phone = browser.new_context(**PHONE_SCREEN).new_page()
        asked = []
        phone.on("dialog", lambda d: (asked.append(d.message), d.dismiss() if len(asked) == 1 else d.accept()))
        login(laptop, base, sender, OWNER)
        login(phone, base, sender, OWNER)
        open_menu(phone)
        phone.click("#me")
        assert "2 trình duyệt hoặc thiết bị" in phone.locator("#sessions").inner_text()
        assert fits_the_screen(phone)
        phone.click("#logout-all")  # the first answer is "no": nothing happens
        assert asked == ["Đăng xuất trên mọi thiết bị? Bạn sẽ phải đăng nhập lại bằng mã gửi qua tin nhắn."]
        assert phone.url.endswith("/account")
        phone.click("#logout-all")
        phone.locator("#flash").wait_for()
        assert phone.locator("#flash").inner_text() == "Bạn đã đăng xuất trên mọi thiết bị, kể cả thiết bị này."
        phone.screenshot(path=shots / "10-logged-out-everywhere.png", full_page=True)
        laptop.goto(f"{base}/venues")
        assert "/login" in laptop.url
        browser.close()
