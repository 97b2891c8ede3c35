"""The 2025 map in use: an installation upgraded from the old three-level codes reads them
as words and moves them with `qrgate-server areas-migrate` (dry run, apply, audited, once);
venues close, reopen and edit, audited; the contact person reaches the officers who
trace; invitations carry a link and a code that lasts a day; people land where their
work is."""

from __future__ import annotations

import datetime as dt
import html
import json
import re

import pytest

from conftest import database_url, storage_for
from server.areas.areas import AreaDirectory
from server.areas.migrate import DEFAULT_MAPPING_FILE, apply_migration, plan_migration, read_mapping
from server.accounts.accounts import Accounts
from server.accounts.sms import DevSmsSender
from server.venues.venues import VenueDirectory
from test_cli import run
from server.web.app import create_app
from test_web_support import FakeClock, Site
from words_vi import leftovers, page_words

pytestmark = pytest.mark.timeout(60)

OWNER, OFFICER, OLD_OFFICER, OPERATOR, GUEST = "0912000001", "0912000002", "0912000003", "0912000004", "0912000005"


def old_installation(storage):
    """A database as the server left it before the 2025 map: venues and an officer on
    the old sample's codes (Quận 1's Bến Nghé, Hà Nội's Đồng Xuân), a district grant."""
    db = storage.sql
    for column in ("label", "province", "district", "ward", "parent_id", "plate", "public_token"):
        db.ensure_column("venues", column, "BIGINT" if column == "parent_id" else "TEXT")
    ids = []
    for name, province, district, ward in (("Chợ Bến Nghé", "79", "760", "26740"),
                                           ("Nhà sách Đồng Xuân", "01", "002", "00040")):
        venue_id = storage.add_venue(name, "market", "Số 1")
        db.execute("UPDATE venues SET province = ?, district = ?, ward = ? WHERE id = ?",
                   [province, district, ward, venue_id])
        ids.append(venue_id)
    accounts = Accounts(storage, DevSmsSender())
    db.schema("CREATE TABLE IF NOT EXISTS area_officers (account_id BIGINT NOT NULL REFERENCES accounts(id),"
              " area_code TEXT NOT NULL, granted_ms BIGINT NOT NULL, PRIMARY KEY (account_id, area_code))")
    officer = accounts.account_for_phone(OLD_OFFICER)
    for code in ("26740", "760"):
        db.execute("INSERT INTO area_officers (account_id, area_code, granted_ms) VALUES (?, ?, 0)",
                   [officer.id, code])
    return ids


def area_options(page: str) -> dict[str, str]:
    """The history page's area filter: code -> what the option says."""
    select = page.split('id="f-area"')[1].split("</select>")[0]
    return {code: html.unescape(text) for code, text in re.findall(r'<option value="(\w+)"[^>]*>([^<]*)</option>', select)}


def test_old_codes_read_as_words_and_give_no_reach_into_the_new_map_until_moved(tmp_path):
    from conftest import new_storage

    storage = new_storage(tmp_path / "server.sqlite3")
    ben_nghe, dong_xuan = old_installation(storage)
    sender, clock = DevSmsSender(), FakeClock()
    site = Site(storage, sender, clock, create_app(storage, sender=sender, clock=clock))  # the upgrade
    venues = site.services.venues
    venue = venues.get(ben_nghe)
    assert venue.legacy_area and venues.area_text(venue) == "Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh"
    officers = site.services.officers
    old = site.visitor().login(OLD_OFFICER)
    assert [(a["code"], a["legacy"]) for a in old.http.get("/api/area").json()["areas"]] == [
        ("26740", True), ("760", True)]
    # A new venue with the same digits (26740 is now Phường Sài Gòn) is not the old grant's.
    owner = site.visitor().login(OWNER)
    new = owner.create_venue(province="79", ward="26740", name="Cửa hàng mới")
    account = site.services.accounts.account_for_phone(OLD_OFFICER)
    assert officers.venue_ids(account.id) == [ben_nghe]
    assert not officers.covers(account.id, venues.get(new))
    assert old.http.get("/api/dashboard").json()["legacy_only"] is True
    assert old.http.get("/dashboard/26740").status_code == 404
    # Where an officer picks one of their areas, an old one says so, as on their area page.
    assert area_options(old.http.get("/history").text) == {
        "26740": "Phường Bến Nghé (địa giới cũ, trước 01/07/2025)", "760": "Quận 1 (địa giới cũ, trước 01/07/2025)"}
    assert "(địa giới cũ, trước 01/07/2025)" in old.http.get("/reports/areas").text
    said = [p for path in ("/area", "/history", "/reports/areas", "/dashboard")
            for p in leftovers(page_words(old.http.get(path).text), path)]
    assert said == []

    mapping = read_mapping(DEFAULT_MAPPING_FILE, site.services.areas)
    plan = plan_migration(storage, site.services.areas, mapping)
    assert {(m.what, m.old_code, m.new_code) for m in plan.moves} == {("venue", "26740", "26740"),
                                                                       ("officer", "26740", "26740")}
    assert {(m.what, m.old_code) for m in plan.unmapped} == {("venue", "00040"), ("officer", "760")}
    assert apply_migration(storage, plan, site.services.audit) == 2
    assert apply_migration(storage, plan_migration(storage, site.services.areas, mapping), site.services.audit) == 0
    venue = venues.get(ben_nghe)
    assert not venue.legacy_area and venues.area_text(venue) == "Phường Sài Gòn, Thành phố Hồ Chí Minh"
    assert sorted(officers.venue_ids(account.id)) == [ben_nghe, new]
    assert area_options(old.http.get("/history").text)["26740"] == "Phường Sài Gòn"
    # The owner reads the move in the venue's change log, in words.
    site.services.venues.add_member(ben_nghe, site.services.accounts.account_for_phone(OWNER), "owner")
    log = owner.http.get(f"/api/venues/{ben_nghe}/history").json()["history"]
    assert "Chuyển địa chỉ hành chính sang địa giới mới: Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh → Phường" \
           " Sài Gòn, Thành phố Hồ Chí Minh" in [e["text"] for e in log]
    # The venue still on an old code says so on its page, and its edit form asks for the commune again.
    site.services.venues.add_member(dong_xuan, site.services.accounts.account_for_phone(OWNER), "owner")
    page = owner.http.get(f"/venues/{dong_xuan}").text
    assert 'id="legacy-area"' in page and "Phường Đồng Xuân, Quận Hoàn Kiếm, Thành phố Hà Nội" in page
    edit = owner.http.get(f"/venues/{dong_xuan}/edit").text
    assert 'id="old-area"' in edit
    assert leftovers(page_words(page), "venue page") + leftovers(page_words(edit), "edit form") == []


def test_the_migrate_command_dry_runs_then_applies_once(tmp_path):
    config = tmp_path / "server.toml"
    database = database_url(tmp_path)
    config.write_text('[server]\ndata_dir = "data"\n' + (f'database = "{database}"\n' if database else ""))
    from server.config import load_server_config

    storage = storage_for(load_server_config(config))
    ben_nghe, dong_xuan = old_installation(storage)
    dry = run("qrgate-server", "areas-migrate", "--config", str(config))
    assert dry.returncode == 1, dry.stderr  # something is left without a mapping
    assert "would move" in dry.stdout and "Phường Bến Nghé, Quận 1, Thành phố Hồ Chí Minh [26740] ->" in dry.stdout
    assert "NO MAPPING for Phường Đồng Xuân" in dry.stdout and "districts are gone" in dry.stdout
    areas = AreaDirectory.load()
    venues = VenueDirectory(storage, Accounts(storage, DevSmsSender()), areas)
    assert venues.get(ben_nghe).legacy_area  # a dry run changes nothing
    applied = run("qrgate-server", "areas-migrate", "--config", str(config), "--apply")
    assert "moved 2," in applied.stdout, applied.stdout + applied.stderr
    assert not venues.get(ben_nghe).legacy_area and venues.get(dong_xuan).legacy_area
    again = run("qrgate-server", "areas-migrate", "--config", str(config), "--apply")
    assert "moved 0," in again.stdout
    actions = [r[0] for r in storage.sql.rows("SELECT action FROM audit_log ORDER BY id")]
    assert actions.count("qrgate.venue.area_migrated") == 1 and actions.count("qrgate.officer.area_migrated") == 1
    bad = tmp_path / "bad.csv"
    bad.write_text("old_code,new_code\n00040,99999\n", encoding="utf-8")
    refused = run("qrgate-server", "areas-migrate", "--config", str(config), "--mapping", str(bad))
    assert refused.returncode == 1 and "line 2: new code '99999' is not a commune/ward" in refused.stderr


@pytest.fixture
def site(tmp_path):
    return Site.create(tmp_path)


def test_a_closed_venue_keeps_its_data_refuses_check_ins_and_reopens_audited(site):
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(name="Quán cà phê")
    venue = site.services.venues.get(venue_id)
    token = site.services.venues.ensure_public_token(venue_id)
    site.services.self_checkin.check_in(venue, {"kind": "cccd", "dir": "in", "person": {
        "id": "001090000001", "name": "Lê Văn Tám", "birth": "", "sex": ""}})
    closing = owner.form(f"/venues/{venue_id}/close", {})
    assert closing.status_code == 303
    page = owner.http.get(f"/venues/{venue_id}").text
    assert "Đã đóng cửa địa điểm" in page and 'id="closed-notice"' in page and 'id="reopen"' in page
    assert site.storage.sql.value("SELECT count(*) FROM checkins WHERE venue_id = ?", [venue_id]) == 1
    visitor = site.visitor()
    form = visitor.http.get(f"/c/{token}").text
    assert "Địa điểm này đã đóng cửa và không nhận khai báo ra vào nữa." in form and 'id="self-form"' not in form
    declared = visitor.form(f"/c/{token}", {"id_number": "001090000002", "name": "Trần Thị B", "direction": "in"})
    assert declared.status_code == 409 and "đã đóng cửa" in declared.text
    assert [p for name, text in (("venue", page), ("self check-in", form), ("declared", declared.text))
            for p in leftovers(page_words(text), name)] == []
    api = visitor.api("POST", f"/api/self-checkin/{token}", {"id_number": "001090000002", "name": "Trần Thị B",
                                                             "direction": "in"})
    assert api.status_code == 409 and api.json()["detail"] == "venue_closed"
    enrol = owner.api("POST", f"/api/venues/{venue_id}/enrol-code", {"minutes": 5})
    assert enrol.status_code == 400 and "đã đóng cửa" in enrol.json()["detail"]
    assert site.storage.sql.value("SELECT count(*) FROM checkins WHERE venue_id = ?", [venue_id]) == 1
    assert owner.form(f"/venues/{venue_id}/reopen", {}).status_code == 303
    assert 'id="self-form"' in visitor.http.get(f"/c/{token}").text
    texts = [e["text"] for e in owner.http.get(f"/api/venues/{venue_id}/history").json()["history"]]
    assert "Đóng cửa địa điểm Quán cà phê" in texts and "Mở lại địa điểm Quán cà phê" in texts


def test_a_manager_edits_but_may_not_close_and_the_edit_names_what_changed(site):
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(name="Cửa hàng A")
    site.services.venues.add_member(venue_id, site.services.accounts.account_for_phone(GUEST), "manager")
    manager = site.visitor().login(GUEST)
    assert manager.api("POST", f"/api/venues/{venue_id}/close", {}).status_code == 403
    edited = manager.api("PUT", f"/api/venues/{venue_id}", {"kind": "market", "name": "Cửa hàng B", "address": "Số 2",
                                                            "province": "79", "ward": "26743",
                                                            "contact_name": "Nguyễn Văn Liên", "contact_role": "Tổ trưởng",
                                                            "contact_phone": "0236 3821 111"})
    assert edited.status_code == 200, edited.text
    assert edited.json()["contact_phone"] == "02363821111"
    texts = [e["text"] for e in owner.http.get(f"/api/venues/{venue_id}/history").json()["history"]]
    assert "Chỉnh sửa địa điểm Cửa hàng B: tên, địa chỉ, người liên hệ" in texts
    wrong = manager.api("PUT", f"/api/venues/{venue_id}", {"kind": "market", "name": "x", "address": "y",
                                                           "province": "79", "ward": "26743", "contact_name": "Ai đó"})
    assert wrong.status_code == 422 and "contact_phone" in wrong.json()["problems"]


def test_officers_of_the_area_see_the_contact_person_when_they_trace_and_others_do_not(site):
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(name="Nhà máy", contact_name="Phạm Thị Hoa", contact_role="Phó giám đốc",
                                  contact_phone="0912 486 419")
    site.services.venues.add_member(venue_id, site.services.accounts.account_for_phone(GUEST), "controller")
    controller = site.visitor().login(GUEST)
    assert "contact_phone" not in controller.http.get(f"/api/venues/{venue_id}").json()
    assert "0912486419" not in controller.http.get(f"/venues/{venue_id}").text
    venue = site.services.venues.get(venue_id)
    site.services.self_checkin.check_in(venue, {"kind": "cccd", "dir": "in", "person": {
        "id": "001090000001", "name": "Lê Văn Tám", "birth": "", "sex": ""}})
    site.services.officers.grant(site.services.accounts, OFFICER, "26743")
    officer = site.visitor().login(OFFICER)
    area = officer.http.get("/area").text
    assert "Phạm Thị Hoa" in area and "0912486419" in area and 'id="trace-box"' in area
    assert 'class="today" data-scans="1">Hôm nay: 1 lượt quét tại 1/' in area
    day = dt.datetime.fromtimestamp(site.clock(), site.services.tz).date().isoformat()
    result = officer.api("POST", "/api/trace", {"kind": "cccd", "id_number": "001090000001", "from": day,
                                                "to": day}).json()
    assert result["visits"][0]["contact"] == {"name": "Phạm Thị Hoa", "role": "Phó giám đốc", "phone": "0912486419"}


def test_an_invitation_sms_carries_a_link_and_its_code_lasts_a_day(site):
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(name="Chợ")
    assert owner.api("POST", f"/api/venues/{venue_id}/invitations", {"phones": GUEST, "role": "controller"}
                     ).status_code == 201
    text = site.sender.last_text_to(GUEST)
    invitation_id = site.services.venues.pending_for_phone(GUEST)[0].id
    assert f"http://testserver/invitations/{invitation_id}" in text and "Mã hết hạn sau 24 giờ" in text
    assert "Người kiểm soát vào ra" in text
    code = site.last_code(GUEST)
    guest = site.visitor()
    assert guest.http.get(f"/invitations/{invitation_id}").headers["location"].startswith("/login?next=")
    site.clock.advance(23 * 3600)  # read the next day: the code still works
    guest.login(GUEST)
    accepted = guest.form(f"/invitations/{invitation_id}", {"code": code})
    assert accepted.status_code == 303
    assert "Đã nhận lời mời" in guest.http.get(accepted.headers["location"]).text
    owner = site.visitor().login(OWNER)  # a day later: a new session
    assert owner.api("POST", f"/api/venues/{venue_id}/invitations", {"phones": "0912000006", "role": "controller"}
                     ).status_code == 201
    late_id = site.services.venues.pending_for_phone("0912000006")[0].id
    late_code = site.last_code("0912000006")
    site.clock.advance(25 * 3600)
    late = site.visitor().login("0912000006")
    refused = late.api("POST", f"/api/invitations/{late_id}/accept", {"code": late_code})
    assert refused.status_code == 400 and "hết hạn" in refused.json()["detail"]


def test_people_land_where_their_work_is(site):
    owner = site.visitor().login(OWNER)
    owner.create_venue()
    assert owner.http.get("/").headers["location"] == "/venues"
    site.services.officers.grant(site.services.accounts, OFFICER, "79")
    officer = site.visitor().login(OFFICER)
    assert officer.http.get("/").headers["location"] == "/area"
    site.services.accounts.set_operator(OPERATOR)
    assert site.visitor().login(OPERATOR).http.get("/").headers["location"] == "/fleet"
    # An owner made an officer too lands on the area page and still reaches the venues.
    site.services.officers.grant(site.services.accounts, OWNER, "26743")
    assert owner.http.get("/").headers["location"] == "/area"
    assert 'id="my-venues"' in owner.http.get("/area").text and owner.http.get("/venues").status_code == 200


def test_the_venue_page_names_its_two_histories_and_what_each_role_may_do(site):
    owner = site.visitor().login(OWNER)
    venue_id = owner.create_venue(kind="vehicle", name="", plate="51B-123.45", address="")
    page = owner.http.get(f"/venues/{venue_id}").text
    assert ">Lịch sử quét<" in page and ">Nhật ký thay đổi<" in page and ">Lịch sử<" not in page
    assert page.index('id="primary-actions"') < page.index('id="secondary-actions"')
    assert "Mỗi vai trò được làm gì" in page and "Người kiểm soát vào ra</strong>: xem lượt quét" in page
    address = page.split('id="venue-address">')[1].split("<")[0]
    assert address == "Phường Bến Thành, Thành phố Hồ Chí Minh"  # a vehicle: no street, no leading comma
    assert 'data-confirm="' in page.split('id="close-section"')[1]
    site.services.accounts.set_operator(OWNER)
    assert 'href="/venues/%d/checkins"' % venue_id in owner.http.get(f"/dashboard/venue/{venue_id}").text
    assert json.loads(owner.http.get("/api/areas/79").text)["wards"][0]["code"]
