"""Weekly reports on the template of docs/reports.md: a unit's (its head venue with the
buses and workshops located within it) and an area's, counted per local day of the ISO
week from real signed check-ins; the CSV and one-page A4 PDF in Vietnamese (English on
request); the kept reports; the report pages and who may read them."""

from __future__ import annotations

import csv
import datetime as dt
import io
import re

import pytest

from server.reports import report_routes
from server.reports.report_archive import ReportArchive
from server.reports.report_files import (COUNT_TITLES, DAY_NAMES, render_report, report_csv, report_filename,
                                         report_pdf, week_text)
from server.reports.reports import DayCounts, WeeklyReport, build_area_report, build_weekly_report, week_of
from server.selfcheckin.selfcheckin import SelfCheckin, parse_declaration
from server.venues.poster import _font
from test_export import CONTROLLER, MANAGER, OWNER, STRANGER, TZ, Gate, local_ms
from test_web_support import Site, every_route

pytestmark = pytest.mark.timeout(120)

FRIDAY_3PM = local_ms(2026, 11, 20, 15, 0)
A, B, C = ("Lê Việt Hưng", "001090000001"), ("Nguyễn Thị Lan", "001090000002"), ("Trần Văn Cường", "001090000003")
OFFICER = "0988779222"
ISO_DATE = re.compile(r"\b\d{4}-\d{2}-\d{2}\b")
ISO_WEEK = re.compile(r"\d{4}-W\d{2}")


def with_report_routes(site: Site) -> Site:
    """The weekly report pages (server/reports/report_routes.py), until create_app
    includes that router itself."""
    if not any(getattr(r, "endpoint", None) is report_routes.reports_page for r in every_route(site.app)):
        site.app.include_router(report_routes.router)
    return site


def scan(person, wall_ms, direction="in", **extra):
    return {"name": person[0], "id": person[1], "wall_ms": wall_ms, "dir": direction, **extra}


@pytest.fixture
def week(tmp_path):
    """A unit (a factory with a shuttle bus located within it) with one week of scans
    (2026-W47: Monday 16 to Sunday 22 November)."""
    site = with_report_routes(Site.create(tmp_path))
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


def add_bus(site, owner, head: int) -> int:
    """A shuttle bus located within the unit's head venue, with its own station and scans."""
    bus = owner.create_venue(kind="vehicle", name="", plate="98C-123.45", address="", parent_id=head)
    Gate(site.storage, bus, "bus-1").scan([scan(A, local_ms(2026, 11, 16, 6, 30)),
                                           scan(("Phạm Thu Hà", "001090000004"), local_ms(2026, 11, 16, 6, 31)),
                                           scan(A, local_ms(2026, 11, 16, 17, 30), "out")])
    return bus


def test_friday_report_counts_each_local_day_up_to_the_time_it_was_made(week):
    site, _, venue = week
    report = build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM)
    assert report.scope == "unit" and report.name == "Công ty Giày da Phúc Lâm"
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
    # The installation: one venue, one station (the self check-in page is not a station).
    assert (report.venues_registered, report.vehicles, report.venues_active) == (1, 0, 1)
    assert [s.station_id for s in report.stations] == ["gate-1"]
    gate = report.stations[0]
    assert gate.scans == 8 and gate.last_contact_ms is not None and report.stations_active == 1
    # The scan whose clock never synced is dated 2020: counted as uncertain in that week, not this one.
    old = build_weekly_report(site.storage, venue, *week_of(dt.datetime(2020, 1, 1, 7, tzinfo=TZ)), TZ, FRIDAY_3PM)
    assert old.total("time_uncertain") == 1


def test_a_unit_counts_the_buses_located_within_it(week):
    site, owner, venue = week
    bus = add_bus(site, owner, venue)
    unit = build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM)
    assert (unit.venues_registered, unit.vehicles, unit.venues_active, unit.stations_active) == (2, 1, 2, 2)
    monday = unit.days[0]
    # A rode the bus and then worked: 6 scans in, 2 out, 4 different people; A's last scan
    # of the day at the factory was an exit, so only B and C (and the bus's Hà) lack one.
    assert (monday.scans_in, monday.scans_out, monday.people, monday.without_exit) == (5, 2, 4, 3)
    assert unit.people_week == 5
    places = {p.name: p for p in unit.places}
    assert places["Xe BKS 98C-123.45"].kind == "vehicle"
    assert (places["Xe BKS 98C-123.45"].scans_in, places["Xe BKS 98C-123.45"].people) == (2, 2)
    assert places["Công ty Giày da Phúc Lâm"].scans_in == 7
    # The bus alone is a venue within the unit, not a unit.
    alone = build_weekly_report(site.storage, bus, 2026, 47, TZ, FRIDAY_3PM)
    assert alone.scope == "venue" and alone.total("scans_in") == 2 and alone.venues_registered == 1


def test_an_area_report_has_a_line_per_unit(week):
    site, owner, venue = week
    add_bus(site, owner, venue)
    other = site.visitor("203.0.113.20").login(STRANGER)
    market = other.create_venue(name="Chợ Phường")
    Gate(site.storage, market, "market-1").scan([scan(B, local_ms(2026, 11, 18, 9, 0))])
    owners = [v.id for v, _ in site.services.venues.for_account(site.services.accounts.account_for_phone(OWNER).id)]
    report = build_area_report(site.storage, "79", "Thành phố Hồ Chí Minh", owners + [market], 2026, 47, TZ,
                               FRIDAY_3PM)
    assert report.scope == "area" and report.name == "Thành phố Hồ Chí Minh"
    assert (report.units, report.venues_registered, report.vehicles, report.venues_active) == (2, 3, 1, 3)
    assert [(p.name, p.venues, p.venues_active, p.scans_in) for p in report.places] == [
        ("Công ty Giày da Phúc Lâm", 2, 2, 9), ("Chợ Phường", 1, 1, 1)]
    assert report.stations == ()  # an area's report counts stations, it does not list them
    assert report.stations_active == 3
    assert report.people_week == 5  # B at the factory and at the market is one person


def test_a_finished_week_includes_the_weekend(week):
    site, _, venue = week
    report = build_weekly_report(site.storage, venue, 2026, 47, TZ, local_ms(2026, 11, 25, 9, 0))
    assert not any(d.future for d in report.days)
    assert report.days[5].scans_in == 1 and report.until_ms == local_ms(2026, 11, 23, 0, 0)


def read_csv(data: bytes) -> list[list[str]]:
    assert data.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))


def test_csv_is_the_template_in_vietnamese_with_no_personal_data(week):
    site, owner, venue = week
    add_bus(site, owner, venue)
    data = report_csv(build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM))
    rows = read_csv(data)
    text = data.decode("utf-8-sig")
    assert rows[0] == ["BÁO CÁO TUẦN", "Tuần 47 (16/11–22/11/2026)"]
    assert rows[1] == ["Đơn vị", "Công ty Giày da Phúc Lâm"]
    assert ["Kỳ báo cáo", "16/11/2026 – 22/11/2026"] in rows
    assert ["Số liệu đến 20/11/2026 15:00"] in rows
    assert ["Số điểm kiểm soát đã đăng ký", "2"] in rows and ["trong đó phương tiện (xe đưa đón)", "1"] in rows
    header = rows.index(["Ngày", "Thứ", *COUNT_TITLES])
    assert rows[header + 1][:6] == ["16/11/2026", "Thứ Hai", "5", "2", "4", "3"]
    assert rows[header + 6][2] == ""  # Saturday had not come
    assert rows[header + 8][1] == "Cả tuần" and rows[header + 8][2] == "9"
    assert ["Xe BKS 98C-123.45", "Phương tiện (xe đưa đón)", "1", "2", "1", "2"] in rows
    stations = rows.index(["Trạm quét", "Địa điểm", "Trạng thái", "Liên lạc cuối", "Lượt quét trong tuần"])
    assert rows[stations + 1][:3] == ["bus-1", "Xe BKS 98C-123.45", "Đang dùng"]
    for secret in ("Việt", "Hưng", "Thị Lan", "Hoa", "001090000001", "079188005678"):
        assert secret not in text
    assert not ISO_DATE.search(text) and not ISO_WEEK.search(text)
    for english in ("date", "weekday", "scans_in", "active", "station", "Week"):
        assert english not in text


def test_the_same_report_in_english_on_request(week):
    site, _, venue = week
    report = build_weekly_report(site.storage, venue, 2026, 47, TZ, FRIDAY_3PM)
    rows = read_csv(report_csv(report, "en"))
    assert rows[0] == ["WEEKLY REPORT", "Week 47 (16/11–22/11/2026)"]
    assert ["16/11/2026", "Monday", "3", "1", "3", "2", "0", "0", "0"] in rows
    assert report_filename(report, "pdf", "en") == f"weekly-report-week-47-2026-unit-{venue}.pdf"
    assert report_filename(report, "pdf") == f"bao-cao-tuan-47-2026-don-vi-{venue}.pdf"


def test_a_week_across_the_new_year_names_both_years():
    assert week_text("vi", 2026, 53) == "Tuần 53 (28/12/2026–03/01/2027)"
    assert week_text("vi", 2026, 1) == "Tuần 1 (29/12/2025–04/01/2026)"


def pdf_report(places: int = 3) -> WeeklyReport:
    from server.reports.reports import PlaceLine, StationLine

    days = tuple(DayCounts(dt.date(2026, 11, 16) + dt.timedelta(days=i), i > 4, 10 * i, 9 * i, 8 * i, i, 0, 0, 0)
                 for i in range(7))
    return WeeklyReport("unit", "1", "Trường THCS Nguyễn Trãi " * 8, "Xã Đồng Hỷ, tỉnh Thái Nguyên", 2026, 47,
                        "Asia/Ho_Chi_Minh", FRIDAY_3PM, FRIDAY_3PM, days, 33, places, 0, places, 1, places, places,
                        tuple(PlaceLine(i, f"Phân xưởng {i}", "factory", 1, 1, 1, i, i, i) for i in range(places)),
                        tuple(StationLine(f"gate-{i}", "active", FRIDAY_3PM, i, f"Phân xưởng {i}")
                              for i in range(places)))


@pytest.mark.parametrize("places", [3, 60])
def test_pdf_is_one_a4_page_even_for_a_large_unit(places):
    report = pdf_report(places)
    pdf = report_pdf(report)
    assert pdf.startswith(b"%PDF") and len(re.findall(rb"/Type\s*/Page\b", pdf)) == 1
    width, height = (float(v) for v in re.search(rb"/MediaBox\s*\[\s*0\s+0\s+([\d.]+)\s+([\d.]+)", pdf).groups())
    assert abs(width - 595.3) < 1 and abs(height - 841.9) < 1  # A4 portrait in points
    image = render_report(report)
    # The header band is drawn and the page below it is not blank.
    assert image.getpixel((5, 5)) == (11, 94, 64)
    assert image.crop((0, 300, image.width, 1200)).convert("L").getextrema()[0] < 100
    # The footer's line is not overwritten by the tables.
    assert image.crop((0, image.height - 125, image.width, image.height - 95)).convert("L").getextrema()[0] > 200


def test_every_vietnamese_letter_on_the_report_has_a_glyph():
    """A missing glyph is drawn as the same box as an unassigned code point: tofu."""
    from server.web import i18n

    texts = [*DAY_NAMES, *COUNT_TITLES, *(vi for key, (vi, _) in i18n.TEXTS.items() if key.startswith("report."))]
    for bold in (False, True):
        font = _font(26, bold)
        tofu = bytes(font.getmask("\ue000"))
        missing = {ch for text in texts for ch in text if not ch.isspace() and bytes(font.getmask(ch)) == tofu}
        assert missing == set(), missing


# -- kept reports and the pages ----------------------------------------------------------------

def test_archive_keeps_a_report_per_unit_and_replaces_a_rerun(week, tmp_path):
    site, owner, venue = week
    add_bus(site, owner, venue)
    archive = ReportArchive(site.storage, tmp_path / "reports")
    now = dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ)
    kept = archive.generate_week(now, site.services.audit)
    assert [(k.scope, k.subject) for k in kept] == [("unit", str(venue))]  # the bus is in its unit's report
    stored = kept[0]
    assert (stored.year, stored.week, stored.summary["people"]) == (2026, 47, 5)
    assert open(stored.pdf_file, "rb").read(4) == b"%PDF"
    assert "Thứ Hai" in open(stored.csv_file, encoding="utf-8-sig").read()
    assert stored.report.venues_registered == 2  # the numbers are kept, not only the files
    english = stored.file("csv", "en")
    assert english[1].startswith("weekly-report-") and b"Monday" in english[0]
    again = archive.generate_week(now + dt.timedelta(hours=1), site.services.audit)
    assert again[0].id == stored.id and len(archive.for_unit(venue)) == 1
    entries = [e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.generated"]
    assert len(entries) == 2 and entries[0].data["week"] == "47 (16/11–22/11/2026)" and entries[0].ip == "scheduler"


def test_the_schedule_keeps_a_report_for_each_area_with_an_officer(week, tmp_path):
    site, _, venue = week
    province = site.services.venues.get(venue).province
    site.services.officers.grant(site.services.accounts, OFFICER, province)
    kept = ReportArchive(site.storage, tmp_path / "reports").generate_week(
        dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ), officers=site.services.officers)
    area = next(k for k in kept if k.scope == "area")
    assert area.subject == province and area.report.units == 1 and area.report.total("scans_in") == 7


def test_owner_reads_the_report_page_and_downloads_it_in_vietnamese(week):
    site, owner, venue = week
    page = owner.http.get(f"/venues/{venue}/reports", params={"week": "2026-W47"})
    assert page.status_code == 200
    assert 'data-day="2026-11-16"' in page.text and "Thứ Hai 16/11" in page.text
    assert "Tuần 47 (16/11–22/11/2026)" in page.text
    monday = page.text.split('data-day="2026-11-16"')[1].split("</tr>")[0]
    assert re.findall(r'<td class="num">([^<]*)</td>', monday)[:4] == ["3", "1", "3", "2"]
    assert "Lê V" not in page.text and "001090000001" not in page.text
    main = page.text.split("<main>")[1]
    assert not ISO_WEEK.search(re.sub(r'(value|href|action)="[^"]*"', "", main))
    pdf = owner.http.get(f"/venues/{venue}/reports/2026-W47.pdf")
    assert pdf.status_code == 200 and pdf.headers["content-type"] == "application/pdf"
    assert pdf.content.startswith(b"%PDF") and f"bao-cao-tuan-47-2026-don-vi-{venue}.pdf" in pdf.headers[
        "content-disposition"]
    data = owner.http.get(f"/venues/{venue}/reports/2026-W47.csv")
    assert data.status_code == 200 and "16/11/2026,Thứ Hai,3,1,3,2" in data.content.decode("utf-8-sig")
    api = owner.http.get(f"/api/venues/{venue}/reports/2026-W47").json()
    assert api["people_week"] == 4 and api["days"][0]["scans_in"] == 3
    downloads = [e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.report.downloaded"]
    assert [e.data["format"] for e in downloads] == ["csv", "pdf"]
    owner.http.get("/lang/en")
    english = owner.http.get(f"/venues/{venue}/reports/2026-W47.csv").content.decode("utf-8-sig")
    assert "16/11/2026,Monday,3,1,3,2" in english


def test_the_page_lists_reports_made_on_schedule(week):
    site, owner, venue = week
    assert "kept-reports-none" in owner.http.get(f"/venues/{venue}/reports").text
    ReportArchive(site.storage).generate_week(dt.datetime.fromtimestamp(FRIDAY_3PM / 1000, TZ))
    page = owner.http.get(f"/venues/{venue}/reports").text
    assert "Tuần 47 (16/11–22/11/2026)" in page and 'id="kept-reports"' in page
    kept = owner.http.get(f"/api/venues/{venue}/reports").json()["reports"]
    assert len(kept) == 1 and kept[0]["summary"]["people"] == 4 and kept[0]["deliveries"] == []
    assert owner.http.get(kept[0]["pdf_url"]).content.startswith(b"%PDF")
    other_owner = site.visitor("203.0.113.20").login(STRANGER)
    other_venue = other_owner.create_venue(name="Chợ khác")
    # A kept report is reached only through its own unit.
    assert other_owner.http.get(f"/venues/{other_venue}/reports/kept/{kept[0]['id']}.pdf").status_code == 404


def test_a_bus_page_says_its_report_is_its_units(week):
    site, owner, venue = week
    bus = add_bus(site, owner, venue)
    page = owner.http.get(f"/venues/{bus}/reports")
    assert page.status_code == 200 and 'id="part-of"' in page.text and "Công ty Giày da Phúc Lâm" in page.text
    assert 'id="address-form"' not in page.text  # addresses are set on the unit's head
    assert owner.form(f"/venues/{bus}/reports/addresses", {"email": "xe@congty.vn", "lang": "vi"}).status_code == 404


def test_owners_and_managers_set_the_units_addresses_and_see_what_happened(week):
    site, owner, venue = week
    accounts, venues = site.services.accounts, site.services.venues
    venues.add_member(venue, accounts.account_for_phone(MANAGER), "manager")
    added = owner.form(f"/venues/{venue}/reports/addresses", {"email": "BaoCao@PhucLam.VN", "lang": "vi"})
    assert added.status_code == 303
    page = owner.http.get(added.headers["location"]).text
    assert 'id="flash"' in page and "Đã thêm địa chỉ nhận báo cáo tuần" in page
    assert "BaoCao@phuclam.vn" in page.split('id="addresses"')[1]
    manager = site.visitor("203.0.113.8").login(MANAGER)
    assert manager.form(f"/venues/{venue}/reports/addresses", {"email": "so-tttt@backan.gov.vn",
                                                                 "lang": "en"}).status_code == 303
    bad = manager.form(f"/venues/{venue}/reports/addresses", {"email": "not an address\r\nBcc: x@y.vn"})
    assert bad.status_code == 400 and "Địa chỉ thư điện tử không hợp lệ" in bad.text
    assert [a.email for a in site.app.state.reports.recipients.for_unit(venue)] == [
        "BaoCao@phuclam.vn", "so-tttt@backan.gov.vn"]
    removed = owner.form(f"/venues/{venue}/reports/addresses/remove", {"email": "so-tttt@backan.gov.vn"})
    assert "Đã xóa địa chỉ" in owner.http.get(removed.headers["location"]).text
    trail = [(e.action, e.data.get("email")) for e in site.services.audit.for_venue(venue)]
    assert ("qrgate.report.address.added", "BaoCao@phuclam.vn") in trail
    assert ("qrgate.report.address.removed", "so-tttt@backan.gov.vn") in trail
    for i in range(4):
        owner.form(f"/venues/{venue}/reports/addresses", {"email": f"a{i}@phuclam.vn"})
    too_many = owner.form(f"/venues/{venue}/reports/addresses", {"email": "a9@phuclam.vn"})
    assert too_many.status_code == 400 and "tối đa 5 địa chỉ" in too_many.text


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
    assert controller.form(f"/venues/{venue}/reports/addresses", {"email": "x@y.vn"}).status_code == 403
    stranger = site.visitor("203.0.113.10").login(STRANGER)
    assert stranger.http.get(f"/api/venues/{venue}/reports/2026-W47").status_code == 404


def test_an_officer_reads_their_areas_report_and_nobody_else_does(week):
    site, owner, venue = week
    province = site.services.venues.get(venue).province
    site.services.officers.grant(site.services.accounts, OFFICER, province)
    officer = site.visitor("203.0.113.30").login(OFFICER)
    listing = officer.http.get("/reports/areas")
    assert listing.status_code == 200 and f'href="/reports/areas/{province}"' in listing.text
    page = officer.http.get(f"/reports/areas/{province}", params={"week": "2026-W47"})
    assert page.status_code == 200 and "Công ty Giày da Phúc Lâm" in page.text
    assert 'id="fact-units">1<' in page.text
    data = officer.http.get(f"/reports/areas/{province}/2026-W47.csv").content.decode("utf-8-sig")
    assert "Chi tiết theo đơn vị" in data and "Công ty Giày da Phúc Lâm,1,1,1,7,2" in data
    assert owner.http.get(f"/reports/areas/{province}").status_code == 404  # not an officer
    assert owner.http.get("/reports/areas").status_code == 404
    assert officer.http.get("/reports/areas/01").status_code == 404  # not their area
    saved = officer.form("/reports/email", {"email": "canbo@yte.gov.vn", "lang": "vi"})
    assert "Đã lưu địa chỉ" in officer.http.get(saved.headers["location"]).text
    assert site.app.state.reports.recipients.for_area(province)[0].email == "canbo@yte.gov.vn"
    cleared = officer.form("/reports/email", {"remove": "1"})
    assert "Đã xóa địa chỉ" in officer.http.get(cleared.headers["location"]).text
    assert site.app.state.reports.recipients.for_area(province) == []


@pytest.mark.parametrize("week_id", ["2026-W54", "=cmd|' /C calc'!A0", "<b>", "2026-W00", "9" * 4000])
def test_a_bad_week_gets_a_clear_answer(week, week_id):
    site, owner, venue = week
    page = owner.http.get(f"/venues/{venue}/reports", params={"week": week_id[:20]})
    assert page.status_code == 400 and 'id="error"' in page.text and "<b>" not in page.text.split("<main>")[1]
    assert "Tuần không hợp lệ: hãy chọn tuần trong lịch." in page.text
    response = owner.http.get(f"/api/venues/{venue}/reports/{week_id}")
    if "/" in week_id:  # the slash makes it another path, which does not exist
        assert response.status_code == 404
    else:
        assert response.status_code == 400 and "ISO week" in response.json()["detail"]
    assert owner.http.get(f"/venues/{venue}/reports/{week_id}.pdf").status_code in (400, 404)
