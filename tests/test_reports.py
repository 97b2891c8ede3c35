"""The weekly report of a venue: counts per local day of the ISO week from real signed
check-ins, CSV and a one-page A4 PDF with Vietnamese text, and the report pages."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest

from server.venues.poster import _font
from server.reports.reports import (COUNT_TITLES, DAY_NAMES, ReportArchive, build_weekly_report, render_report, report_csv,
                            report_pdf, week_of)
from server.selfcheckin.selfcheckin import SelfCheckin, parse_declaration
from test_export import CONTROLLER, MANAGER, OWNER, STRANGER, TZ, Gate, local_ms
from test_web_support import Site

pytestmark = pytest.mark.timeout(120)

FRIDAY_3PM = local_ms(2026, 11, 20, 15, 0)
A, B, C = ("Lê Việt Hưng", "001090000001"), ("Nguyễn Thị Lan", "001090000002"), ("Trần Văn Cường", "001090000003")


def scan(person, wall_ms, direction="in", **extra):
    return {"name": person[0], "id": person[1], "wall_ms": wall_ms, "dir": direction, **extra}


@pytest.fixture
def week(tmp_path):
    """A venue with one week of scans (2026-W47: Monday 16 to Sunday 22 November)."""
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(name="Công ty Giày da Phúc Lâm")
    gate = Gate(site.storage, venue_id)
    gate.scan([
        scan(("Chủ Nhật Trước", "001090000009"), local_ms(2026, 11, 15, 23, 50)),  # the week before
        scan(C, local_ms(2026, 11, 16, 0, 10)),  # Monday just after local midnight (Sunday in UTC)
        scan(A, local_ms(2026, 11, 16, 7, 0)), scan(B, local_ms(2026, 11, 16, 7, 5)),
        scan(A, local_ms(2026, 11, 16, 17, 0), "out"),
        scan(A, local_ms(2026, 11, 19, 8, 0)), scan(A, local_ms(2026, 11, 19, 12, 0), "out"),
        scan(A, local_ms(2026, 11, 19, 13, 0)),  # back from lunch, never scanned out: no exit
        # Wednesday: a station whose clock had not synced (it thought it was 2020) ...
        scan(B, 1_577_836_800_000, "in", sync=False, boot="boot-x", mono=5_000),
        scan(C, 1_577_836_900_000, "in", sync=False, boot="boot-y", mono=9_000),
        scan(A, local_ms(2026, 11, 21, 9, 0)),  # Saturday: after the Friday report
    ])
    # ... until boot-x synced: its scan gets its true time, Wednesday 10:00; boot-y never did.
    gate.clock("boot-x", local_ms(2026, 11, 18, 10, 0) - 5_000, local_ms(2026, 11, 18, 10, 1))
    site.clock.now = local_ms(2026, 11, 17, 9, 30) / 1000  # Tuesday: a visitor declares at the poster
    venue = site.services.venues.get(venue_id)
    SelfCheckin(site.storage, site.clock).check_in(venue, parse_declaration("079188005678", "Võ Thị Hoa", "1988",
                                                                            "in", 2026))
    site.clock.now = FRIDAY_3PM / 1000
    return site, site.visitor().login(OWNER), venue_id  # a fresh session: the first one expired by Friday


def test_friday_report_counts_each_local_day_up_to_the_time_it_was_made(week):
    site, _, venue = week
    report = build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM)
    days = {d.day.isoformat(): d for d in report.days}
    assert list(days) == [f"2026-11-{n}" for n in range(16, 23)]
    monday = days["2026-11-16"]
    assert (monday.scans_in, monday.scans_out, monday.people, monday.without_exit) == (3, 1, 3, 2)
    tuesday = days["2026-11-17"]
    assert (tuesday.scans_in, tuesday.people, tuesday.self_declared) == (1, 1, 1)
    wednesday = days["2026-11-18"]
    assert (wednesday.scans_in, wednesday.clock_corrected, wednesday.time_uncertain) == (1, 1, 0)
    thursday = days["2026-11-19"]
    assert (thursday.scans_in, thursday.scans_out, thursday.people, thursday.without_exit) == (2, 1, 1, 1)
    assert days["2026-11-20"].scans_in == 0 and not days["2026-11-20"].future
    assert days["2026-11-21"].future and days["2026-11-21"].scans_in == 0  # Saturday's scan is not in yet
    assert report.people_week == 4  # A, B, C and the self-declared visitor
    assert report.total("scans_in") == 7 and report.total("scans_out") == 2
    assert report.until_ms == FRIDAY_3PM
    gate = next(s for s in report.stations if s.station_id == "gate-1")
    assert gate.scans == 8 and gate.last_contact_ms is not None  # the self-declared scan is not its
    # The scan whose clock never synced is dated 2020: counted as uncertain in that week, not this one.
    old = build_weekly_report(site.storage, venue, *week_of(dt.datetime(2020, 1, 1, 7, tzinfo=TZ)), TZ, FRIDAY_3PM)
    assert old.total("time_uncertain") == 1


def test_a_finished_week_includes_the_weekend(week):
    site, _, venue = week
    report = build_weekly_report(site.storage, venue, 2026, 47, TZ, local_ms(2026, 11, 25, 9, 0))
    assert not any(d.future for d in report.days)
    assert report.days[5].scans_in == 1 and report.until_ms == local_ms(2026, 11, 23, 0, 0)


def test_csv_has_counts_and_stations_but_no_personal_data(week):
    site, _, venue = week
    data = report_csv(build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM))
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    rows = list(csv.reader(io.StringIO(text, newline="")))
    assert rows[0][:5] == ["date", "weekday", "scans_in", "scans_out", "people"]
    assert rows[1][:6] == ["2026-11-16", "Thứ Hai", "3", "1", "3", "2"]
    assert rows[6][2] == ""  # Saturday had not come
    assert rows[8][1] == "Cả tuần" and rows[8][2] == "7"
    assert ["gate-1", "active"] == rows[11][:2]
    for secret in ("Lê", "Việt", "Hoa", "001090000001", "079188005678"):
        assert secret not in text


def test_pdf_is_one_a4_page():
    from server.reports.reports import DayCounts, WeeklyReport

    days = tuple(DayCounts(dt.date(2026, 11, 16) + dt.timedelta(days=i), i > 4, 10 * i, 9 * i, 8 * i, i, 0, 0, 0)
                 for i in range(7))
    report = WeeklyReport(1, "Trường THCS Nguyễn Trãi " * 8, "Xã Đồng Hỷ, tỉnh Thái Nguyên", 2026, 47,
                          "Asia/Ho_Chi_Minh", FRIDAY_3PM, FRIDAY_3PM, days, 33)
    pdf = report_pdf(report)
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    width, height = (float(v) for v in re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)", pdf).groups())
    assert abs(width - 595.3) < 1 and abs(height - 841.9) < 1  # A4 portrait in points
    image = render_report(report)
    # The header band is drawn and the page below it is not blank.
    assert image.getpixel((5, 5)) == (11, 94, 64)
    assert image.crop((0, 300, image.width, 1200)).convert("L").getextrema()[0] < 100


def test_every_vietnamese_letter_on_the_report_has_a_glyph():
    """A missing glyph is drawn as the same box as an unassigned code point: tofu."""
    texts = [*DAY_NAMES, *COUNT_TITLES, "BÁO CÁO TUẦN", "Số liệu đến", "lập lúc", "Trạm quét", "liên lạc cuối",
             "đã ngừng", "Chưa có trạm nào", "Báo cáo chỉ gồm số đếm, không chứa thông tin cá nhân"]
    for bold in (False, True):
        font = _font(26, bold)
        tofu = bytes(font.getmask("\ue000"))
        missing = {ch for text in texts for ch in text if not ch.isspace() and bytes(font.getmask(ch)) == tofu}
        assert missing == set(), missing


# -- kept reports and the pages ----------------------------------------------------------------

def test_archive_keeps_a_csv_and_a_pdf_per_venue_and_replaces_a_rerun(week, tmp_path):
    site, _, venue = week
    archive = ReportArchive(site.storage, tmp_path / "reports")
    now = dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ)
    kept = archive.generate_week(now, site.services.audit)
    assert [k.venue_id for k in kept] == [venue]
    stored = kept[0]
    assert (stored.year, stored.week, stored.summary["people"]) == (2026, 47, 4)
    assert open(stored.pdf_file, "rb").read(4) == b"%PDF"
    assert "Thứ Hai" in open(stored.csv_file, encoding="utf-8-sig").read()
    again = archive.generate_week(now + dt.timedelta(hours=1), site.services.audit)
    assert again[0].id == stored.id and len(archive.for_venue(venue)) == 1
    entries = [e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.generated"]
    assert len(entries) == 2 and entries[0].data["week"] == "2026-W47" and entries[0].ip == "scheduler"


def test_owner_reads_the_report_page_and_downloads_it(week):
    site, owner, venue = week
    page = owner.http.get(f"/venues/{venue}/reports", params={"week": "2026-W47"})
    assert page.status_code == 200
    assert 'data-day="2026-11-16"' in page.text and "Thứ Hai" in page.text
    monday = page.text.split('data-day="2026-11-16"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="num">([^<]*)</td>', monday)[:4] == ["3", "1", "3", "2"]
    assert "Lê V" not in page.text and "001090000001" not in page.text
    pdf = owner.http.get(f"/venues/{venue}/reports/2026-W47.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF")
    data = owner.http.get(f"/venues/{venue}/reports/2026-W47.csv")
    assert data.status_code == 200 and "2026-11-16,Thứ Hai,3,1,3,2" in data.content.decode("utf-8-sig")
    api = owner.http.get(f"/api/venues/{venue}/reports/2026-W47").json()
    assert api["people_week"] == 4 and api["days"][0]["scans_in"] == 3
    downloads = [e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.downloaded"]
    assert [e.data["format"] for e in downloads] == ["csv", "pdf"]


def test_the_page_lists_reports_made_on_schedule(week):
    site, owner, venue = week
    assert "kept-reports-none" in owner.http.get(f"/venues/{venue}/reports").text
    ReportArchive(site.storage).generate_week(dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ))
    page = owner.http.get(f"/venues/{venue}/reports").text
    assert "2026-W47" in page and 'id="kept-reports"' in page
    kept = owner.http.get(f"/api/venues/{venue}/reports").json()["reports"]
    assert len(kept) == 1 and kept[0]["summary"]["people"] == 4
    assert owner.http.get(kept[0]["pdf_url"]).content.startswith(b"%PDF")
    other_owner = site.visitor("203.0.113.20").login(STRANGER)
    other_venue = other_owner.create_venue(name="Chợ khác")
    # A kept report is reached only through its own venue.
    assert other_owner.http.get(f"/venues/{other_venue}/reports/kept/{kept[0]['id']}.pdf").status_code == 404


def test_only_owners_and_managers_see_reports(week):
    site, _, venue = week
    accounts, venues = site.services.accounts, site.services.venues
    for phone, role in ((MANAGER, "manager"), (CONTROLLER, "controller")):
        venues.add_member(venue, accounts.account_for_phone(phone), role)
    manager = site.visitor("203.0.113.8").login(MANAGER)
    assert manager.http.get(f"/venues/{venue}/reports").status_code == 200
    controller = site.visitor("203.0.113.9").login(CONTROLLER)
    assert controller.http.get(f"/venues/{venue}/reports").status_code == 403
    assert controller.http.get(f"/venues/{venue}/reports/2026-W47.pdf").status_code == 403
    stranger = site.visitor("203.0.113.10").login(STRANGER)
    assert stranger.http.get(f"/api/venues/{venue}/reports/2026-W47").status_code == 404


@pytest.mark.parametrize("week_id", ["2026-W54", "=cmd|' /C calc'!A0", "<b>", "2026-W00", "9" * 4000])
def test_a_bad_week_gets_a_clear_answer(week, week_id):
    site, owner, venue = week
    page = owner.http.get(f"/venues/{venue}/reports", params={"week": week_id[:20]})
    assert page.status_code == 400 and 'id="error"' in page.text and "<b>" not in page.text.split("<main>")[1]
    response = owner.http.get(f"/api/venues/{venue}/reports/{week_id}")
    if "/" in week_id:  # the slash makes it another path, which does not exist
        assert response.status_code == 404
    else:
        assert response.status_code == 400 and "ISO week" in response.json()["detail"]
    assert owner.http.get(f"/venues/{venue}/reports/{week_id}.pdf").status_code in (400, 404)
