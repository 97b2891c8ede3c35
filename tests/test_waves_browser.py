"""The releases page as an operator uses it, in a real headless browser (Debian's chromium
driven by Playwright) at 1280 and 390 px: from the fleet page to "Cập nhật phần mềm",
a wave to a pilot group started after a confirmation, its counts as the stations report,
a wave stopped, and nothing cut off or said in English on the way."""

from __future__ import annotations

import shutil

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import sync_playwright

from conftest import serve_app
from qrgate import protocol
from qrgate.updates import sign_report
from server.releases.service import attach
from test_history_browser import login
from test_update import releases  # noqa: F401  (the fixture: a signed repository)
from test_web_support import Site
from words_vi import leftovers

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OPERATOR = "0912000111"
# The page is wider than the screen, or a form control lies outside it (and not in a box
# that scrolls): what a person could not reach.
CUT_OFF = """() => {
  const width = document.documentElement.clientWidth, out = [];
  if (document.documentElement.scrollWidth > width + 1) out.push('page ' + document.documentElement.scrollWidth);
  for (const el of document.querySelectorAll('main input:not([type=hidden]), main button, main select')) {
    const box = el.getBoundingClientRect();
    let scroller = null;
    for (let p = el.parentElement; p; p = p.parentElement) {
      if (['auto', 'scroll'].includes(getComputedStyle(p).overflowX)) { scroller = p; break; }
    }
    if (!scroller && (box.right > width + 1 || box.left < -1)) out.push(el.outerHTML.slice(0, 80));
  }
  return out;
}"""
SAID = "() => document.querySelector('main').innerText"


@pytest.fixture
def served(tmp_path, releases):  # noqa: F811
    site = Site.create(tmp_path)
    venue = site.storage.add_venue("Xe đưa đón công nhân 51B-123.45")
    keys = {}
    for i in range(6):
        keys[f"bus-{i}"] = Ed25519PrivateKey.generate()
        site.storage.add_station(f"bus-{i}", protocol.public_key_to_text(keys[f"bus-{i}"].public_key()), venue)
    attach(site.app, releases.served, site.storage, site.clock)
    releases.add("0.2.0")  # published after the server has waves: held until one starts
    site.services.accounts.set_operator(OPERATOR)
    with serve_app(site.app, "web server start") as base:
        yield base, site, keys


def report(site, keys, station_id: str, n: int, state: str, version: str) -> None:
    body = sign_report(keys[station_id], {"v": 1, "station_id": station_id, "n": n,
                                          "update": {"state": state, "version": version, "running": "0.1.0"}})
    site.app.state.releases.report(body)


@pytest.mark.parametrize("width,height", [(1280, 800), (390, 844)])
def test_an_operator_releases_to_a_pilot_group_watches_it_and_stops_it(served, width, height):
    base, site, keys = served
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": width, "height": height})
        dialogs = []
        page.on("dialog", lambda d: (dialogs.append(d.message), d.accept()))
        login(page, base, site, OPERATOR)
        page.goto(f"{base}/fleet")
        page.click("#releases-link")
        assert page.locator("#release-0-2-0 h2").inner_text().endswith("Chưa phát cho trạm nào")
        assert page.evaluate(CUT_OFF) == []
        # Two buses are the pilot: each gets its group from its row.
        for station in ("bus-1", "bus-4"):
            row = page.locator(f'tr[data-station="{station}"]')
            row.locator("input[name=group]").fill("pilot")
            row.locator("button").click()
            assert "Đã lưu nhóm của trạm." in page.locator("main").inner_text()
        wave = page.locator("#release-0-2-0 form.wave-form")
        wave.locator("input[name=percent]").fill("0")
        wave.locator("input[name=groups]").fill("pilot")
        wave.locator("button").click()
        assert dialogs[-1].startswith("Phát bản 0.2.0 cho các trạm đã chọn?")
        assert "Đã phát đợt cập nhật." in page.locator("main").inner_text()
        section = page.locator("#release-0-2-0")
        assert section.locator(".wave-state").inner_text() == "Đang phát"
        assert "0% số trạm, nhóm pilot · 2 trạm trong đợt" in section.locator(".wave-target").inner_text()
        # The pilot reports: one kept it, one is trying it.
        report(site, keys, "bus-1", 1, "kept", "0.2.0")
        report(site, keys, "bus-4", 1, "trying", "0.2.0")
        page.reload()
        counts = dict(zip(page.locator("#release-0-2-0 li").evaluate_all("els => els.map(e => e.dataset.count)"),
                          page.locator("#release-0-2-0 li strong").all_inner_texts()))
        assert counts == {"kept": "1", "under_way": "1", "rolled_back": "0", "failed": "0", "not_seen": "0"}
        row = page.locator('tr[data-station="bus-1"] td.update').inner_text()
        assert "Đã cập nhật" in row and "0.2.0" in row
        assert page.evaluate(CUT_OFF) == []
        assert leftovers(page.evaluate(SAID), "/fleet/releases") == []
        section.locator("form.wave-stop button").click()
        assert dialogs[-1].startswith("Dừng đợt cập nhật bản 0.2.0?")
        assert page.locator("#release-0-2-0 .wave-state").inner_text() == "Đã dừng"
        assert "Người vận hành đã dừng đợt." in page.locator("#release-0-2-0").inner_text()
        assert site.app.state.releases.waves.allowed("bus-4") == []
        browser.close()
