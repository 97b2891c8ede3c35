"""The area dashboard in a real headless browser (Debian's chromium through Playwright):
a health officer logs in, sees the chart and the numbers of their province, changes the
period, and drills down to a province's commune and a venue with a hostile name.

Screenshots go to $QRGATE_TEST_ARTIFACTS/dashboard when that variable is set, else to the
test's temporary folder.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from pathlib import Path

import pytest
from playwright.sync_api import sync_playwright

from conftest import serve_app
from test_dashboard import HOSTILE_NAME, TODAY, direct_counts, expected, generate_checkins, make_world
from test_web_flows import login

pytestmark = [pytest.mark.browser, pytest.mark.timeout(120)]
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
OFFICER = "0903 000 001"


@pytest.fixture
def site(tmp_path):
    world = make_world(tmp_path)
    generate_checkins(world)
    services = world.site.services
    services.officers.grant(services.accounts, OFFICER, "79")
    with serve_app(world.site.app, "web server start") as base:
        yield base, world


@pytest.fixture
def shots(tmp_path):
    folder = Path(os.environ.get("QRGATE_TEST_ARTIFACTS") or tmp_path) / "dashboard"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def test_officer_reads_the_chart_and_drills_down_to_a_venue(site, shots):
    base, world = site
    counts = direct_counts(world.storage)
    week = TODAY - dt.timedelta(days=6), TODAY
    month = TODAY - dt.timedelta(days=29), TODAY
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page(viewport={"width": 1100, "height": 900})
        problems = []
        page.on("dialog", lambda d: (problems.append(d.message), d.dismiss()))
        page.on("console", lambda m: problems.append(m.text) if m.type in ("error", "warning") else None)
        login(page, base, world.site.sender, OFFICER)

        page.goto(f"{base}/dashboard")
        assert page.locator("#area-name").inner_text() == "Thành phố Hồ Chí Minh"
        chart = page.locator("#day-chart")
        assert chart.is_visible()
        assert chart.get_attribute("role") == "img"
        assert page.locator("#day-chart rect.bar").count() == 7
        want = expected(world, counts, "province", "79", *week)
        assert page.locator("#total-scans").inner_text() == str(want["totals"]["scans"])
        assert page.locator("#total-registered").inner_text() == str(want["totals"]["venues_registered"])
        assert page.locator("#total-active").inner_text() == str(want["totals"]["venues_with_scans"])
        # The tallest bar is the busiest day, and it is drawn taller than the quietest.
        heights = [float(h) for h in page.eval_on_selector_all("#day-chart rect.bar",
                                                              "bars => bars.map(b => b.getAttribute('height'))")]
        scans = [d["scans"] for d in want["days"]]
        assert heights.index(max(heights)) == scans.index(max(scans))
        assert min(heights) < max(heights)
        # The numbers are in a table too.
        page.click("#per-day summary")
        first_row = page.locator("#days tbody tr").first.locator("td").all_inner_texts()
        assert first_row[1] == str(scans[0])
        page.screenshot(path=str(shots / "province.png"), full_page=True)

        page.click("#days-30")
        assert page.locator("#day-chart rect.bar").count() == 30
        want = expected(world, counts, "province", "79", *month)
        assert page.locator("#total-scans").inner_text() == str(want["totals"]["scans"])

        page.click("#children a:text('Phường Bến Thành')")
        assert page.locator("#area-name").inner_text() == "Phường Bến Thành"
        want = expected(world, counts, "ward", "26743", *month)
        assert page.locator("#total-scans").inner_text() == str(want["totals"]["scans"])
        assert page.locator("#children tbody tr").count() == len(want["inside"])
        # The venue named with markup is listed as text: no image, no alert.
        assert page.locator("#children img").count() == 0
        assert HOSTILE_NAME in page.locator("#children").inner_text()
        page.screenshot(path=str(shots / "ward.png"), full_page=True)

        page.click(f"#children a:text('{HOSTILE_NAME[:20]}')")
        assert page.locator("#venue-name").inner_text() == HOSTILE_NAME
        venue_id = int(page.url.split("/dashboard/venue/")[1].split("?")[0])
        assert page.locator("#total-scans").inner_text() == str(want["per_venue"][venue_id])
        assert page.locator("#day-chart rect.bar").count() == 30
        # The breadcrumb leads back up to the province, but not above it.
        crumbs = page.locator("#crumbs a").all_inner_texts()
        assert crumbs == ["Thành phố Hồ Chí Minh", "Phường Bến Thành"]
        page.screenshot(path=str(shots / "venue.png"), full_page=True)

        # On a phone the page fits the screen: the chart shrinks, wide tables scroll in their box.
        page.set_viewport_size({"width": 390, "height": 844})
        page.goto(f"{base}/dashboard/26743?days=30")
        assert page.evaluate("document.documentElement.scrollWidth <= window.innerWidth + 1")
        page.screenshot(path=str(shots / "ward-phone.png"), full_page=True)

        # Another province's dashboard does not exist for this officer.
        assert page.goto(f"{base}/dashboard/01").status == 404
        assert problems == [] or all("404" in p for p in problems), problems
        browser.close()
