"""Rosters: upload checks (CSV and XLSX), merge and replace, the "not checked in today"
view, masking by role, the audit trail, and hostile input on the pages and the API."""

from __future__ import annotations

import datetime as dt
import io
import json
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ON_POSTGRESQL
from qrgate import protocol
from server.ingest.bridge import Bridge
from server.roster.parsing import MAX_CELL_BYTES, RosterError, parse_roster, read_table
from server.roster.roster import RosterStore
from test_web_support import Site, stored_text

pytestmark = pytest.mark.timeout(60)

OWNER, CONTROLLER, STRANGER = "0912486419", "0976929792", "0969201470"
TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HEADER = "Mã NV,Họ và tên,Số CCCD,Năm sinh,Bộ phận,Điện thoại\n"
GOOD = (HEADER +
        "NV001,Nguyễn Văn Lâm,024083123451,1983,Tổ cắt,0912 486 419\n"
        "NV002,Trần Thị Mai,,1990,Tổ may,\n"
        "NV003,Lê Thị Hồng,HC4797915123456,1995,Tổ may,\n")


def csv_bytes(text: str) -> bytes:
    return text.encode("utf-8")


def upload(visitor, venue_id: int, data: bytes, mode: str = "merge", name: str = "roster.csv"):
    return visitor.http.post(f"/venues/{venue_id}/roster", data={"csrf": visitor.csrf(), "mode": mode},
                             files={"file": (name, data, "text/csv")})


@pytest.fixture
def site(tmp_path):
    return Site.create(tmp_path)


@pytest.fixture
def owner(site):
    return site.visitor().login(OWNER)


@pytest.fixture
def venue(owner):
    return owner.create_venue(name="Nhà máy May Bắc Giang")


def share(site, venue_id: int, phone: str, role: str):
    site.services.venues.add_member(venue_id, site.services.accounts.account_for_phone(phone), role)
    return site.visitor(ip="203.0.113.9").login(phone)


def _phone(phone: str) -> str:
    from server.accounts.accounts import normalise_phone

    return normalise_phone(phone)


# -- reading and checking files ------------------------------------------------------------

def test_a_good_csv_is_stored_with_only_what_the_views_need(site, owner, venue):
    response = upload(owner, venue, csv_bytes(GOOD))
    assert response.status_code == 200, response.text
    assert "Đã nhập 3 dòng: thêm 3" in response.text
    people = {p.employee_no: p for p in RosterStore(site.storage).people(venue)}
    assert people["NV001"].person_key == "cccd:024083123451"
    # A BHYT card is kept as its lifelong social-insurance number, like check-ins are.
    assert people["NV003"].person_key == "bhxh:7915123456"
    assert people["NV002"].person_key == ""
    assert [people[n].has_phone for n in ("NV001", "NV002")] == [True, False]
    # The phone number itself is never stored, nor the full BHYT card code.
    raw = stored_text(site.storage).encode()
    if not ON_POSTGRESQL:  # and the file's bytes, free pages and the WAL included
        path = site.storage.path
        raw += path.read_bytes() + path.with_name(path.name + "-wal").read_bytes()
    assert b"486 419" not in raw and b"486419" not in raw.replace(b"0912486419", b"")
    assert b"HC4797915123456" not in raw


def test_one_bad_row_refuses_the_whole_file_with_a_message_for_every_row(site, owner, venue):
    hostile = (HEADER +
               "NV001,Nguyễn Văn Lâm,024083123451,1983,Tổ cắt,\n"
               "NV002,=cmd|' /C calc'!A0,,1990,,\n"
               "NV003,<script>alert(1)</script>,,1990,,\n"
               f"NV004,{'A' * (MAX_CELL_BYTES + 1)},,1990,,\n"
               "NV005,Lê\x07 Văn Bell,,1990,,\n"
               "NV006,Phạm Văn Số,12345,1990,,\n"
               "NV001,Nguyễn Văn Lâm,024083123451,1983,Tổ cắt,\n"
               "nv001,Đỗ Thị Hà,,1991,,\n"
               "NV009,Vũ Văn Trùng,024083123451,1980,,\n"
               "NV010,Hồ Văn Năm,,2999,@SUM(A1),abc\n")
    response = upload(owner, venue, csv_bytes(hostile))
    assert response.status_code == 400
    page = response.text
    assert "chưa có gì được lưu" in page
    for expected in ("trông như công thức bảng tính", "chỉ được có chữ cái", f"dài quá {MAX_CELL_BYTES} byte",
                     "chứa ký tự điều khiển", "phải là số CCCD", "trùng hoàn toàn với dòng 2",
                     "nv001 đã có ở dòng 2", "số giấy tờ này đã có ở dòng 2", "phải là năm từ 1900",
                     "không phải số điện thoại"):
        assert expected in page, expected
    assert "<script>alert(1)" not in page  # shown only as a cell message, never echoed raw
    assert RosterStore(site.storage).count(venue) == 0
    # Through the API, the same file gives one problem per row with its code.
    response = owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()},
                               files={"file": ("r.csv", csv_bytes(hostile), "text/csv")})
    assert response.status_code == 400
    body = response.json()
    assert body["ok"] is False
    assert {(p["row"], p["code"]) for p in body["problems"]} >= {(3, "formula"), (6, "control"), (8, "repeat"),
                                                                 (9, "duplicate_no"), (10, "duplicate_id")}


def test_whole_file_refusals_say_what_is_wrong(site, owner, venue):
    cases = [
        (b"", "tệp trống"),
        ("Mã NV,Họ tên\n".encode(), "chỉ có dòng tiêu đề"),
        ("Tên,Tuổi\nA,1\n".encode(), "còn thiếu: employee_no"),
        ((HEADER + "NV1,Lê Văn Tám,,,,\n").encode("utf-16"), "không phải UTF-8"),  # Excel's "Unicode Text"
        (b"\xd0\xcf\x11\xe0\xa1\xb1\x1a\xe1" + b"\0" * 100, "không đọc tệp .xls cũ"),
        (b"PK\x03\x04garbage", "không phải sổ tính XLSX"),
    ]
    for data, words in cases:
        response = upload(owner, venue, data)
        assert response.status_code == 400, words
        assert words in response.text, words
    too_big = owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()},
                              files={"file": ("big.csv", b"a" * (5 * 1024 * 1024 + 10), "text/csv")})
    assert too_big.status_code == 413
    assert RosterStore(site.storage).count(venue) == 0


def test_an_xlsx_roster_is_read_and_numbers_that_lost_zeros_or_formulas_are_refused(site, owner, venue):
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(["Mã nhân viên", "Họ và tên", "CCCD", "Năm sinh", "Bộ phận", "SĐT"])
    sheet.append(["NV001", "Nguyễn Văn Lâm", "024083123451", 1983, "Tổ cắt", ""])
    sheet.append([1002, "Trần Thị Mai", None, 1990, "Tổ may", None])
    data = io.BytesIO()
    book.save(data)
    response = upload(owner, venue, data.getvalue(), name="roster.xlsx")
    assert response.status_code == 200, response.text
    people = {p.employee_no: p for p in RosterStore(site.storage).people(venue)}
    assert people["NV001"].person_key == "cccd:024083123451"
    assert people["1002"].birth_year == "1990"

    sheet.append(["NV004", "=HYPERLINK(\"http://x\",\"Bấm\")", 24083123452, 1990, "", ""])
    data = io.BytesIO()
    book.save(data)
    response = upload(owner, venue, data.getvalue(), name="roster.xlsx")
    assert response.status_code == 400
    assert "trông như công thức bảng tính" in response.text
    assert "mất số 0 ở đầu" in response.text  # the CCCD typed as a number
    assert RosterStore(site.storage).count(venue) == 2


def test_merge_updates_and_keeps_while_replace_makes_the_roster_the_file(site, owner, venue):
    assert upload(owner, venue, csv_bytes(GOOD)).status_code == 200
    changed = HEADER + "NV002,Trần Thị Mai,,1990,Tổ hoàn thiện,\nNV004,Phạm Văn Đức,,1988,Kho,\n"
    response = owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()},
                               files={"file": ("r.csv", csv_bytes(changed), "text/csv")})
    assert response.json() | {"problems": []} == {"ok": True, "rows": 2, "added": 1, "updated": 1, "unchanged": 0,
                                                  "removed": 0, "problems": [], "problems_total": 0,
                                                  "revoked_passes": []}
    store = RosterStore(site.storage)
    assert [p.employee_no for p in store.people(venue)] == ["NV004", "NV001", "NV002", "NV003"]
    assert {p.employee_no: p.department for p in store.people(venue)}["NV002"] == "Tổ hoàn thiện"

    response = owner.http.post(f"/api/venues/{venue}/roster?mode=replace", headers={"X-CSRF-Token": owner.csrf()},
                               files={"file": ("r.csv", csv_bytes(changed), "text/csv")})
    assert response.json()["removed"] == 2
    assert sorted(p.employee_no for p in store.people(venue)) == ["NV002", "NV004"]


def test_merge_refuses_an_id_number_that_another_employee_already_has(site, owner, venue):
    assert upload(owner, venue, csv_bytes(GOOD)).status_code == 200
    clash = HEADER + "NV777,Nguyễn Văn Lâm,024083123451,1983,Tổ cắt,\n"
    response = upload(owner, venue, csv_bytes(clash))
    assert response.status_code == 400
    assert "đã có trong danh sách, mã NV" in response.text
    assert sorted(p.employee_no for p in RosterStore(site.storage).people(venue)) == ["NV001", "NV002", "NV003"]


def test_parse_accepts_semicolons_english_headers_and_ignores_extra_columns():
    text = "employee_no;full_name;id_number;notes\nE-1;Lê Văn Tám;;night shift\n"
    rows, problems = parse_roster(read_table(text.encode()), 2026)
    assert problems == []
    assert [(r.employee_no, r.name) for r in rows] == [("E-1", "Lê Văn Tám")]
    with pytest.raises(RosterError, match="twice"):
        parse_roster(read_table(b"name,ho_ten,ma_nv\nA,B,C\n"), 2026)


# -- not checked in today -----------------------------------------------------------------

class Gate:
    """A registered station that sends real signed check-ins through the bridge."""

    def __init__(self, storage, venue_id: int, station_id: str):
        self.storage = storage
        self.key = Ed25519PrivateKey.generate()
        self.station_id = station_id
        self.seq = 0
        storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()), venue_id)

    def scan(self, when: dt.datetime, kind: str, id_number: str, name: str = "Người Quét") -> None:
        self.seq += 1
        record = protocol.sign_record(
            {"v": 1, "type": "checkin", "st": self.station_id, "seq": self.seq, "ts": int(when.timestamp() * 1000),
             "mono": self.seq, "boot": "b", "sync": True, "dir": "in", "kind": kind,
             "person": {"id": id_number, "name": name, "birth": "", "sex": ""}}, self.key)
        result = Bridge(self.storage).handle(protocol.records_topic(self.station_id),
                                             protocol.encode_batch([protocol.canonical_json(record)]))
        assert self.storage.count_checkins(self.station_id) == self.seq, result


def test_not_checked_in_today_matches_cards_and_passes_since_local_midnight(site, owner, venue):
    assert upload(owner, venue, csv_bytes(GOOD + "NV004,Phạm Văn Đức,,1988,Kho,\nNV005,Đinh Thị Năm,,1992,Kho,\n"
                                          )).status_code == 200
    bus = owner.create_venue(name="Xe đưa đón 98B-123.45", parent_id=venue)
    elsewhere = owner.create_venue(name="Chợ khác")
    store = RosterStore(site.storage, site.clock)
    ids = {p.employee_no: p.id for p in store.people(venue)}
    pass_id = owner.api("POST", f"/api/venues/{venue}/passes",
                        {"person_ids": [ids["NV004"]], "days": 30}).json()["issued"][0]["pid"]
    midnight = dt.datetime.fromtimestamp(site.clock(), TZ).replace(hour=0, minute=0, second=0, microsecond=0)
    gate, bus_gate, other = Gate(site.storage, venue, "gate-1"), Gate(site.storage, bus, "bus-1"), \
        Gate(site.storage, elsewhere, "other-1")
    gate.scan(midnight + dt.timedelta(minutes=5), "cccd", "024083123451")           # NV001 today
    bus_gate.scan(midnight + dt.timedelta(hours=1), "bhyt", "DN4797915123456")      # NV003, reissued card
    gate.scan(midnight + dt.timedelta(hours=2), "pass", pass_id)                   # NV004 by pass
    gate.scan(midnight - dt.timedelta(minutes=1), "cccd", "001196004321")          # someone else, yesterday
    other.scan(midnight + dt.timedelta(hours=3), "national", "024083123451")       # another venue: no matter

    response = owner.http.get(f"/api/venues/{venue}/roster/absent")
    assert response.status_code == 200
    body = response.json()
    assert body["since"] == midnight.isoformat()
    assert sorted(p["employee_no"] for p in body["absent"]) == ["NV002", "NV005"]
    page = owner.http.get(f"/venues/{venue}/roster/absent").text
    assert "2 / 5 người chưa quét" in page
    # Past the next midnight, everyone is absent again (a new day, a new session).
    site.clock.advance((midnight + dt.timedelta(days=1, minutes=1)).timestamp() - site.clock())
    again = site.visitor().login(OWNER)
    assert len(again.http.get(f"/api/venues/{venue}/roster/absent").json()["absent"]) == 5


# -- roles, masking, audit ------------------------------------------------------------------

def test_controllers_see_masked_names_and_cannot_upload_and_strangers_see_nothing(site, owner, venue):
    assert upload(owner, venue, csv_bytes(GOOD)).status_code == 200
    controller = share(site, venue, CONTROLLER, "controller")
    people = controller.http.get(f"/api/venues/{venue}/roster").json()["people"]
    assert {p["name"] for p in people} == {"Nguyễn V** L**", "Trần T** M**", "Lê T** H***"}
    assert {p["id_number"] for p in people} == {"*********451", "*******456", ""}
    page = controller.http.get(f"/venues/{venue}/roster").text
    assert "Nguyễn V** L**" in page and "Nguyễn Văn Lâm" not in page
    assert "upload-form" not in page and "issue-selected" not in page
    assert upload(controller, venue, csv_bytes(GOOD)).status_code == 403
    assert controller.http.get(f"/venues/{venue}/passes").status_code == 403
    stranger = site.visitor(ip="198.51.100.4").login(STRANGER)
    assert stranger.http.get(f"/api/venues/{venue}/roster").status_code == 404
    assert stranger.http.get(f"/venues/{venue}/roster/absent").status_code == 404

    owner_view = owner.http.get(f"/api/venues/{venue}/roster").json()["people"]
    assert "Nguyễn Văn Lâm" in {p["name"] for p in owner_view}
    assert all("024083123451" not in json.dumps(p) for p in owner_view)
    actions = [e.action for e in site.services.audit.for_venue(venue)]
    assert "qrgate.roster.uploaded" in actions
    assert "qrgate.roster.names.read" in actions
    # The controller's masked reads are not written as full-name reads.
    readers = {e.phone for e in site.services.audit.for_venue(venue) if e.action == "qrgate.roster.names.read"}
    assert readers == {_phone(OWNER)}


def test_hostile_requests_get_a_clear_4xx_never_a_500(site, owner, venue):
    assert upload(owner, venue, csv_bytes(GOOD)).status_code == 200
    no_csrf = owner.http.post(f"/venues/{venue}/roster", data={"mode": "merge"},
                              files={"file": ("r.csv", csv_bytes(GOOD), "text/csv")})
    assert no_csrf.status_code == 403
    checks = [
        owner.http.get(f"/api/venues/{venue}/roster?limit=100000"),
        owner.http.get(f"/api/venues/{venue}/roster?offset=-1"),
        owner.http.get(f"/api/venues/{venue}/roster?offset=" + "9" * 40),
        owner.http.post(f"/api/venues/{venue}/roster?mode=" + "x" * 4096, headers={"X-CSRF-Token": owner.csrf()},
                        files={"file": ("r.csv", b"a", "text/csv")}),
        owner.http.post(f"/api/venues/{venue}/roster", headers={"X-CSRF-Token": owner.csrf()}),
        owner.api("POST", f"/api/venues/{venue}/passes", {"person_ids": ["=cmd|' /C calc'!A0"], "days": 30}),
        owner.api("POST", f"/api/venues/{venue}/passes", {"person_ids": [1], "days": 100000}),
        owner.api("POST", f"/api/venues/{venue}/passes", {"person_ids": list(range(5000)), "days": 30}),
        owner.api("POST", f"/api/venues/{venue}/passes", {"person_ids": [987654], "days": 30}),
        owner.api("POST", f"/api/venues/{venue}/passes/<script>/revoke", {"reason": "x"}),
        owner.api("POST", f"/api/venues/{venue}/passes/ABCDEFGH/revoke", {"reason": "x" * 4096}),
        owner.api("POST", f"/api/venues/{venue}/passes/ABCDEFGH/revoke", {"reason": "lost"}),
        owner.http.get(f"/venues/{venue}/passes/batches/999.pdf"),
        owner.http.get(f"/venues/{venue}/passes/batches/-1.pdf"),
        owner.http.post(f"/venues/{venue}/passes", data={"csrf": owner.csrf(), "person": "x" * 4096}),
        owner.http.post(f"/venues/{venue}/passes", data={"csrf": owner.csrf(), "person": "1", "days": "0"}),
        owner.http.get("/api/venues/99999/roster/absent"),
        owner.http.get(f"/api/venues/{2**70}/roster"),
        owner.http.post(f"/venues/{venue}/roster", data={"csrf": owner.csrf(), "mode": "drop-table"},
                        files={"file": ("r.csv", csv_bytes(GOOD), "text/csv")}),
        owner.api("POST", f"/api/venues/{venue}/passes", {"person_ids": [2**70], "days": 30}),
        owner.http.post(f"/venues/{venue}/passes", data={"csrf": owner.csrf(), "person": str(2**70)}),
    ]
    statuses = [r.status_code for r in checks]
    assert all(400 <= s < 500 for s in statuses), statuses
    assert RosterStore(site.storage).count(venue) == 3
