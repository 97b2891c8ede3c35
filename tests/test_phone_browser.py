"""A phone is a station, in a real headless Chromium at phone size with a real camera stream.

Chromium reads a video file as its camera (``--use-file-for-fake-video-capture``); the
video is made here, with Debian's ffmpeg, from QR images of the test payloads
(qrgate/samples.py). One browser profile is the phone: it is closed and opened again
between the steps, as a phone's browser is, and keeps its IndexedDB and service worker.

1. A gate controller enrols the phone by showing the venue's setup code to its camera.
2. Online: the camera reads three people (one of them a signed pass) and a web address,
   a keyboard-mode scanner types a fourth; green for each person, red for the address.
3. Offline (Playwright's offline switch): the page opens from the service worker, the
   camera reads two more people and a broken card; the two are shown "đã ghi khi mất
   mạng" and nothing reaches the server; the browser is closed.
4. Online again, the scanner page not open: the service worker delivers on the browser's
   "sync"; every scan is stored once with a valid signature, named as the phone's; a
   replayed upload stores nothing new, a forged one is refused.

Screenshots go to $QRGATE_TEST_ARTIFACTS/phone when that variable is set, else to the
test's temporary folder; with QRGATE_SCREENSHOTS=docs they replace the ones docs/web.md
shows (docs/img/phone-*.png).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from PIL import Image
from playwright.sync_api import expect, sync_playwright

from conftest import REPO, new_storage, serve_app, unavailable, wait_until
from qrgate import protocol
from qrgate.samples import demo_samples, write_qr_png
from server.accounts.sms import DevSmsSender
from server.ingest.enrol import enrol_code_text
from server.ingest.stationconfig import StationConfigStore, StationSettings
from server.phone import assets
from server.phone.service import attach
from server.venues.venues import VenueInput
from server.web.app import create_app
from test_web_flows import ARGS, CHROMIUM, PHONE_SCREEN, login
from test_web_support import PLACE

pytestmark = [pytest.mark.browser, pytest.mark.timeout(300)]
OWNER, CONTROLLER = "0912486419", "0976929792"
FPS = 5
OFFLINE_BY_KEYBOARD = "******098765|TRAN VAN AN|1990-**-**|0|5d7e9f01|"


def require_tools() -> str:
    ffmpeg = shutil.which("ffmpeg")
    if ffmpeg is None:
        unavailable("ffmpeg not installed (apt install ffmpeg): it makes the fake camera's video")
    if assets.missing():
        unavailable(f"the phone scanner's npm files are not set up: python -m server.phone.assets "
                    f"({', '.join(assets.missing())})")
    return ffmpeg


def camera_video(folder: Path, texts: list[str], ffmpeg: str) -> Path:
    """A .y4m video showing each text as a QR code for a second, a blank frame between
    codes; Chromium plays it as its camera, looping."""
    folder.mkdir(parents=True, exist_ok=True)
    blank = folder / "blank.png"
    Image.new("L", (64, 48), 255).save(blank)
    lines = []
    for i, text in enumerate(texts):
        image = write_qr_png(text, folder / f"code-{i}.png", scale=4)
        lines += [f"file '{blank}'", "duration 0.6", f"file '{image}'", "duration 1.0"]
    lines += [f"file '{blank}'", "duration 0.6", f"file '{blank}'"]  # concat wants the last file twice
    (folder / "list.txt").write_text("\n".join(lines) + "\n")
    video = folder / "camera.y4m"
    subprocess.run([ffmpeg, "-loglevel", "error", "-y", "-f", "concat", "-safe", "0", "-i", str(folder / "list.txt"),
                    "-vf", "scale=640:480:force_original_aspect_ratio=decrease:flags=neighbor,"
                           "pad=640:480:(ow-iw)/2:(oh-ih)/2:color=white,format=yuv420p",
                    "-r", str(FPS), str(video)], check=True, timeout=120)
    return video


@pytest.fixture
def server(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)
    pass_key = Ed25519PrivateKey.generate()
    attach(app, sealing_key=X25519PrivateKey.generate(), pass_key=pass_key)
    services = app.state.services
    owner = services.accounts.account_for_phone(OWNER)
    venue = services.venues.create(VenueInput(**{**PLACE, "name": "Xưởng may <b>Tân Phú</b>"}), owner)
    services.venues.add_member(venue.id, services.accounts.account_for_phone(CONTROLLER), "controller")
    with serve_app(app, "web server start") as base:
        yield base, sender, app, venue.id, pass_key


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("QRGATE_TEST_ARTIFACTS") or tmp_path) / "phone"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


class PhoneBrowser:
    """The phone's browser: one profile folder, opened with a given video as its camera."""

    def __init__(self, playwright, profile: Path, base: str):
        self.playwright = playwright
        self.profile = profile
        self.base = base
        self.context = None

    def open(self, video: Path | None = None):
        camera = ["--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                  f"--use-file-for-fake-video-capture={video}"] if video else []
        self.context = self.playwright.chromium.launch_persistent_context(
            str(self.profile), executable_path=CHROMIUM, **PHONE_SCREEN, locale="vi-VN", args=[*ARGS, *camera])
        self.context.grant_permissions(["camera"], origin=self.base)
        return self.context

    def close(self):
        self.context.close()
        self.context = None


def shot(page, shots: Path, name: str) -> None:
    """The screen as a small palette PNG; with QRGATE_SCREENSHOTS=docs also into docs/img,
    where docs/web.md shows it (as tests/test_layout_browser.py does)."""
    path = shots / f"{name}.png"
    page.screenshot(path=str(path))
    with Image.open(path) as image:
        small = image.convert("RGB").quantize(colors=64, method=Image.Quantize.MEDIANCUT)
    small.save(path, optimize=True)
    if os.environ.get("QRGATE_SCREENSHOTS") == "docs":
        (REPO / "docs" / "img").mkdir(exist_ok=True)
        shutil.copyfile(path, REPO / "docs" / "img" / path.name)


def outcomes(page) -> list[dict]:
    return page.evaluate("window.qrgatePhone.log")


def wait_for_results(page, wanted: dict[str, int], timeout: float = 90) -> None:
    """Until the page has decided at least ``wanted`` of each result (the video loops).
    Polled from here: Playwright's wait_for_function would evaluate text in the page,
    which the page's Content-Security-Policy forbids."""
    def enough() -> bool:
        log = outcomes(page)
        return all(sum(o["result"] == result for o in log) >= n for result, n in wanted.items())

    wait_until(enough, timeout, f"the page to decide {wanted}")


def stored_records(storage, station_id: str) -> list[dict]:
    return [json.loads(r[0]) for r in storage.sql.rows(
        "SELECT record FROM checkins WHERE station_id = ? ORDER BY seq", [station_id])]


def test_a_phone_enrols_scans_online_and_offline_and_every_scan_is_stored_once(server, shots, tmp_path):
    base, sender, app, venue_id, pass_key = server
    ffmpeg = require_tools()
    storage = app.state.services.storage
    samples = {s.name: s for s in demo_samples(pass_key)}
    token = app.state.services.enrolment.create_token(venue_id, minutes=10, created_by=OWNER)
    enrol_video = camera_video(tmp_path / "enrol", [enrol_code_text(base, token)], ffmpeg)
    online_video = camera_video(tmp_path / "online", [samples["01-cccd-nguyen-gia-manh"].text,
                                                      samples["03-bhyt-le-viet-hung"].text,
                                                      samples["06-pass-vo-thi-hoa"].text,
                                                      samples["07-url"].text], ffmpeg)
    offline_video = camera_video(tmp_path / "offline", [samples["02-cccd-dang-thi-uyen"].text,
                                                        samples["04-bhyt-new-tran-thu-ha"].text,
                                                        samples["09-bhyt-bad-hex"].text], ffmpeg)
    scanner = f"{base}/phone/venues/{venue_id}"
    with sync_playwright() as p:
        phone = PhoneBrowser(p, tmp_path / "profile", base)

        # 1. Enrolment: the setup code shown to the phone's camera.
        page = phone.open(enrol_video).new_page()
        login(page, base, sender, CONTROLLER)
        page.goto(scanner)
        expect(page.locator("#enrol")).to_be_visible()
        shot(page, shots, "phone-enrol")
        page.click("#enrol-scan")
        expect(page.locator("#device-label")).to_have_text("Điện thoại số 1", timeout=60_000)
        expect(page.locator("#scan-message")).to_contain_text("Đã gắn điện thoại: Điện thoại số 1")
        station_id = "phone-1"
        key = protocol.public_key_from_text(storage.station(station_id).public_key)
        assert page.evaluate("navigator.serviceWorker.ready.then(r => Boolean(r.active))")
        phone.close()
        # The venue keeps a person counted for an hour: the looping video counts each once.
        StationConfigStore(storage).set_settings(station_id, StationSettings(mode="toggle", repeat_window_s=3600.0))

        # 2. Online: three people and a web address from the camera, then a USB scanner.
        page = phone.open(online_video).new_page()
        page.goto(scanner)
        wait_until(lambda: page.evaluate("window.qrgatePhone.policy && window.qrgatePhone.policy.repeatWindowMs") == 3_600_000,
                   30, "the page to apply the venue's repeat window")
        page.click("#start")
        wait_for_results(page, {"accepted": 3, "refused": 1})
        page.click("#start")  # the camera stopped: a USB scanner types the next codes
        page.keyboard.type(samples["05-national-pham-quoc-bao"].text, delay=2)
        page.keyboard.press("Enter")
        expect(page.locator('#result[data-result="accepted"]')).to_be_visible()
        expect(page.locator("#result-line")).to_have_text("PHAM Q*** B**")
        shot(page, shots, "phone-accepted")
        page.keyboard.type(samples["08-wifi"].text, delay=2)
        page.keyboard.press("Enter")
        expect(page.locator('#result[data-result="refused"]')).to_be_visible()
        expect(page.locator("#result-line")).to_have_text("Mã không hỗ trợ")
        shot(page, shots, "phone-refused")
        log = outcomes(page)
        accepted = [o for o in log if o["result"] == "accepted"]
        assert {o["masked"] for o in accepted} == {"Nguyễn G** M***", "Lê V*** H***", "Võ T** H**", "PHAM Q*** B**"}
        assert len(accepted) == 4 and all(o["direction"] == "in" for o in accepted)
        assert {o["reason"] for o in log if o["result"] == "refused"} == {"unknown_format"}
        wait_until(lambda: storage.count_checkins(station_id) == 4, 30, "the online scans stored")
        expect(page.locator("#recent-list li[data-state=stored]")).to_have_count(4)
        expect(page.locator("#backlog")).to_have_text("Chờ gửi: 0")
        phone.close()

        # 3. Offline: the page opens from the service worker; scans are kept on the phone.
        context = phone.open(offline_video)
        context.set_offline(True)
        page = context.new_page()
        page.goto(scanner)
        expect(page.locator("#net")).to_have_text("Mất mạng")
        page.click("#start")
        wait_for_results(page, {"accepted_offline": 2, "refused": 1})
        assert {o["reason"] for o in outcomes(page) if o["result"] == "refused"} == {"bad_encoding"}
        page.click("#start")  # the camera stopped; one more person from the USB scanner
        page.keyboard.type(OFFLINE_BY_KEYBOARD, delay=2)
        page.keyboard.press("Enter")
        expect(page.locator('#result[data-result="accepted_offline"]')).to_be_visible()
        expect(page.locator("#result-note")).to_have_text("đã ghi khi mất mạng")
        shot(page, shots, "phone-accepted-offline")
        page.click("#result")  # a tap clears the result screen
        expect(page.locator("#recent-list li[data-state=offline]")).to_have_count(3)
        expect(page.locator("#recent-list li[data-state=offline] .state").first).to_have_text("đã ghi khi mất mạng")
        expect(page.locator("#backlog")).to_have_text("Chờ gửi: 3")
        shot(page, shots, "phone-offline")
        assert storage.count_checkins(station_id) == 4
        page.close()
        phone.close()  # the tab and the browser closed while offline
        assert storage.count_checkins(station_id) == 4

        # 4. Online again, no scanner page open: Chromium fires the "sync" the page registered
        # when it sees the network back (DevTools fires it here) and the service worker
        # delivers what was kept, once. Then the page shows every scan sent.
        context = phone.open(enrol_video)
        other = context.new_page()
        other.goto(f"{base}/login")
        devtools = context.new_cdp_session(other)
        registrations = []
        devtools.on("ServiceWorker.workerRegistrationUpdated", lambda e: registrations.extend(e["registrations"]))
        devtools.send("ServiceWorker.enable")
        # other.evaluate lets Playwright hand over the DevTools events while this waits.
        wait_until(lambda: other.evaluate("1") and any(r["scopeURL"] == f"{base}/phone/" for r in registrations),
                   30, "the scanner's service worker")
        worker = next(r for r in registrations if r["scopeURL"] == f"{base}/phone/")
        devtools.send("ServiceWorker.dispatchSyncEvent", {"origin": base, "registrationId": worker["registrationId"],
                                                          "tag": "qrgate-outbox", "lastChance": False})
        wait_until(lambda: storage.count_checkins(station_id) == 7, 60, "the service worker to deliver")
        page = context.new_page()
        page.goto(scanner)
        expect(page.locator("#backlog")).to_have_text("Chờ gửi: 0", timeout=30_000)
        expect(page.locator("#recent-list li[data-state=stored]")).to_have_count(7)
        shown = page.locator("body").inner_text()
        assert not re.search(r"phone-1|cccd|bhyt|national|\bin\b|\bout\b|\d{4}-\d{2}-\d{2}", shown), shown
        assert re.search(r"\d{2}:\d{2}:\d{2} \d{2}/\d{2}/\d{4}", shown)
        records = stored_records(storage, station_id)
        assert sorted(r["seq"] for r in records if r["type"] == "checkin") == [1, 2, 3, 4, 5, 6, 7]
        for record in records:
            protocol.verify_record(record, key)
        # A replayed upload stores nothing new; a forged one is refused and counted.
        sent = page.evaluate("""async () => {
            const store = await import('/static/phone/store.js');
            const db = await store.openStore();
            const entries = await store.outboxOf(db, 'phone-1');
            return entries.filter(e => e.type === 'checkin').map(e => e.body);
        }""")
        replay = page.request.post(f"{base}/api/phone/devices/{station_id}/records",
                                   data='{"records":[' + sent[0] + "]}", headers={"content-type": "application/json"})
        assert replay.status == 200 and json.loads(replay.text())["stored"] == [json.loads(sent[0])["seq"]]
        forged = json.loads(sent[0])
        forged["dir"] = "out" if forged["dir"] == "in" else "in"
        refused = page.request.post(f"{base}/api/phone/devices/{station_id}/records",
                                    data='{"records":[' + protocol.canonical_json(forged).decode() + "]}",
                                    headers={"content-type": "application/json"})
        assert refused.status == 200 and json.loads(refused.text()) == {"refused": {}, "stored": []}
        assert storage.count_checkins(station_id) == 7
        assert storage.refusal_counts().get("bad_signature") == 1
        shot(page, shots, "phone-delivered")
        phone.close()


def test_a_phone_whose_clock_was_not_checked_has_its_offline_scans_corrected_by_the_server(server, tmp_path):
    base, sender, app, venue_id, _ = server
    require_tools()
    storage = app.state.services.storage
    token = app.state.services.enrolment.create_token(venue_id, minutes=10, created_by=OWNER)
    with sync_playwright() as p:
        phone = PhoneBrowser(p, tmp_path / "profile", base)
        context = phone.open()
        page = context.new_page()
        login(page, base, sender, OWNER)
        page.goto(f"{base}/phone/venues/{venue_id}")
        page.fill("#enrol-code", enrol_code_text(base, token))  # pasted instead of scanned
        page.click("#enrol-submit")
        expect(page.locator("#device-label")).to_have_text("Điện thoại số 1")
        wait_until(lambda: page.evaluate("caches.match(location.href).then(Boolean)"), 30,
                   "the page kept for offline use, though first opened before its service worker ran")
        # A phone three hours fast, never checked against the server.
        page.evaluate("""async () => {
            const store = await import('/static/phone/store.js');
            await store.updateDevice(await store.openStore(), window.qrgatePhone.device.venueId,
                                     { offsetMs: 0, offsetCheckedMs: 0 });
        }""")
        context.set_offline(True)
        page.reload()
        expect(page.locator("#net")).to_have_text("Mất mạng")
        page.evaluate("""() => { Date.realNow = Date.now; Date.now = () => Date.realNow() + 3 * 3600 * 1000; }""")
        page.keyboard.type(OFFLINE_BY_KEYBOARD, delay=2)
        page.keyboard.press("Enter")
        expect(page.locator('#result[data-result="accepted_offline"]')).to_be_visible()
        kept = json.loads(page.evaluate("""async () => {
            const store = await import('/static/phone/store.js');
            const entries = await store.outboxOf(await store.openStore(), 'phone-1');
            return entries[0].body;
        }"""))
        assert kept["sync"] is False and kept["ts"] > int(time.time() * 1000) + 2 * 3600 * 1000
        context.set_offline(False)  # the page reads the server's clock, then sends a clock record
        wait_until(lambda: storage.sql.value("SELECT count(*) FROM clock_bases WHERE station_id = 'phone-1'") == 1,
                   60, "the clock record delivered")
        wall, corrected, station_wall = storage.sql.one(
            "SELECT wall_ms, time_corrected, wall_ms_station FROM checkins WHERE station_id = 'phone-1'")
        assert corrected and abs(wall - time.time() * 1000) < 120_000 and station_wall == kept["ts"]
        phone.close()
