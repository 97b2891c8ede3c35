"""Exports and the history pages against what an attacker, or a broken station clock,
can put in front of them, over HTTP with real accounts: days no export can cover get a
clear 400, a member whose role is revoked cannot fetch an export started before, every
export of a masked viewer holds masked values only, and no stored time, however far
out of the calendar, makes a page or an export fail."""

from __future__ import annotations

import csv
import datetime as dt
import io
from pathlib import Path

import openpyxl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate import protocol
from test_export import _wait_done
from test_web_support import Site

pytestmark = pytest.mark.timeout(120)

OWNER, MANAGER, CONTROLLER, OFFICER, OPERATOR = "0912200001", "0912200002", "0912200003", "0912200004", "0912200005"
PERSON = {"id": "024083123451", "name": "Nguyễn Văn Lâm", "birth": "1983-03-21"}
MASKED = ("Nguyễn V** L**", "*********451", "1983")
INVALID_TIME = "thời gian không hợp lệ"  # what a time no date holds is shown as
# Times a station's clock may have said that no date in years 1 to 9999 holds, here or
# in Ho Chi Minh City (UTC+7): year 10000, the last second of 9999 UTC (year 10000
# locally), before year 1, and the far ends of what the database can hold.
OUT_OF_CALENDAR = [253_402_300_800_000, 253_402_300_799_000, -62_135_596_800_001, -2**53, 2**62 - 1, -2**62 + 1]


@pytest.fixture
def world(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    venue = owner.create_venue()  # Ho Chi Minh City, the officer's area
    accounts, venues = site.services.accounts, site.services.venues
    for phone, role in ((MANAGER, "manager"), (CONTROLLER, "controller")):
        venues.add_member(venue, accounts.account_for_phone(phone), role)
    site.services.officers.grant(accounts, OFFICER, "79")
    accounts.set_operator(OPERATOR)
    key = Ed25519PrivateKey.generate()
    site.storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    now_ms = int(site.clock() * 1000)
    record = {"v": 1, "type": "checkin", "st": "gate-1", "seq": 1, "ts": now_ms - 3_600_000, "mono": 0,
              "boot": "b", "sync": True, "dir": "in", "kind": "cccd",
              "person": {"id": PERSON["id"], "name": PERSON["name"], "birth": PERSON["birth"], "sex": "M"}}
    site.storage.store_records(site.storage.station("gate-1"), [protocol.sign_record(record, key)])
    today = dt.datetime.fromtimestamp(site.clock(), site.services.tz).date()
    return site, owner, venue, today


def _insert_raw(storage, venue: int, walls: list[int]) -> list[int]:
    """Check-ins with these times, written straight into the server's tables, as a
    station with a broken clock (or a bridge that let it through) would leave them."""
    if storage.station("raw-1") is None:
        storage.add_station("raw-1", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    db = storage.sql
    first = (db.value("SELECT max(seq) FROM checkins WHERE station_id = 'raw-1'") or 0) + 1
    rows = [(first + i, venue, f"cccd:{PERSON['id']}", PERSON["id"], PERSON["name"], PERSON["birth"], wall, wall)
            for i, wall in enumerate(walls)]
    with db.transaction():
        db.executemany(
            "INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key, id_number, name, birth, sex,"
            " wall_ms, mono_ms, boot_id, clock_synced, wall_ms_station, received_ms, sig, record) VALUES"
            " ('raw-1', ?, ?, 'in', 'cccd', ?, ?, ?, ?, 'M', ?, 0, 'b', TRUE, ?, 0, 's', '{}')", rows)
        if db.has_table("checkin_keys"):  # PostgreSQL keeps the (station, seq) rule in a table of its own
            db.executemany("INSERT INTO checkin_keys (station_id, seq, sig, wall_ms) VALUES ('raw-1', ?, 's', ?)",
                           [(r[0], r[6]) for r in rows])
    return [r[0] for r in db.rows("SELECT id FROM checkins WHERE station_id = 'raw-1' ORDER BY seq")]




# -- days an export cannot cover ---------------------------------------------------------------

@pytest.mark.parametrize("start, end", [("9999-12-31", "9999-12-31"), ("0001-01-01", "0001-01-01"),
                                        ("9999-12-30", "9999-12-31"), ("1999-12-31", "2000-01-01"),
                                        ("2100-01-01", "2100-01-02")])
def test_an_export_of_days_out_of_range_is_refused_with_a_clear_400(world, start, end):
    site, owner, venue, today = world
    api = owner.api("POST", f"/api/venues/{venue}/exports", {"start": start, "end": end, "format": "csv"})
    assert api.status_code == 400 and api.json()["detail"] == "Days must be from 01/01/2000 to 31/12/2099."
    quick = owner.http.get(f"/venues/{venue}/export.csv", params={"from": start, "to": end})
    assert quick.status_code == 400 and quick.json()["detail"] == "Ngày phải trong khoảng 01/01/2000 đến 31/12/2099."
    page = owner.form(f"/venues/{venue}/export", {"start": start, "end": end, "format": "xlsx"})
    assert page.status_code == 400 and 'id="error"' in page.text and "31/12/2099" in page.text
    assert site.services.audit.for_venue(venue)[0].action != "qrgate.venue.checkins.exported"


def _managers_finished_export(site, venue: int, today, fmt: str):
    """The venue's manager logs in and exports today's check-ins; (manager, job) once done."""
    manager = site.visitor("203.0.113.8").login(MANAGER)
    job = manager.api("POST", f"/api/venues/{venue}/exports",
                      {"start": today.isoformat(), "end": today.isoformat(), "format": fmt}).json()
    assert _wait_done(manager, job["status_url"])["state"] == "done"
    return manager, job


# -- the right to export is checked again at the download ------------------------------------------

def test_a_member_revoked_after_starting_an_export_cannot_fetch_it_and_the_file_is_deleted(world):
    site, owner, venue, today = world
    manager, job = _managers_finished_export(site, venue, today, "csv")
    files = list((Path(site.storage.data_dir) / "exports").glob(f"{job['id']}.*"))
    assert len(files) == 1
    account = site.services.accounts.account_for_phone(MANAGER)
    assert owner.api("DELETE", f"/api/venues/{venue}/members/{account.id}").status_code == 200
    assert manager.http.get(f"/exports/{job['id']}/download").status_code == 404
    assert manager.http.get(job["status_url"]).status_code == 404
    assert manager.http.get(f"/exports/{job['id']}").status_code == 404
    assert not files[0].exists()
    # Given the role again, the manager still gets no file from before: it is gone.
    site.services.venues.add_member(venue, account, "manager")
    assert manager.http.get(job["status_url"]).json()["state"] == "expired"
    assert manager.http.get(f"/exports/{job['id']}/download").status_code == 404


def test_a_member_whose_role_no_longer_exports_gets_403_at_the_download(world):
    site, owner, venue, today = world
    manager, job = _managers_finished_export(site, venue, today, "xlsx")
    account = site.services.accounts.account_for_phone(MANAGER)
    assert owner.api("DELETE", f"/api/venues/{venue}/members/{account.id}").status_code == 200
    site.services.venues.add_member(venue, account, "controller")  # a gate controller may not export
    assert manager.http.get(f"/exports/{job['id']}/download").status_code == 403


# -- what an export holds --------------------------------------------------------------------

@pytest.mark.parametrize("phone", [OWNER, MANAGER])
def test_every_export_of_a_masked_viewer_holds_masked_values_only(world, tmp_path, phone):
    site, owner, venue, today = world
    viewer = site.visitor("203.0.113.8").login(phone)
    day = {"from": today.isoformat(), "to": today.isoformat()}
    bodies = [viewer.http.get(f"/venues/{venue}/export.csv", params=day).content,
              viewer.http.get(f"/venues/{venue}/checkins.csv").content]
    for fmt in ("csv", "xlsx"):
        job = viewer.api("POST", f"/api/venues/{venue}/exports",
                         {"start": today.isoformat(), "end": today.isoformat(), "format": fmt}).json()
        status = _wait_done(viewer, job["status_url"])
        data = viewer.http.get(status["download_url"]).content
        if fmt == "xlsx":
            (tmp_path / "got.xlsx").write_bytes(data)
            sheet = openpyxl.load_workbook(tmp_path / "got.xlsx").active
            data = "\n".join(",".join(str(c.value) for c in row) for row in sheet.iter_rows()).encode()
        bodies.append(data)
    for body in bodies:
        text = body.decode("utf-8-sig")
        rows = list(csv.reader(io.StringIO(text)))
        assert [tuple(r[3:6]) for r in rows[1:]] == [MASKED]
        for hidden in (PERSON["id"], "123451", "Văn", "Lâm", PERSON["birth"], "03-21", "21/03"):
            assert hidden not in text, hidden


# -- no stored time makes a page or an export fail ---------------------------------------------------

def test_times_no_date_holds_are_shown_as_invalid_on_every_page_never_a_500(world, tmp_path):
    site, owner, venue, today = world
    ids = _insert_raw(site.storage, venue, OUT_OF_CALENDAR)
    operator = site.visitor("203.0.113.9").login(OPERATOR)
    officer = site.visitor("203.0.113.10").login(OFFICER)
    controller = site.visitor("203.0.113.11").login(CONTROLLER)
    pages = [(operator, "/feed"), (operator, "/api/checkins?limit=500"), (owner, f"/venues/{venue}"),
             (controller, f"/api/venues/{venue}/checkins?limit=500")]
    for who in (owner, controller, operator, officer):
        for view in ("rows", "visits"):
            for order in ("desc", "asc"):
                query = f"view={view}&order={order}&limit=200"
                pages += [(who, f"/history?{query}"), (who, f"/api/history?{query}"),
                          (who, f"/venues/{venue}/checkins?{query}"), (who, f"/history?{query}&q=nguyen"),
                          (who, f"/api/history?{query}&q=451")]
    for who, path in pages:
        response = who.http.get(path)
        assert response.status_code == 200, (path, response.text[-300:])
        if path.startswith("/api/"):
            assert INVALID_TIME in response.content.decode(), path
        else:
            assert INVALID_TIME in response.text, path
    # Every row is listed once, paging one row at a time through cursors made at the edges.
    for order in ("desc", "asc"):
        seen, cursor = [], None
        for _ in range(20):
            page = owner.http.get("/api/history", params={"order": order, "limit": 1,
                                                          **({"after": cursor} if cursor else {})})
            assert page.status_code == 200, page.text
            seen += [r["id"] for r in page.json()["rows"]]
            if not (cursor := page.json()["next_cursor"]):
                break
        assert len(seen) == len(set(seen)) == len(ids) + 1, order
    # The officer's trace form on such a row, and a trace of the person.
    assert officer.http.get("/trace", params={"checkin": ids[0]}).status_code == 200
    traced = officer.form("/trace", {"checkin": str(ids[0]), "from": today.isoformat(), "to": today.isoformat(),
                                     "margin": "15", "stay": "60"})
    assert traced.status_code == 200
    # The whole history as CSV lists them, each with the placeholder for its time.
    whole = owner.http.get(f"/venues/{venue}/checkins.csv")
    assert whole.status_code == 200
    rows = list(csv.reader(io.StringIO(whole.content.decode("utf-8-sig"))))
    assert [r[0] for r in rows[1:]].count(INVALID_TIME) == len(OUT_OF_CALENDAR)
