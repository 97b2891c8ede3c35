"""Printed personal passes: issue from the roster, the A4 PDF (its QR codes decode and
verify with the server key), revocation into the signed block list, and a running
station that refuses a revoked pass and accepts its replacement after the server pushes
its config through a real Mosquitto."""

from __future__ import annotations

import datetime as dt
import json
import re

import pypdfium2
import pytest
import zxingcpp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import new_storage, wait_until
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result
from edge.pushed_config import parse_pushed_config
from qrgate.errors import UserError
from qrgate.keyfiles import load_or_create_key
from qrgate.personal_pass import key_id, verify_pass
from qrgate.persons import person_key
from server.roster.passes import PassOffice
from server.roster.parsing import parse_roster, read_table
from server.roster.roster import RosterStore
from server.accounts.sms import DevSmsSender
from server.ingest.stationconfig import ConfigPublisher, StationConfigStore
from server.storage import SqliteStorage
from server.web.app import create_app
from test_web_support import FakeClock, Site

pytestmark = pytest.mark.timeout(90)

TODAY = dt.date(2026, 9, 21)
NAMES = ["Nguyễn Văn Lâm", "Trần Thị Mai", "Lê Thị Hồng Nhung", "Phạm Văn Đức", "Đinh Thị Năm", "Hoàng Văn Bảy",
         "Vũ Thị Ánh Tuyết", "Bùi Quang Khải", "Ngô Thị Phương Thảo"]


def roster_csv(names=NAMES) -> bytes:
    lines = ["ma_nv,ho_ten,bo_phan,dien_thoai"]
    lines += [f"NV{i:03d},{name},Tổ {i % 3 + 1},{'0912486419' if i == 0 else ''}" for i, name in enumerate(names)]
    return ("\n".join(lines) + "\n").encode()


@pytest.fixture
def office(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    venue = storage.add_venue("Công ty May Bắc Giang")
    store = RosterStore(storage)
    rows, problems = parse_roster(read_table(roster_csv()), 2026)
    assert problems == []
    store.import_rows(venue, rows)
    key = Ed25519PrivateKey.generate()
    return PassOffice(storage, key), venue


def decode_pdf(pdf: bytes, dpi: int = 150) -> list[str]:
    """Every QR on every page, rendered like a printout scanned at ``dpi``."""
    document = pypdfium2.PdfDocument(pdf)
    texts = []
    for index in range(len(document)):
        image = document[index].render(scale=dpi / 72).to_pil()
        texts += [r.text for r in zxingcpp.read_barcodes(image, formats=zxingcpp.BarcodeFormat.QRCode)]
    return texts


def test_passes_for_people_without_a_phone_print_on_a4_and_every_code_verifies(office):
    desk, venue = office
    ids = desk.without_phone(venue)
    assert len(ids) == len(NAMES) - 1  # NV000 has a phone
    result = desk.issue(venue, ids, 30, TODAY)
    assert len(result.issued) == 8 and result.skipped == []
    assert all(r.expires == TODAY + dt.timedelta(days=29) for r in result.issued)
    pdf = desk.sheet_pdf("Công ty May Bắc Giang", desk.sheet_items(venue, result.batch_id))
    document = pypdfium2.PdfDocument(pdf)
    assert len(document) == 1
    width, height = document[0].get_size()
    assert (round(width / 72 * 25.4), round(height / 72 * 25.4)) == (210, 297)  # A4 portrait, in mm

    keys = {key_id(desk.key.public_key()): desk.key.public_key()}
    decoded = decode_pdf(pdf)
    assert len(decoded) == 8
    claims = [verify_pass(text, keys, TODAY) for text in decoded]
    assert sorted(c["n"] for c in claims) == sorted(NAMES[1:])
    assert {c["pid"] for c in claims} == {r.pid for r in result.issued}
    # The same codes come out when the batch is printed again (deterministic signatures).
    assert sorted(decode_pdf(desk.sheet_pdf("Công ty May Bắc Giang", desk.sheet_items(venue, result.batch_id)))) \
        == sorted(decoded)


def test_nine_cards_take_two_pages_and_the_codes_still_decode_at_a_coarse_100_dpi(office):
    desk, venue = office
    ids = [p.id for p in desk.roster.people(venue)]
    result = desk.issue(venue, ids, 7, TODAY)
    pdf = desk.sheet_pdf("Xưởng 2", desk.sheet_items(venue, result.batch_id))
    assert len(pypdfium2.PdfDocument(pdf)) == 2
    assert len(decode_pdf(pdf, dpi=100)) == 9


def test_a_person_with_a_valid_pass_is_skipped_and_a_reissue_gets_a_new_id(office):
    desk, venue = office
    person = desk.without_phone(venue)[0]
    first = desk.issue(venue, [person], 30, TODAY).issued[0]
    again = desk.issue(venue, [person], 30, TODAY)
    assert again.issued == [] and again.skipped == [person]
    revoked, fresh = desk.revoke(venue, first.pid, "  mất   thẻ ", TODAY, reissue_days=60)
    assert (revoked.state, revoked.reason, revoked.replaced_by) == ("revoked", "mất thẻ", fresh.pid)
    assert fresh.pid != first.pid and fresh.expires == TODAY + dt.timedelta(days=59)
    with pytest.raises(UserError, match="already revoked"):
        desk.revoke(venue, first.pid, "again", TODAY)
    # The revoked pass is never printed again; the batch of the new one is.
    assert desk.sheet_items(venue, first.batch_id) == []
    assert [r.pid for r, _ in desk.sheet_items(venue, fresh.batch_id)] == [fresh.pid]
    # Check-ins with either pass count for the person in the "not checked in" view.
    assert sorted(desk.keys_by_person(venue)[person]) == sorted([f"pass:{first.pid}", f"pass:{fresh.pid}"])


def test_a_revocation_reason_is_kept_without_control_characters(office):
    # A NUL can reach here from the API's JSON; no database text column takes one.
    desk, venue = office
    issued = desk.issue(venue, desk.without_phone(venue)[:1], 30, TODAY).issued[0]
    revoked, _ = desk.revoke(venue, issued.pid, "mất\x00 thẻ\x1b\u200b", TODAY)
    assert revoked.reason == "mất thẻ"
    assert StationConfigStore(desk.storage).blocked_keys(0) == [f"pass:{issued.pid}"]


def test_bad_requests_store_nothing(office):
    desk, venue = office
    with pytest.raises(UserError, match="1 to 366 days"):
        desk.issue(venue, desk.without_phone(venue), 0, TODAY)
    with pytest.raises(UserError, match="not on this venue's roster"):
        desk.issue(venue, [999], 30, TODAY)
    other = desk.storage.add_venue("Venue khác")
    with pytest.raises(UserError, match="not on this venue's roster"):
        desk.issue(other, desk.without_phone(venue), 30, TODAY)  # ids of another venue's roster
    assert desk.passes(venue) == [] and desk.passes(other) == []


def test_a_revoked_pass_is_in_the_signed_block_list_until_after_its_expiry(office):
    desk, venue = office
    station_key = Ed25519PrivateKey.generate()
    from qrgate import protocol

    desk.storage.add_station("gate-1", protocol.public_key_to_text(station_key.public_key()), venue)
    issued = desk.issue(venue, desk.without_phone(venue)[:2], 10, TODAY).issued
    desk.revoke(venue, issued[0].pid, "lost", TODAY)
    configs = StationConfigStore(desk.storage)
    trusted = {key_id(desk.key.public_key()): desk.key.public_key()}
    now_ms = int(dt.datetime.combine(TODAY, dt.time(12), dt.timezone.utc).timestamp() * 1000)
    pushed = parse_pushed_config(json.dumps(configs.build("gate-1", desk.key, now_ms=now_ms)).encode(), "gate-1",
                                 trusted)
    assert pushed.is_blocked(person_key("pass", issued[0].pid, "", ""))
    assert not pushed.is_blocked(person_key("pass", issued[1].pid, "", ""))
    # Two days after the last valid day the entry leaves the list: the pass is expired anyway.
    later = now_ms + 12 * 86400 * 1000
    pushed = parse_pushed_config(json.dumps(configs.build("gate-1", desk.key, now_ms=later)).encode(), "gate-1",
                                 trusted)
    assert not pushed.is_blocked(person_key("pass", issued[0].pid, "", ""))
    assert configs.blocked_keys(now_ms) == [f"pass:{issued[0].pid}"]


def test_replacing_the_roster_revokes_the_passes_of_people_who_left(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Xưởng May")
    post = dict(headers={"X-CSRF-Token": owner.csrf()})
    assert owner.http.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster_csv(), "text/csv")},
                           **post).status_code == 200
    issued = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30}).json()["issued"]
    assert len(issued) == 8
    response = owner.http.post(f"/api/venues/{venue}/roster?mode=replace",
                               files={"file": ("r.csv", roster_csv(NAMES[:3]), "text/csv")}, **post)
    assert response.status_code == 200
    assert len(response.json()["revoked_passes"]) == 6
    states = {p["pid"]: p["state"] for p in owner.http.get(f"/api/venues/{venue}/passes").json()["passes"]}
    assert sorted(states.values()) == ["active"] * 2 + ["revoked"] * 6
    blocked = StationConfigStore(site.storage).blocked_keys(int(site.clock() * 1000))
    assert len(blocked) == 6
    audit = [e.action for e in site.services.audit.for_venue(venue)]
    assert audit.count("qrgate.passes.revoked") == 6


def test_a_station_refuses_a_revoked_pass_and_accepts_its_replacement_through_the_broker(tmp_path, server_env):
    """The whole path: web API issues and revokes, the server pushes the signed config
    through Mosquitto, the running station applies it and decides offline."""
    key = load_or_create_key(server_env.config.pass_key_file)
    storage = server_env.storage
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)  # real time: the station checks passes against today
    site = Site(storage, sender, FakeClock(), app)
    app.state.pass_office = PassOffice(storage, key, ConfigPublisher(
        StationConfigStore(storage), key, server_env.config.mqtt, server_env.config.base))
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Nhà máy Test")
    server_env.venue_id = venue
    setup = server_env.add_station("gate-p", tmp_path / "station", source={"kind": "list"},
                                   feedback={"indicators": "none", "panel": "none"})
    assert owner.http.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster_csv(NAMES[:3]), "text/csv")},
                           headers={"X-CSRF-Token": owner.csrf()}).status_code == 200
    issued = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30})
    assert issued.status_code == 201, issued.text
    pdf = owner.http.get(issued.json()["pdf"])
    texts = decode_pdf(pdf.content)
    assert len(texts) == 2

    station = Station(load_station_config(setup.config_path), source=ListSource([]))
    station.start()
    try:
        wait_until(lambda: station.publisher.online, 30, "station online")
        by_pid = {verify_pass(t, station.pass_keys, None)["pid"]: t for t in texts}
        lost_pid = issued.json()["issued"][0]["pid"]
        kept_text = next(t for pid, t in by_pid.items() if pid != lost_pid)
        # Before: both are good passes.
        assert station.handle_text(by_pid[lost_pid]).result is Result.ACCEPTED
        assert station.handle_text(kept_text).result is Result.ACCEPTED

        # The venue's self check-in page is a "station" in the database, but no device: not pushed to.
        site.services.self_checkin.station_for(site.services.venues.get(venue))
        response = owner.api("POST", f"/api/venues/{venue}/passes/{lost_pid}/revoke",
                             {"reason": "mất thẻ", "reissue_days": 30})
        assert response.status_code == 200, response.text
        body = response.json()
        assert (body["pushed_to"], body["push_error"]) == (1, None)
        wait_until(lambda: station.pushed is not None and station.pushed.blocked, 30, "block list applied")

        refused = station.handle_text(by_pid[lost_pid])
        assert (refused.result, refused.reason) == (Result.REFUSED, "blocked")
        fresh_pdf = owner.http.get(f"/venues/{venue}/passes/batches/{body['reissued']['batch_id']}.pdf")
        [fresh_text] = decode_pdf(fresh_pdf.content)
        assert station.handle_text(fresh_text).result is Result.ACCEPTED
    finally:
        station.close()
    actions = [e.action for e in site.services.audit.for_venue(venue)]
    for action in ("qrgate.roster.uploaded", "qrgate.passes.issued", "qrgate.passes.printed", "qrgate.passes.revoked"):
        assert action in actions


def test_everyone_without_a_phone_is_issued_in_batches_of_the_batch_limit(tmp_path, monkeypatch):
    import server.roster.pass_routes
    import server.roster.passes

    monkeypatch.setattr(server.roster.passes, "MAX_PER_BATCH", 5)  # PassOffice and server.roster.service read it here
    monkeypatch.setattr(server.roster.pass_routes, "MAX_PER_BATCH", 5)
    site = Site.create(tmp_path)
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Xưởng May")
    assert owner.http.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster_csv(), "text/csv")},
                           headers={"X-CSRF-Token": owner.csrf()}).status_code == 200
    first = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30}).json()
    assert (len(first["issued"]), first["left_without_pass"]) == (5, 3)
    page = owner.form(f"/venues/{venue}/passes", {"without_phone": "1", "days": "30"})
    assert "Đã cấp 3 thẻ (đợt 2)." in page.text and "chưa có thẻ: bấm in lần nữa" not in page.text
    third = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30})
    assert third.status_code == 400  # nobody left to print for


def test_a_block_list_table_from_before_entries_could_end_is_upgraded_in_place(tmp_path):
    # About a SQLite file written by an earlier version: on SQLite on both passes.
    storage = SqliteStorage(tmp_path / "old.sqlite3")
    storage.db["blocklist"].create({"person_key": str, "reason": str, "added_ms": int}, pk="person_key")
    storage.db["blocklist"].insert({"person_key": "cccd:024083123451", "reason": "quarantine", "added_ms": 1})
    store = StationConfigStore(storage)
    store.block("pass:ABCDEFGH", "lost", until_ms=2_000)
    assert store.blocked_keys(1_000) == ["cccd:024083123451", "pass:ABCDEFGH"]
    assert store.blocked_keys(3_000) == ["cccd:024083123451"]  # the old entry has no end


def _revoke_on_the_page(owner, venue: int, pid: str):
    return owner.form(f"/venues/{venue}/passes/{pid}/revoke", {"reason": "mất thẻ", "reissue": ""})


def test_the_passes_page_says_in_vietnamese_what_went_wrong_and_what_to_do(tmp_path):
    site = Site.create(tmp_path)  # no broker: the web server cannot push
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Xưởng May")
    assert owner.http.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster_csv(NAMES[:3]), "text/csv")},
                           headers={"X-CSRF-Token": owner.csrf()}).status_code == 200
    issued = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30}).json()["issued"]
    pid = issued[0]["pid"]

    page = _revoke_on_the_page(owner, venue, pid)
    assert page.status_code == 200
    assert f"Đã thu hồi thẻ {pid}." in page.text
    assert "máy chủ web này chưa được nối với máy chủ MQTT" in page.text and "Gửi lại tới các trạm" in page.text
    assert "broker" not in page.text and "qrgate-provision" not in page.text
    again = _revoke_on_the_page(owner, venue, pid)
    assert again.status_code == 409 and f"Thẻ {pid} đã bị thu hồi từ trước." in again.text
    bad_days = owner.form(f"/venues/{venue}/passes", {"without_phone": "1", "days": "9999"})
    assert bad_days.status_code == 400 and "số ngày phải là số nguyên từ 1 đến" in bad_days.text
    not_ours = owner.form(f"/venues/{venue}/passes", {"person": "999", "days": "30"})
    assert not_ours.status_code == 400 and "không có trong danh sách nhân sự" in not_ours.text
    # The revoked pass says why in the page's words, its date as people write it.
    listed = owner.http.get(f"/venues/{venue}/passes").text
    assert "Lý do: mất thẻ" in listed and re.search(r'class="expires">\d{2}/\d{2}/\d{4}<', listed)


def test_a_revocation_the_broker_missed_reaches_the_stations_with_send_again(tmp_path, server_env):
    key = load_or_create_key(server_env.config.pass_key_file)
    storage = server_env.storage
    sender = DevSmsSender()
    app = create_app(storage, sender=sender)
    site = Site(storage, sender, FakeClock(), app)
    app.state.pass_office = PassOffice(storage, key, ConfigPublisher(
        StationConfigStore(storage), key, server_env.config.mqtt, server_env.config.base, timeout=5))
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Nhà máy Test")
    server_env.venue_id = venue
    server_env.add_station("gate-p", tmp_path / "station", source={"kind": "list"},
                           feedback={"indicators": "none", "panel": "none"})
    assert owner.http.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster_csv(NAMES[:3]), "text/csv")},
                           headers={"X-CSRF-Token": owner.csrf()}).status_code == 200
    issued = owner.api("POST", f"/api/venues/{venue}/passes", {"without_phone": True, "days": 30}).json()["issued"]
    pid = issued[0]["pid"]

    server_env.broker.stop()
    page = _revoke_on_the_page(owner, venue, pid)
    assert f"Đã thu hồi thẻ {pid}." in page.text
    assert "không kết nối được máy chủ MQTT" in page.text and 'id="push-again"' in page.text
    assert "cannot reach" not in page.text

    server_env.broker.start()
    page = owner.form(f"/venues/{venue}/passes/push", {})
    assert page.status_code == 200 and "Đã gửi danh sách chặn tới 1 trạm của địa điểm." in page.text
    assert 'id="push-again"' not in page.text
    actions = [e.action for e in site.services.audit.for_venue(venue)]
    assert "qrgate.passes.pushed" in actions
