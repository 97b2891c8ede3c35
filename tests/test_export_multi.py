"""One export for several venues (Bac Giang: a company's six venues at once): the form
offers every venue the person manages, the file says each row's venue, and every venue
is checked (one the person may see but not export is refused by name, nothing made)."""

from __future__ import annotations

import csv
import io

import openpyxl
import pytest

from test_export import CONTROLLER, MANAGER, OWNER, STRANGER, Gate, _wait_done, local_ms
from test_web_support import Site

pytestmark = pytest.mark.timeout(120)

DAY = "2026-11-20"
WORKSHOPS = ("Phân xưởng May 1", "Phân xưởng May 2", "Kho thành phẩm")


@pytest.fixture
def company(tmp_path):
    """A company (head office, three workshops, two shuttle buses located within it) and a
    market where the owner is only a gate controller; each with scans on 20/11/2026."""
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    head = owner.create_venue(name="Công ty TNHH ABC")
    venues = [head] + [owner.create_venue(name=name, kind="factory", parent_id=head) for name in WORKSHOPS]
    venues += [owner.create_venue(kind="vehicle", name="", plate=plate, address="", parent_id=head)
               for plate in ("98C-123.45", "98A-125.66")]
    other = site.visitor("203.0.113.40").login(STRANGER)
    market = other.create_venue(name="Chợ Quang Châu")
    site.services.venues.add_member(market, site.services.accounts.account_for_phone(OWNER), "controller")
    for n, venue in enumerate(venues + [market]):
        Gate(site.storage, venue, f"gate-{n}").scan([
            {"name": f"Công Nhân {n} {k}", "id": f"0010900{n:02d}{k:03d}", "wall_ms": local_ms(2026, 11, 20, 7, n + k)}
            for k in range(3)])
    site.clock.now = local_ms(2026, 11, 20, 18, 0) / 1000
    return site, site.visitor().login(OWNER), venues, market


def csv_of(response) -> list[list[str]]:
    assert response.content.startswith(b"\xef\xbb\xbf")
    return list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))


def test_the_form_offers_every_venue_and_says_why_one_cannot_be_chosen(company):
    site, owner, venues, market = company
    page = owner.http.get("/exports")
    assert page.status_code == 200
    for venue in venues:
        assert f'value="{venue}" id="venue-{venue}" checked' in page.text
    assert f'value="{market}" id="venue-{market}" disabled' in page.text
    assert "Chợ Quang Châu <span class=\"small\">(vai trò Người kiểm soát vào ra: không được tải dữ liệu)" in page.text
    one = owner.http.get(f"/venues/{venues[1]}/export").text  # from a workshop's page: that workshop
    assert f'id="venue-{venues[1]}" checked' in one and f'id="venue-{venues[0]}" checked' not in one


def test_one_export_covers_the_companys_six_venues_and_names_each_rows_venue(company):
    site, owner, venues, market = company
    response = owner.form("/exports", {"venue": [str(v) for v in venues], "start": DAY, "end": DAY,
                                       "format": "csv"})
    assert response.status_code == 303
    job_page = owner.http.get(response.headers["location"])
    assert "Đã bắt đầu tạo tệp" in job_page.text and "Công ty TNHH ABC · " in job_page.text
    job_id = response.headers["location"].rsplit("/", 1)[1]
    assert _wait_done(owner, f"/api/exports/{job_id}")["rows_done"] == 18
    download = owner.http.get(f"/exports/{job_id}/download")
    assert 'filename="luot-ra-vao-6-dia-diem-20-11-2026-den-20-11-2026.csv"' in download.headers[
        "content-disposition"]
    rows = csv_of(download)
    assert rows[0][:3] == ["Thời gian", "Địa điểm", "Chiều"] and len(rows) == 19
    assert {r[1] for r in rows[1:]} == {"Công ty TNHH ABC", *WORKSHOPS, "Xe BKS 98C-123.45", "Xe BKS 98A-125.66"}
    assert [r[0] for r in rows[1:]] == sorted((r[0] for r in rows[1:]), key=lambda t: t[-5:])  # in time order
    assert "Chợ Quang Châu" not in {r[1] for r in rows}
    for venue in venues:  # each venue's trail says its rows left, and that it was one of six
        entry = next(e for e in site.services.audit.for_venue(venue) if e.action == "qrgate.venue.checkins.exported")
        assert (entry.data["rows"], entry.data["venues"], entry.data["format"]) == (3, 6, "csv")


def test_a_venue_the_person_may_not_export_is_refused_by_name_and_nothing_is_made(company):
    site, owner, venues, market = company
    asked = [str(v) for v in venues[:2]] + [str(market)]
    page = owner.form("/exports", {"venue": asked, "start": DAY, "end": DAY, "format": "xlsx"})
    assert page.status_code == 403
    error = page.text.split('id="error"')[1].split("</p>")[0]
    assert "bạn không được tải dữ liệu của Chợ Quang Châu (Người kiểm soát vào ra)" in error
    api = owner.api("POST", "/api/exports", {"venues": [venues[0], market], "start": DAY, "end": DAY,
                                             "format": "csv"})
    assert api.status_code == 403 and api.json()["detail"]["refused"] == [market]
    quick = owner.http.get("/exports.csv", params=[("venue", venues[0]), ("venue", market)])
    assert quick.status_code == 403
    assert site.app.state.reports.jobs.for_account(site.services.accounts.account_for_phone(OWNER).id) == []
    assert not any(e.action == "qrgate.venue.checkins.exported" for v in venues
                   for e in site.services.audit.for_venue(v))
    # A venue that is not theirs at all is not found: its name is not theirs to learn.
    stranger = site.visitor("203.0.113.41").login("0903999888")
    theirs = stranger.create_venue(name="Quán riêng")
    assert owner.form("/exports", {"venue": [str(venues[0]), str(theirs)], "start": DAY, "end": DAY,
                                   "format": "csv"}).status_code == 404
    assert owner.api("POST", "/api/exports", {"venues": [theirs], "start": DAY, "end": DAY}).status_code == 404
    assert owner.form("/exports", {"start": DAY, "end": DAY, "format": "csv"}).status_code == 400  # none chosen


def test_the_quick_csv_of_several_venues_and_english_on_request(company):
    site, owner, venues, market = company
    quick = owner.http.get("/exports.csv", params=[("venue", venues[4]), ("venue", venues[5]), ("from", DAY),
                                                   ("to", DAY)])
    rows = csv_of(quick)
    assert len(rows) == 7 and {r[1] for r in rows[1:]} == {"Xe BKS 98C-123.45", "Xe BKS 98A-125.66"}
    owner.http.get("/lang/en")
    job = owner.api("POST", "/api/exports", {"venues": venues[:2], "start": DAY, "end": DAY, "format": "xlsx"})
    assert job.status_code == 202
    status = _wait_done(owner, job.json()["status_url"])
    data = owner.http.get(status["download_url"])
    assert "checkins-2-venues-20-11-2026-to-20-11-2026.xlsx" in data.headers["content-disposition"]
    sheet = openpyxl.load_workbook(io.BytesIO(data.content)).active
    assert sheet.title == "Check-ins"
    assert [c.value for c in sheet[1]][:3] == ["Time", "Venue", "Direction"] and sheet.cell(row=2, column=3).value == "In"
    assert sheet.max_row == 7


def test_losing_the_right_on_one_venue_withdraws_a_finished_file(company):
    site, owner, venues, market = company
    manager_account = site.services.accounts.account_for_phone(MANAGER)
    for venue in venues[:2]:
        site.services.venues.add_member(venue, manager_account, "manager")
    manager = site.visitor("203.0.113.8").login(MANAGER)
    job = manager.api("POST", "/api/exports", {"venues": venues[:2], "start": DAY, "end": DAY, "format": "csv"}).json()
    assert _wait_done(manager, job["status_url"])["state"] == "done"
    site.services.venues.add_member(venues[1], manager_account, "controller")  # demoted at one of the two
    assert manager.http.get(job["status_url"]).status_code == 403
    assert manager.http.get(f"/exports/{job['id']}/download").status_code == 403
    path = site.app.state.reports.jobs.folder / f"{job['id']}.csv"
    assert not path.exists()  # deleted at once, not at the hour
    site.services.venues.add_member(venues[1], manager_account, "manager")
    assert manager.http.get(f"/exports/{job['id']}/download").status_code == 404


def test_a_controller_has_nothing_to_export(company):
    site, owner, venues, market = company
    controller = site.visitor("203.0.113.9").login(CONTROLLER)
    site.services.venues.add_member(venues[0], site.services.accounts.account_for_phone(CONTROLLER), "controller")
    page = controller.http.get("/exports")
    assert page.status_code == 200 and 'id="no-venues"' in page.text and 'id="export-form"' not in page.text
