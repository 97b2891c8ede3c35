"""Scan history: the query layer (keyset paging, filters, search, visits), person keys
across cards, and the web pages and API with masking by role and audited full reads."""

from __future__ import annotations

import json
import random
from html.parser import HTMLParser

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import new_storage
from edge.payloads import parse_payload
from qrgate import protocol
from qrgate.persons import person_key
from server.checkins import history
from server.checkins.history import HistoryError, cursor_at, query_history, visits_for_rows
from server.venues.permissions import ROLES, allowed
from test_web_support import Site

pytestmark = pytest.mark.timeout(60)

MIN = 60_000
H = 3_600_000
T0 = 1_789_948_800_000  # 2026-09-21 00:00 UTC, 07:00 in Ho Chi Minh City


class Scanner:
    """Signed check-ins straight into storage, as the bridge would store them."""

    def __init__(self, storage):
        self.storage = storage
        self.key = Ed25519PrivateKey.generate()
        self.seq = 0

    def station(self, station_id: str, venue_id: int) -> str:
        self.storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()), venue_id)
        return station_id

    def scan(self, station: str, at_ms: int, direction: str = "in", *, kind: str = "cccd",
             id_number: str = "024083123451", name: str = "Nguyễn Văn Lâm", birth: str = "1983-03-21") -> int:
        self.seq += 1
        rec = {"v": 1, "type": "checkin", "st": station, "seq": self.seq, "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": kind,
               "person": {"id": id_number, "name": name, "birth": birth, "sex": "M"}}
        self.storage.store_records(self.storage.station(station), [protocol.sign_record(rec, self.key)])
        return self.storage.sql.value("SELECT max(id) FROM checkins")


# -- person keys --------------------------------------------------------------------------

def test_person_key_matches_the_same_person_across_cards_and_the_station_uses_the_same_rule():
    assert person_key("cccd", "024083123451", "Nguyễn Văn Lâm", "1983-03-21") == "cccd:024083123451"
    # National QR with the full citizen number: the same person as the chip card.
    assert person_key("national", "024083123451", "NGUYỄN VĂN LÂM", "1983-03-21") == "cccd:024083123451"
    # BHYT: reissued cards keep the lifelong 10-digit number.
    assert person_key("bhyt", "DN4797915123456", "", "") == person_key("bhyt", "GD4017915123456", "", "") \
        == person_key("bhyt", "7915123456", "", "") == "bhxh:7915123456"
    # A masked national id: name and birth keep two people apart.
    a = person_key("national", "******123451", "Lê  Thị Hoa", "1990-**-**")
    assert a == person_key("national", "******123451", "lê thị hoa", "1990-**-**")
    assert a != person_key("national", "******123451", "Lê Thị Hòa", "1990-**-**")
    assert person_key("pass", "W-0042", "x", "") == "pass:W-0042"
    # The station's Person gives exactly the shared rule's key.
    person = parse_payload("024083123451||Nguyễn Văn Lâm|21031983|Nam|Số 1 Lê Lợi|01012021")
    assert person.person_key == person_key(person.kind, person.id_number, person.name, person.birth)


def test_the_server_stores_the_cross_card_key(tmp_path):
    storage = new_storage(tmp_path / "s.sqlite3")
    scanner = Scanner(storage)
    gate = scanner.station("gate-1", storage.add_venue("Chợ"))
    scanner.scan(gate, T0, kind="national", id_number="024083123451", birth="1983-03-21")
    scanner.scan(gate, T0 + MIN, kind="bhyt", id_number="DN4797915123456")
    keys = [r[0] for r in storage.sql.rows("SELECT person_key FROM checkins ORDER BY id")]
    assert keys == ["cccd:024083123451", "bhxh:7915123456"]


# -- the query layer --------------------------------------------------------------------------

@pytest.fixture
def filled(tmp_path):
    """Three venues, about 240 random scans, many sharing a timestamp."""
    storage = new_storage(tmp_path / "s.sqlite3")
    scanner = Scanner(storage)
    venues = [storage.add_venue(f"Địa điểm {i}") for i in range(3)]
    gates = [scanner.station(f"gate-{i}", v) for i, v in enumerate(venues)]
    rng = random.Random(5)
    for i in range(240):
        at = T0 + rng.choice([0, 0, 0, rng.randrange(0, 3 * 24 * H)])  # a quarter of them at one instant
        scanner.scan(rng.choice(gates), at, rng.choice(["in", "out"]), id_number=f"0010830{i % 40:05d}",
                     name=f"Người {i % 40}")
    return storage, venues


def _all_pages(storage, limit: int, **query) -> list[int]:
    ids, cursor, pages = [], None, 0
    while True:
        page = query_history(storage, cursor=cursor, limit=limit, **query)
        ids += [r["id"] for r in page.rows]
        pages += 1
        assert pages < 500, "paging does not end"
        if page.next_cursor is None:
            return ids
        assert len(page.rows) == limit
        cursor = page.next_cursor


def _expected(storage, venue_ids, since, until, order) -> list[int]:
    rows = storage.sql.rows("SELECT id, venue_id, wall_ms FROM checkins")
    rows = [r for r in rows if (venue_ids is None or r[1] in venue_ids) and (since is None or r[2] >= since)
            and (until is None or r[2] < until)]
    rows.sort(key=lambda r: (r[2], r[0]), reverse=order == "desc")
    return [r[0] for r in rows]


@pytest.mark.parametrize("plan", ["one", "few", "windows", "all"])
@pytest.mark.parametrize("order", ["desc", "asc"])
def test_keyset_pages_cover_every_row_once_in_order_even_when_timestamps_repeat(filled, plan, order, monkeypatch):
    storage, venues = filled
    if plan == "windows":
        monkeypatch.setattr(history, "FEW_VENUES", 1)  # two venues now take the many-venue plan
    venue_ids = {"one": [venues[0]], "few": venues[:2], "windows": venues[:2], "all": None}[plan]
    for since, until in [(None, None), (T0, T0 + 36 * H), (T0 + H, None)]:
        got = _all_pages(storage, 7, venue_ids=venue_ids, since_ms=since, until_ms=until, order=order)
        assert got == _expected(storage, venue_ids, since, until, order)
        assert len(got) == len(set(got))


def test_an_empty_venue_list_and_bad_arguments(filled):
    storage, venues = filled
    assert query_history(storage, venue_ids=[]) == history.Page([], None)
    for bad in ["x", "eyJhIjoxfQ", "W1RydWUsMV0", "A" * 80, cursor_at({"wall_ms": 1, "id": 1}) + "!"]:
        with pytest.raises(HistoryError):
            query_history(storage, venue_ids=None, cursor=bad)
    with pytest.raises(HistoryError):
        query_history(storage, venue_ids=None, limit=0)
    with pytest.raises(HistoryError):
        query_history(storage, venue_ids=None, order="sideways")
    with pytest.raises(HistoryError):
        query_history(storage, venue_ids=None, search="9" * 4096)


@pytest.fixture
def people(tmp_path):
    storage = new_storage(tmp_path / "s.sqlite3")
    scanner = Scanner(storage)
    market = storage.add_venue("Chợ Bến Thành")
    school = storage.add_venue("Trường Lê Lợi")
    m, s = scanner.station("gate-m", market), scanner.station("gate-s", school)
    ids = {
        "card": scanner.scan(m, T0 + 1 * H, kind="cccd", id_number="024083123451", name="Nguyễn Văn Lâm"),
        "qr": scanner.scan(s, T0 + 2 * H, kind="national", id_number="024083123451", name="Nguyễn Văn Lâm"),
        "bhyt": scanner.scan(m, T0 + 3 * H, kind="bhyt", id_number="DN4797915123456", name="Đặng Thị Đào"),
        "bhyt_new": scanner.scan(s, T0 + 4 * H, kind="bhyt", id_number="GD4017915123456", name="Đặng Thị Đào"),
        "other": scanner.scan(m, T0 + 5 * H, kind="cccd", id_number="079190000111", name="Trần Văn Lam"),
        "hostile": scanner.scan(m, T0 + 6 * H, kind="cccd", id_number="079190000222",
                                name="=cmd|' /C calc'!A0 <script>alert(1)</script>"),
    }
    return storage, market, school, ids


def _ids(page) -> list[int]:
    return [r["id"] for r in page.rows]


def test_search_by_id_finds_the_person_on_every_card_they_used(people):
    storage, market, school, ids = people
    assert _ids(query_history(storage, venue_ids=None, search="024083123451")) == [ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=[market], search="0240 8312 3451")) == [ids["card"]]
    assert _ids(query_history(storage, venue_ids=None, search="dn4797915123456")) == [ids["bhyt_new"], ids["bhyt"]]
    assert _ids(query_history(storage, venue_ids=None, search="7915123456")) == [ids["bhyt_new"], ids["bhyt"]]
    # A 12-digit CCCD whose last 10 digits happen to equal a BHYT number is someone else.
    assert _ids(query_history(storage, venue_ids=None, search="017915123456")) == []


def test_search_by_last_digits_and_by_name_ignores_case_and_accents(people):
    storage, market, school, ids = people
    assert _ids(query_history(storage, venue_ids=None, search="3451")) == [ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=None, search="nguyen v")) == [ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=None, search="LÂM")) == [ids["other"], ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=None, search="LAM")) == [ids["other"], ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=None, search="dang dao")) == [ids["bhyt_new"], ids["bhyt"]]
    assert _ids(query_history(storage, venue_ids=None, search="van la")) == [ids["other"], ids["qr"], ids["card"]]
    assert _ids(query_history(storage, venue_ids=[market], search="van la", order="asc")) == [ids["card"],
                                                                                              ids["other"]]
    # Control characters are not part of what is searched for.
    assert _ids(query_history(storage, venue_ids=None, search="\x00tr\u202ean")) == [ids["other"]]


def test_a_rare_match_is_searched_in_bounded_steps_that_continue_where_they_stopped(people, monkeypatch):
    storage, market, school, ids = people
    monkeypatch.setattr(history, "SEARCH_BUDGET", 2)
    monkeypatch.setattr(history, "SEARCH_CHUNK", 2)
    first = query_history(storage, venue_ids=None, search="nguyen")  # newest 2 rows: no match yet
    assert first.rows == [] and first.next_cursor is not None
    found, cursor = [], None
    for _ in range(10):
        page = query_history(storage, venue_ids=None, search="nguyen", cursor=cursor)
        found += _ids(page)
        cursor = page.next_cursor
        if cursor is None:
            break
    assert found == [ids["qr"], ids["card"]]


def test_rows_come_out_raw_with_venue_names_for_escaping_later(people):
    storage, market, school, ids = people
    row = query_history(storage, venue_ids=[market], limit=1).rows[0]
    assert row["name"] == "=cmd|' /C calc'!A0 <script>alert(1)</script>"
    assert row["id_number"] == "079190000222" and row["birth"] == "1983-03-21"
    assert row["venue"] == "Chợ Bến Thành" and row["person_key"] == "cccd:079190000222"


def test_visits_pair_entries_with_exits_and_a_visit_across_pages_is_listed_once(tmp_path):
    storage = new_storage(tmp_path / "s.sqlite3")
    scanner = Scanner(storage)
    gate = scanner.station("gate-1", storage.add_venue("Nhà máy"))
    scanner.scan(gate, T0, "in", id_number="001083000001", name="A")
    scanner.scan(gate, T0 + 10 * MIN, "in", id_number="001083000002", name="B")  # never scanned out
    scanner.scan(gate, T0 + 8 * H, "out", id_number="001083000001", name="A")
    scanner.scan(gate, T0 + 9 * H, "out", id_number="001083000003", name="C")  # never scanned in
    rows = query_history(storage, venue_ids=None, order="asc").rows
    visits = visits_for_rows(storage, rows, default_stay_s=3600)
    assert [(v["name"], v["minutes"], v["start_scanned"], v["end_scanned"]) for v in visits] == [
        ("A", 480, True, True), ("B", 60, True, False), ("C", 60, False, True)]
    # Page by page (two rows each), every visit still appears exactly once.
    names = []
    cursor = None
    while True:
        page = query_history(storage, venue_ids=None, order="asc", limit=2, cursor=cursor)
        names += [v["name"] for v in visits_for_rows(storage, page.rows)]
        if not (cursor := page.next_cursor):
            break
    assert names == ["A", "B", "C"]


# -- the web: who sees what ------------------------------------------------------------------

OWNER, CONTROLLER, MANAGER, OFFICER, OPERATOR, STRANGER = (
    "0912000001", "0912000002", "0912000003", "0912000004", "0912000005", "0912000006")
HANOI = {"province": "01", "district": "", "ward": "00004", "name": "HN-Cửa hàng Hoàn Kiếm",
         "address": "Số 2 Hàng Bài"}


@pytest.fixture
def site(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    hcm = owner.create_venue()  # Ho Chi Minh City (79)
    hanoi = owner.create_venue(**HANOI)
    for phone, role in ((CONTROLLER, "controller"), (MANAGER, "manager")):
        account = site.services.accounts.account_for_phone(phone)
        site.services.venues.add_member(hcm, account, role)
        site.services.venues.add_member(hanoi, account, role)
    site.services.officers.grant(site.services.accounts, OFFICER, "79")
    site.services.accounts.set_operator(OPERATOR)
    scanner = Scanner(site.storage)
    gate_hcm, gate_hn = scanner.station("gate-hcm", hcm), scanner.station("gate-hn", hanoi)
    base = int(site.clock() * 1000) - 2 * H
    rows = {
        "lam": scanner.scan(gate_hcm, base, kind="cccd", id_number="024083123451", name="Nguyễn Văn Lâm",
                            birth="1983-03-21"),
        "hostile": scanner.scan(gate_hcm, base + MIN, kind="cccd", id_number="079190000222",
                                name="<img src=x onerror=alert(1)>", birth="1990-01-02"),
        "hanoi": scanner.scan(gate_hn, base + 2 * MIN, kind="bhyt", id_number="DN4797915123456",
                              name="Đặng Thị Đào", birth="1975"),
    }
    return site, hcm, hanoi, rows


def _unmasked_reads(site) -> list[dict]:
    return [json.loads(r[0]) for r in site.storage.sql.rows(
        "SELECT data FROM audit_log WHERE action = 'qrgate.checkins.unmasked.read' ORDER BY id")]


def _cells(response) -> dict[int, tuple]:
    assert response.status_code == 200, response.text
    return {r["id"]: (r["name"], r["id_number"], r["birth"], r["full"]) for r in response.json()["rows"]}


@pytest.mark.parametrize("role", ROLES)
def test_every_venue_role_that_may_view_check_ins_sees_them_masked_cell_by_cell(site, role):
    site, hcm, hanoi, rows = site
    phone = {"owner": OWNER, "controller": CONTROLLER, "manager": MANAGER}[role]
    visitor = site.visitor().login(phone)
    response = visitor.http.get("/api/history")
    if not allowed(role, "checkins.view"):
        assert response.json()["rows"] == []
        return
    assert _cells(response) == {
        rows["lam"]: ("Nguyễn V** L**", "*********451", "1983", False),
        rows["hostile"]: ("<img s**** o****************", "*********222", "1990", False),
        rows["hanoi"]: ("Đặng T** Đ**", "************456", "1975", False),
    }
    assert _unmasked_reads(site) == []


def test_a_health_officer_reads_their_area_in_full_and_each_page_is_audited(site):
    site, hcm, hanoi, rows = site
    officer = site.visitor().login(OFFICER)
    cells = _cells(officer.http.get("/api/history", params={"q": "", "order": "asc"}))
    assert cells == {
        rows["lam"]: ("Nguyễn Văn Lâm", "024083123451", "1983-03-21", True),
        rows["hostile"]: ("<img src=x onerror=alert(1)>", "079190000222", "1990-01-02", True),
    }  # the Hanoi venue is outside the area: not listed at all
    reads = _unmasked_reads(site)
    assert len(reads) == 1 and reads[0]["rows"] == 2 and reads[0]["venues"] == [hcm]
    assert reads[0]["filter"]["order"] == "asc"
    page = officer.http.get("/history")
    assert page.status_code == 200 and "Nguyễn Văn Lâm" in page.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text and "<img src=x" not in page.text
    assert len(_unmasked_reads(site)) == 2


def test_an_officer_who_is_also_a_member_elsewhere_sees_that_venue_masked(site):
    site, hcm, hanoi, rows = site
    account = site.services.accounts.account_for_phone(OFFICER)
    site.services.venues.add_member(hanoi, account, "controller")
    cells = _cells(site.visitor().login(OFFICER).http.get("/api/history"))
    assert cells[rows["hanoi"]] == ("Đặng T** Đ**", "************456", "1975", False)
    assert cells[rows["lam"]][3] is True
    assert _unmasked_reads(site)[0]["rows"] == 2


def test_operators_see_every_venue_masked_and_nothing_is_audited(site):
    site, hcm, hanoi, rows = site
    cells = _cells(site.visitor().login(OPERATOR).http.get("/api/history"))
    assert set(cells) == set(rows.values())
    assert all(not full for *_, full in cells.values())
    assert cells[rows["lam"]][:3] == ("Nguyễn V** L**", "*********451", "1983")
    assert _unmasked_reads(site) == []


def test_venues_and_areas_outside_what_a_visitor_sees_do_not_exist(site):
    site, hcm, hanoi, rows = site
    officer = site.visitor().login(OFFICER)
    stranger = site.visitor().login(STRANGER)
    for path in (f"/venues/{hanoi}/checkins", f"/history?venue={hanoi}", f"/api/history?venue={hanoi}",
                 "/history?area=01", "/api/history?area=01", f"/venues/{hanoi + 1000}/checkins",
                 f"/trace?checkin={rows['hanoi']}", f"/trace?checkin={rows['hanoi'] + 1000}"):
        assert officer.http.get(path).status_code == 404, path
    for path in (f"/venues/{hcm}/checkins", f"/api/history?venue={hcm}", "/area", "/trace", "/api/area"):
        assert stranger.http.get(path).status_code == 404, path
    assert stranger.http.get("/api/history").json()["rows"] == []
    assert "id=\"no-venues\"" in stranger.http.get("/history").text
    assert site.visitor().http.get("/api/history").status_code == 401
    assert site.visitor().http.get("/history").status_code == 303  # to the login page
    assert _unmasked_reads(site) == []


def test_the_venue_page_filters_by_date_and_search_and_pages_through_cursors(site):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    first = owner.http.get("/api/history", params={"limit": 1})
    assert [r["id"] for r in first.json()["rows"]] == [rows["hanoi"]] and first.json()["prev_cursor"] is None
    second = owner.http.get("/api/history", params={"limit": 1, "after": first.json()["next_cursor"]}).json()
    assert [r["id"] for r in second["rows"]] == [rows["hostile"]]
    back = owner.http.get("/api/history", params={"limit": 1, "before": second["prev_cursor"]}).json()
    assert [r["id"] for r in back["rows"]] == [rows["hanoi"]]
    page = owner.http.get(f"/venues/{hcm}/checkins", params={"q": "nguyen"})
    assert page.status_code == 200 and "Nguyễn V** L**" in page.text and "Đặng" not in page.text
    assert 'id="f-venue"' not in page.text  # a venue's own page has no venue filter
    everything = owner.http.get("/history").text
    choices = everything[everything.index('<details class="venue-filter" id="f-venues"'):]
    choices = choices[:choices.index("</details>")]
    assert f'value="{hanoi}" id="f-venue-{hanoi}"> {HANOI["name"]}</label>' in choices
    assert f'id="f-venue-{hcm}"' in choices and "Tất cả địa điểm" in choices
    day = owner.http.get("/api/history", params={"from": "2026-09-20", "to": "2026-09-20"}).json()
    assert day["rows"] == []
    visits = owner.http.get("/api/history", params={"view": "visits", "venue": hcm}).json()["rows"]
    assert [(v["name"], v["minutes"], v["end_scanned"]) for v in visits] == [
        ("<img s**** o****************", 60, False), ("Nguyễn V** L**", 60, False)]


@pytest.mark.parametrize("query", [
    {"q": "9" * 4096}, {"after": "not-a-cursor"}, {"before": "A" * 65}, {"venue": "abc"}, {"venue": str(10**30)},
    {"from": "2026-02-30"}, {"from": "31/09/2026"}, {"venue": ["1", "x"]}, {"from": "2026-09-21", "to": "2026-09-20"}, {"to": "=cmd|' /C calc'!A0"}, {"order": "sideways"},
    {"limit": "100000"}, {"limit": "0"}, {"view": "<script>"}, {"area": "x" * 300},
    {"after": cursor_at({"wall_ms": T0, "id": 2}), "before": cursor_at({"wall_ms": T0, "id": 1})},
])
def test_hostile_filters_get_a_clear_4xx_never_a_500(site, query):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    api = owner.http.get("/api/history", params=query)
    assert api.status_code == 422, api.text
    assert "detail" in api.json()
    page = owner.http.get("/history", params=query)
    assert page.status_code == 422
    if page.headers["content-type"].startswith("text/html"):
        assert 'id="filter-error"' in page.text


def test_control_characters_in_a_search_are_ignored_not_an_error(site):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    for text in ("\x00\x1bNguyễn", "Nguy\u200bễn\u202e", "\tnguyen\r\n"):
        response = owner.http.get("/api/history", params={"q": text})
        assert response.status_code == 200
        assert [r["id"] for r in response.json()["rows"]] == [rows["lam"]], text


def test_the_api_is_documented_with_its_limits(tmp_path):
    schema = Site.create(tmp_path).app.openapi()
    params = {p["name"]: p["schema"] for p in schema["paths"]["/api/history"]["get"]["parameters"]}
    assert params["q"]["maxLength"] == 100 and params["limit"]["maximum"] == 200
    assert {"type": "string", "maxLength": 64} in params["after"]["anyOf"]
    assert "/api/trace" in schema["paths"] and "/api/area" in schema["paths"]


def test_an_officer_of_a_ward_sees_only_that_ward_in_full(site):
    site, hcm, hanoi, rows = site
    site.services.officers.grant(site.services.accounts, STRANGER, "00004")  # a Hanoi ward (Ba Đình)
    ward_officer = site.visitor().login(STRANGER)
    assert _cells(ward_officer.http.get("/api/history")) == {
        rows["hanoi"]: ("Đặng Thị Đào", "DN4797915123456", "1975", True)}
    areas = ward_officer.http.get("/api/area").json()["areas"]
    assert [{k: a[k] for k in ("code", "name", "level", "venues")} for a in areas] == [
        {"code": "00004", "name": site.services.areas.wards["00004"].name, "level": "ward", "venues": 1}]
    assert ward_officer.http.get("/api/history", params={"area": "79"}).status_code == 404
    assert ward_officer.http.get(f"/venues/{hcm}/checkins").status_code == 404


def test_templates_read_a_rows_keys_escaped_and_dict_methods_stay_methods():
    # Rows reach the templates as dicts, read key first (server.web.pages.TemplateEnvironment);
    # a key named like a dict method must not hide the method.
    from server.web.pages import TemplateEnvironment

    env = TemplateEnvironment(autoescape=True)
    page = env.from_string("{{ row.name }}|{{ row.missing }}|{{ errors.values() | join(',') }}|{{ n.real }}")
    assert page.render(row={"name": "<b>Lê</b>"}, errors={"values": "x", "a": "y"}, n=3) == \
        "&lt;b&gt;Lê&lt;/b&gt;||x,y|3"


# -- the table's rows, written without the template engine (server.checkins.history_table) ------------

HOSTILE_TEXT = "\"'><img src=x onerror=alert(1)></td></tr><script>x</script> & =cmd|' /C calc'!A0"


class _Table(HTMLParser):
    """Rows of cell texts, and every tag with its attributes, as a browser would read them."""

    def __init__(self):
        super().__init__(convert_charrefs=True)
        self.rows: list[list[str]] = []
        self.tags: list[tuple[str, dict]] = []
        self.in_cell = False

    def handle_starttag(self, tag, attrs):
        self.tags.append((tag, dict(attrs)))
        if tag == "tr":
            self.rows.append([])
        elif tag == "td":
            self.rows[-1].append("")
            self.in_cell = True

    def handle_endtag(self, tag):
        if tag == "td":
            self.in_cell = False

    def handle_data(self, data):
        if self.in_cell:
            self.rows[-1][-1] += data


def _parsed(markup) -> _Table:
    table = _Table()
    table.feed(str(markup))
    table.close()
    return table


def _hostile_item(full: bool, **extra) -> dict:
    return {"id": 7, "venue_id": 1, "venue": HOSTILE_TEXT, "station_id": HOSTILE_TEXT, "seq": 12,
            "direction": HOSTILE_TEXT, "kind": HOSTILE_TEXT, "name": HOSTILE_TEXT, "id_number": HOSTILE_TEXT,
            "birth": HOSTILE_TEXT, "full": full, "time": HOSTILE_TEXT, "time_text": HOSTILE_TEXT,
            "clock_synced": False, "time_corrected": False, "self_declared": False, **extra}


ALLOWED_TAGS = {"tr": {"data-id", "class"}, "td": {"class", "colspan", "id"}, "time": {"datetime"},
                "span": {"class"}, "a": {"class", "href"}}


def _only_our_markup(table: _Table) -> None:
    for tag, attrs in table.tags:
        assert tag in ALLOWED_TAGS and set(attrs) <= ALLOWED_TAGS[tag], (tag, attrs)


@pytest.mark.parametrize("officer", [False, True])
def test_scan_rows_keep_hostile_text_as_text_in_every_cell(officer):
    from server.checkins.history_table import scan_rows

    items = [_hostile_item(True), _hostile_item(False, id=8, clock_synced=True, time_corrected=True),
             _hostile_item(False, id=9, direction="in", self_declared=True)]
    table = _parsed(scan_rows(items, "en", officer))
    _only_our_markup(table)
    person = [HOSTILE_TEXT] * 4  # name, id, birth, kind
    assert table.rows == [
        [HOSTILE_TEXT, HOSTILE_TEXT, "Out", *person, HOSTILE_TEXT, *(["Trace"] if officer else [])],
        [f"{HOSTILE_TEXT} time corrected", HOSTILE_TEXT, "Out", *person, HOSTILE_TEXT, *([""] if officer else [])],
        [HOSTILE_TEXT, HOSTILE_TEXT, "In", *person, "self-declared", *([""] if officer else [])],
    ]
    tags = [t for t in table.tags if t[0] in ("tr", "td", "time", "a")]
    assert ("tr", {"data-id": "7", "class": "full"}) in tags and ("tr", {"data-id": "8"}) in tags
    assert ("td", {"class": "unsynced"}) in tags and ("td", {"class": f"dir-{HOSTILE_TEXT}"}) in tags
    assert ("time", {"datetime": HOSTILE_TEXT}) in tags
    assert (("a", {"class": "trace-link", "href": "/trace?checkin=7"}) in tags) is officer
    assert _parsed(scan_rows([], "vi", officer)).rows == [["Không có lượt quét nào khớp."]]


def test_visit_rows_keep_hostile_text_as_text_and_tag_estimated_ends():
    from server.checkins.history_table import visit_rows

    item = _hostile_item(True, start=HOSTILE_TEXT, start_text="21/09/2026 08:00:00", end=HOSTILE_TEXT,
                         end_text=HOSTILE_TEXT, minutes=60, start_scanned=True, end_scanned=False)
    table = _parsed(visit_rows([item], "en", True))
    _only_our_markup(table)
    assert table.rows == [["21/09/2026 08:00:00", f"{HOSTILE_TEXT} estimated", "60", *[HOSTILE_TEXT] * 4, "Trace"]]
    assert _parsed(visit_rows([], "en", False)).rows == [["No scans match."]]


def test_an_officer_reads_a_hostile_name_in_full_on_the_page_as_text(site):
    site, hcm, hanoi, rows = site
    officer = site.visitor().login(OFFICER)
    for view in ("rows", "visits"):
        page = officer.http.get(f"/venues/{hcm}/checkins", params={"view": view})
        assert page.status_code == 200
        assert "<img src=x" not in page.text and "&lt;img src=x onerror=alert(1)&gt;" in page.text
        body = page.text[page.text.index("<tbody>") + len("<tbody>"):page.text.index("</tbody>")]
        table = _parsed(body)
        _only_our_markup(table)
        assert [r[4 if view == "visits" else 3] for r in table.rows] == ["<img src=x onerror=alert(1)>",
                                                                        "Nguyễn Văn Lâm"]


def test_several_venues_at_once_each_checked(site):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    third = owner.create_venue(name="TP-Cửa hàng thứ ba")
    scanner = Scanner(site.storage)
    scanner.scan(scanner.station("gate-3", third), int(site.clock() * 1000) - H, kind="cccd",
                 id_number="001090000333", name="Trần Văn Ba", birth="1990")
    both = owner.http.get("/api/history", params=[("venue", hcm), ("venue", hanoi)]).json()["rows"]
    assert {r["id"] for r in both} == {rows["lam"], rows["hostile"], rows["hanoi"]}
    assert {r["venue_id"] for r in both} == {hcm, hanoi}
    page = owner.http.get("/history", params=[("venue", hanoi), ("venue", third), ("limit", 1)])
    assert page.status_code == 200 and "2 địa điểm đã chọn" in page.text
    assert f'id="f-venue-{hanoi}" checked' in page.text and f'id="f-venue-{third}" checked' in page.text
    assert f'id="f-venue-{hcm}" checked' not in page.text
    pager = page.text.split('id="pager"')[1]
    assert f"venue={hanoi}&amp;venue={third}" in pager  # the next page keeps both venues
    # Every venue named is checked: one the visitor may not see is not found, whatever the others.
    stranger = site.visitor("203.0.113.50").login(STRANGER)
    own = stranger.create_venue(name="Quán khác")
    assert stranger.http.get("/api/history", params=[("venue", own), ("venue", hcm)]).status_code == 404
    assert stranger.http.get("/history", params=[("venue", own), ("venue", hcm)]).status_code == 404


def test_a_wrong_filter_is_explained_in_vietnamese_on_the_page(site):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    cases = {("2026-09-21", "2026-09-20"): "Ngày kết thúc phải từ ngày bắt đầu trở đi.",
             ("31/09/2026", ""): "Ngày bắt đầu không hợp lệ"}
    for (first, last), words in cases.items():
        page = owner.http.get("/history", params={"from": first, "to": last})
        assert page.status_code == 422 and words in page.text.split('id="filter-error"')[1]
        assert "the last day" not in page.text and "must be a date" not in page.text
    assert owner.http.get("/api/history", params={"from": "2026-09-21", "to": "2026-09-20"}).json()["detail"] == \
        "the last day is before the first"
    typed = owner.http.get("/api/history", params={"from": "21/09/2026", "to": "21/09/2026"})
    assert typed.status_code == 200  # a day typed as people write it is understood


def test_the_history_table_says_card_kinds_and_stations_in_words(site):
    site, hcm, hanoi, rows = site
    owner = site.visitor().login(OWNER)
    page = owner.http.get("/history").text
    table = page.split('id="history"')[1].split("</table>")[0]
    assert "<td>Thẻ BHYT</td>" in table and "<td>CCCD</td>" in table and "<td>gate-hn</td>" in table
    assert ">bhyt<" not in table and "gate-hn#" not in table
