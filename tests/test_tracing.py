"""Contact tracing and retention on the server's own database."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import database_url, new_storage
from qrgate import protocol
from server.checkins.tracing import tracer_for
from server.checkins.tracing import Visit, delete_older_than, overlap_ms, visits_from_checkins
from test_web_support import Site

pytestmark = pytest.mark.timeout(60)

H = 3_600_000
T0 = 1_789_948_800_000  # 2026-09-21 00:00 UTC; the day's scans below all fall on that date


def test_scans_pair_into_visits_and_a_missing_end_takes_the_default_stay():
    rows = [("p", 1, "in", T0), ("p", 1, "out", T0 + 2 * H),  # a full visit
            ("p", 2, "in", T0 + 3 * H),  # never scanned out
            ("p", 3, "out", T0 + 9 * H)]  # never scanned in
    visits = visits_from_checkins(rows, default_stay_ms=H)
    assert visits == [Visit("p", 1, T0, T0 + 2 * H, False), Visit("p", 2, T0 + 3 * H, T0 + 4 * H, True),
                      Visit("p", 3, T0 + 8 * H, T0 + 9 * H, True)]
    assert overlap_ms(visits[0], Visit("q", 1, T0 + H, T0 + 5 * H, False), 0) == H
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 3 * H, T0 + 4 * H, False), 15 * 60_000) == 0
    # Someone who came 10 minutes after the person left is within a 15-minute margin;
    # 20 minutes after is not.
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 2 * H + 10 * 60_000, T0 + 3 * H, False), 15 * 60_000) == 5 * 60_000
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 2 * H + 20 * 60_000, T0 + 3 * H, False), 15 * 60_000) == 0


@pytest.fixture
def storage(tmp_path):
    storage = new_storage(tmp_path / "qrgate.sqlite3")  # where server.toml below finds it
    factory = storage.add_venue("Nhà máy A")
    bus = storage.add_venue("Xe 51B-123.45")
    key = Ed25519PrivateKey.generate()
    text = protocol.public_key_to_text(key.public_key())
    storage.add_station("gate-a", text, factory)
    storage.add_station("bus-1", text, bus)
    seq = iter(range(1, 10_000))

    def scan(station, person_id, name, direction, at_ms):
        rec = {"v": 1, "type": "checkin", "st": station, "seq": next(seq), "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": "cccd",
               "person": {"id": person_id, "name": name, "birth": "", "sex": ""}}
        storage.store_records(storage.station(station), [protocol.sign_record(rec, key)])

    # The F0 works 08:00-17:00 at the factory and rides the bus 17:10-17:50.
    scan("gate-a", "001", "Ca Bệnh", "in", T0 + 8 * H)
    scan("gate-a", "001", "Ca Bệnh", "out", T0 + 17 * H)
    scan("bus-1", "001", "Ca Bệnh", "in", T0 + 17 * H + 10 * 60_000)
    scan("bus-1", "001", "Ca Bệnh", "out", T0 + 17 * H + 50 * 60_000)
    # A colleague all day, a visitor for one hour (no exit scan), a night-shift worker.
    scan("gate-a", "002", "Đồng Nghiệp", "in", T0 + 7 * H)
    scan("gate-a", "002", "Đồng Nghiệp", "out", T0 + 16 * H)
    scan("gate-a", "003", "Khách", "in", T0 + 12 * H)
    scan("gate-a", "004", "Ca Đêm", "in", T0 + 19 * H)
    scan("gate-a", "004", "Ca Đêm", "out", T0 + 23 * H)
    # Someone on the same bus.
    scan("bus-1", "005", "Hành Khách", "in", T0 + 17 * H + 5 * 60_000)
    scan("bus-1", "005", "Hành Khách", "out", T0 + 17 * H + 40 * 60_000)
    return storage, factory, bus


def test_trace_lists_visits_and_ranks_everyone_who_overlapped(storage):
    storage, factory, bus = storage
    result = tracer_for(storage).trace("cccd:001", T0, T0 + 24 * H, margin_s=15 * 60, default_stay_s=3600)
    assert [(v["venue_id"], v["estimated"]) for v in result["visits"]] == [(factory, False), (bus, False)]
    ranked = [(c["person_key"], c["venues"]) for c in result["contacts"]]
    assert ranked == [("cccd:002", [factory]), ("cccd:003", [factory]), ("cccd:005", [bus])]
    assert result["contacts"][0]["overlap_minutes"] == pytest.approx(8 * 60 + 15, abs=1)
    assert result["contacts"][0]["name"] == "Đồng Nghiệp"
    assert "cccd:004" not in {c["person_key"] for c in result["contacts"]}  # came 2 h after, beyond the margin


def test_trace_cli_prints_json_and_is_audited_and_retention_deletes_old_rows(storage, tmp_path):
    storage_obj, factory, _ = storage
    cfg = tmp_path / "server.toml"
    database = database_url(tmp_path / "qrgate.sqlite3")  # the storage fixture's, on the PostgreSQL pass
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path}"\ndatabase = "{database}"\n[mqtt]\nport = 8883\n')
    run = [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())"]
    out = subprocess.run([*run, "trace", "--config", str(cfg), "--person", "cccd:001", "--from", "2026-09-21",
                          "--to", "2026-09-21"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [c["person_key"] for c in json.loads(out.stdout)["contacts"]] == ["cccd:002", "cccd:003", "cccd:005"]
    audit = storage_obj.sql.rows("SELECT action, data FROM audit_log")
    assert audit == [("qrgate.trace.run", '{"contacts": 3, "person": "cccd:001"}')]
    bad = subprocess.run([*run, "trace", "--config", str(cfg), "--person", "x", "--from", "21/09/2026", "--to", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--from must be a date like 2026-11-22" in bad.stderr
    assert delete_older_than(storage_obj, 30, now_ms=T0 + 40 * 24 * H) == 11
    assert storage_obj.count_checkins() == 0


def test_a_trace_limited_to_some_venues_only_counts_visits_elsewhere(storage):
    storage, factory, bus = storage
    result = tracer_for(storage).trace("cccd:001", T0, T0 + 24 * H, venue_ids={bus})
    assert [v["venue_id"] for v in result["visits"]] == [bus]
    assert result["visits_elsewhere"] == 1
    assert [(c["person_key"], c["name"], c["id_number"]) for c in result["contacts"]] == [
        ("cccd:005", "Hành Khách", "005")]



def test_presence_that_spans_or_crosses_the_visit_counts_in_full(tmp_path):
    storage = new_storage(tmp_path / "s.sqlite3")
    key = Ed25519PrivateKey.generate()
    storage.add_station("gate", protocol.public_key_to_text(key.public_key()), storage.add_venue("Nhà máy"))
    seq = iter(range(1, 100))

    def scan(person_id, direction, at_ms):
        rec = {"v": 1, "type": "checkin", "st": "gate", "seq": next(seq), "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": "cccd",
               "person": {"id": person_id, "name": person_id, "birth": "", "sex": ""}}
        storage.store_records(storage.station("gate"), [protocol.sign_record(rec, key)])

    m = 60_000
    scan("f0", "in", T0 + 12 * H)
    scan("f0", "out", T0 + 12 * H + 30 * m)
    scan("all-day", "in", T0 + 7 * H)  # no scan anywhere near the F0's half hour
    scan("all-day", "out", T0 + 17 * H)
    scan("early", "in", T0 + 5 * H)  # entered long before, left an hour after the F0
    scan("early", "out", T0 + 13 * H + 30 * m)
    scan("forgot", "in", T0 - 20 * H)  # an exit 33 hours later closes nothing
    scan("forgot", "out", T0 + 13 * H)
    result = tracer_for(storage).trace("cccd:f0", T0, T0 + 24 * H, margin_s=15 * 60, default_stay_s=3600)
    assert {c["person_key"]: c["overlap_minutes"] for c in result["contacts"]} == {
        "cccd:all-day": 60.0, "cccd:early": 60.0, "cccd:forgot": 45.0}
    assert [c["person_key"] for c in result["contacts"]] == ["cccd:all-day", "cccd:early", "cccd:forgot"]
    assert visits_from_checkins([("p", 1, "in", T0 - 20 * H), ("p", 1, "out", T0 + 13 * H)], H) == [
        Visit("p", 1, T0 - 20 * H, T0 - 19 * H, True), Visit("p", 1, T0 + 12 * H, T0 + 13 * H, True)]

# -- tracing on the web: health officers only, inside their areas --------------------------------

OFFICER, OWNER = "0912000004", "0912000001"
DAY = "2026-09-21"
HANOI = {"province": "01", "ward": "00004", "name": "HN-Cửa hàng", "address": "Số 2 Hàng Bài"}


@pytest.fixture
def traced(tmp_path):
    """An F0 at a factory and on a shuttle bus in Ho Chi Minh City (the officer's area),
    and at a shop in Hanoi (outside it)."""
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    factory = owner.create_venue(kind="factory", name="TP-Nhà máy A")
    bus = owner.create_venue(kind="vehicle", name="Xe đưa đón", plate="51B-123.45")
    shop = owner.create_venue(**HANOI)
    site.services.officers.grant(site.services.accounts, OFFICER, "79")
    key = Ed25519PrivateKey.generate()
    text = protocol.public_key_to_text(key.public_key())
    for station, venue in (("gate-a", factory), ("bus-1", bus), ("shop-1", shop)):
        site.storage.add_station(station, text, venue)
    seq = iter(range(1, 10_000))

    def scan(station, person_id, name, direction, at_ms, kind="cccd"):
        rec = {"v": 1, "type": "checkin", "st": station, "seq": next(seq), "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": kind,
               "person": {"id": person_id, "name": name, "birth": "1983-03-21", "sex": ""}}
        site.storage.store_records(site.storage.station(station), [protocol.sign_record(rec, key)])
        return site.storage.sql.value("SELECT max(id) FROM checkins")

    f0 = "024083123451"
    rows = {"f0": scan("gate-a", f0, "Ca Bệnh", "in", T0 + 1 * H)}
    scan("gate-a", f0, "Ca Bệnh", "out", T0 + 9 * H)
    # On the bus the F0 showed the national QR: the same person by the shared key.
    scan("bus-1", f0, "CA BỆNH", "in", T0 + 9 * H + 10 * 60_000, kind="national")
    scan("bus-1", f0, "CA BỆNH", "out", T0 + 9 * H + 50 * 60_000, kind="national")
    scan("shop-1", f0, "Ca Bệnh", "in", T0 + 11 * H)
    scan("gate-a", "079190000002", "Đồng Nghiệp", "in", T0)
    scan("gate-a", "079190000002", "Đồng Nghiệp", "out", T0 + 8 * H)
    scan("gate-a", "079190000003", "=cmd|' /C calc'!A0 <img src=x onerror=alert(1)>", "in", T0 + 5 * H)
    scan("bus-1", "079190000005", "Hành Khách", "in", T0 + 9 * H + 5 * 60_000)
    scan("bus-1", "079190000005", "Hành Khách", "out", T0 + 9 * H + 40 * 60_000)
    rows["hanoi"] = scan("shop-1", "001190000009", "Người Hà Nội", "in", T0 + 11 * H + 5 * 60_000)
    return site, rows, f0


def _trace_audit(site) -> list[dict]:
    return [json.loads(r[0]) for r in site.storage.sql.rows(
        "SELECT data FROM audit_log WHERE action = 'qrgate.trace.run' ORDER BY id")]


def test_an_officer_traces_a_person_and_sees_contacts_in_their_area_ranked_by_time_together(traced):
    site, rows, f0 = traced
    officer = site.visitor().login(OFFICER)
    response = officer.api("POST", "/api/trace", {"checkin_id": rows["f0"], "from": DAY, "to": DAY})
    assert response.status_code == 200, response.text
    result = response.json()
    assert [(v["venue"], v["minutes"], v["estimated"]) for v in result["visits"]] == [
        ("TP-Nhà máy A", 480, False), ("Xe đưa đón", 40, False)]
    assert [(c["rank"], c["name"], c["id_number"]) for c in result["contacts"]] == [
        (1, "Đồng Nghiệp", "079190000002"), (2, "=cmd|' /C calc'!A0 <img src=x onerror=alert(1)>", "079190000003"),
        (3, "Hành Khách", "079190000005")]
    assert result["contacts"][0]["overlap_minutes"] == pytest.approx(7 * 60 + 15, abs=1)
    # The Hanoi shop is outside the officer's area: counted, nobody met there listed.
    assert result["visits_elsewhere"] == 1
    assert "Người Hà Nội" not in response.text
    assert _trace_audit(site) == [{"contacts": 3, "from": DAY, "to": DAY, "margin_min": 15, "output": "json",
                                   "person": "cccd:" + f0, "stay_min": 60, "visits": 2}]
    # By card: the chip ID card's number finds the national QR scans on the bus too.
    by_card = officer.api("POST", "/api/trace", {"kind": "cccd", "id_number": "0240 8312 3451", "from": DAY,
                                                 "to": DAY, "margin_minutes": 0}).json()
    assert [v["venue"] for v in by_card["visits"]] == ["TP-Nhà máy A", "Xe đưa đón"]
    assert len(_trace_audit(site)) == 2


def test_the_trace_page_and_its_csv_export(traced):
    site, rows, f0 = traced
    officer = site.visitor().login(OFFICER)
    page = officer.http.get(f"/trace?checkin={rows['f0']}")
    assert page.status_code == 200 and "Ca Bệnh" in page.text and f0 in page.text
    form = {"checkin": str(rows["f0"]), "from": DAY, "to": DAY, "margin": "15", "stay": "60"}
    result = officer.form("/trace", form)
    assert result.status_code == 200
    assert result.text.index("Đồng Nghiệp") < result.text.index("Hành Khách")
    assert "&lt;img src=x onerror=alert(1)&gt;" in result.text and "<img src=x" not in result.text
    csv_response = officer.form("/trace.csv", form)
    assert csv_response.status_code == 200
    assert csv_response.headers["content-type"].startswith("text/csv")
    assert csv_response.content.startswith(b"\xef\xbb\xbf")
    lines = csv_response.content.decode("utf-8-sig").splitlines()
    assert lines[0] == "Hạng,Họ tên,Số giấy tờ,Loại giấy tờ,Năm sinh,Số phút chung,Địa điểm,Lần đầu tiếp xúc"
    assert lines[1].startswith("1,Đồng Nghiệp,079190000002,CCCD,21/03/1983,")
    # The formula-looking name is text in a spreadsheet, not a formula.
    assert lines[2].startswith("2,'=cmd|' /C calc'!A0 <img src=x onerror=alert(1)>,079190000003,")
    assert [a["output"] for a in _trace_audit(site)] == ["page", "csv"]


def test_tracing_is_only_for_officers_and_only_inside_their_areas(traced):
    site, rows, f0 = traced
    owner = site.visitor().login(OWNER)  # owns every venue, but is no health officer
    body = {"checkin_id": rows["f0"], "from": DAY, "to": DAY}
    assert owner.api("POST", "/api/trace", body).status_code == 404
    assert owner.http.get("/trace").status_code == 404
    officer = site.visitor().login(OFFICER)
    assert officer.api("POST", "/api/trace", {**body, "checkin_id": rows["hanoi"]}).status_code == 404
    assert officer.http.get(f"/trace?checkin={rows['hanoi']}").status_code == 404
    assert officer.api("POST", "/api/trace", body, csrf=False).status_code == 403
    # Someone seen only outside the area: nothing, not even a count of elsewhere.
    away = officer.api("POST", "/api/trace", {"kind": "cccd", "id_number": "001190000009", "from": DAY,
                                              "to": DAY}).json()
    assert away["visits"] == [] and away["contacts"] == [] and away["visits_elsewhere"] == 0
    assert away["person"] is None
    assert site.visitor().api("POST", "/api/trace", body).status_code == 401


@pytest.mark.parametrize("change", [
    {"from": "2026-02-30"}, {"to": "2026-09-01"}, {"from": "2026-01-01", "to": "2026-09-21"},
    {"margin_minutes": 9999}, {"stay_minutes": 0}, {"checkin_id": 10**30}, {"checkin_id": None, "kind": "x"},
    {"checkin_id": None, "kind": "cccd", "id_number": "<script>"}, {"checkin_id": None, "kind": "cccd"},
    {"checkin_id": None, "kind": "national", "id_number": "******123451"},
    {"checkin_id": None, "kind": "cccd", "id_number": "1" * 4096},
])
def test_hostile_trace_requests_get_a_clear_422(traced, change):
    site, rows, f0 = traced
    officer = site.visitor().login(OFFICER)
    response = officer.api("POST", "/api/trace", {"checkin_id": rows["f0"], "from": DAY, "to": DAY, **change})
    assert response.status_code == 422, response.text
    assert "detail" in response.json()
    assert _trace_audit(site) == []


def test_a_hostile_trace_form_is_answered_on_the_page(traced):
    site, rows, f0 = traced
    officer = site.visitor().login(OFFICER)
    for form in ({"kind": "cccd", "id_number": "=cmd|' /C calc'!A0", "from": DAY, "to": DAY},
                 {"checkin": "abc", "from": DAY, "to": DAY}, {"checkin": str(rows["f0"]), "from": "x", "to": DAY},
                 {"checkin": str(rows["f0"]), "from": DAY, "to": DAY, "margin": "\x00"}):
        response = officer.form("/trace", form)
        assert response.status_code in (404, 422), form
        if response.status_code == 422:
            assert 'id="trace-error"' in response.text
    assert _trace_audit(site) == []
