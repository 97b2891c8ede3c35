"""Masking cannot be undone by asking: accounts of every role that see a person masked
try, over HTTP, to read back a hidden digit of the id number or a hidden letter of the
given name through search, filters, order, paging and counts, and must learn nothing.
A whole id number may be searched (it says whether that person was there), audited and
limited per account; a health officer keeps full search where they read in full, and
opening the trace form on a check-in is a full read, audited and limited too."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate import protocol
from server.checkins import query as history_limits
from test_web_support import Site

pytestmark = pytest.mark.timeout(180)

MIN = 60_000
H = 3_600_000
OWNER, MANAGER, CONTROLLER, OPERATOR, OFFICER, OTHER = (
    "0912100001", "0912100002", "0912100003", "0912100004", "0912100005", "0912100006")
HANOI = {"province": "01", "ward": "00004", "name": "HN-Cửa hàng Hoàn Kiếm",
         "address": "Số 2 Hàng Bài"}
# The person whose hidden parts are hunted, and a decoy whose mask is the same in every
# cell (Nguyễn V** L**, *********451, 1983): whatever tells them apart leaks.
VICTIM = {"id": "024083123451", "name": "Nguyễn Văn Lâm", "birth": "1983-03-21"}
DECOY = {"id": "001090888451", "name": "Nguyễn Vân Lực", "birth": "1983-07-07"}
IN_AREA = {"id": "079190000777", "name": "Trần Thị Hoa", "birth": "1990-01-02"}

# Guesses at one hidden character each: the digit before the visible "451" (then the
# one before that, knowing "3451"), and the second letter of each given-name word.
DIGIT_GUESSES = [f"{d}451" for d in range(10)] + [f"{d}3451" for d in range(10)] + [f"8312{d}451" for d in "36"]
LETTER_GUESSES = [f"nguyen v{c}" for c in "aâeiouy"] + [f"nguyen v l{c}" for c in "aâouư"] + \
    [f"{c} nguyen" for c in ("van", "van lam", "van luc")]
# Filters, orders, page sizes and views each guess is tried with.
VARIANTS = [{}, {"order": "asc", "limit": "1"}, {"view": "visits"},
            {"venue": "{hanoi}", "from": "{day}", "to": "{day}"}]


class Gate:
    """A station of a venue whose signed check-ins go straight into the server's storage."""

    def __init__(self, storage, station_id: str, venue_id: int):
        self.storage = storage
        self.key = Ed25519PrivateKey.generate()
        self.station_id = station_id
        storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()), venue_id)
        self.seq = 0

    def scan(self, person: dict, at_ms: int, direction: str = "in") -> int:
        self.seq += 1
        record = {"v": 1, "type": "checkin", "st": self.station_id, "seq": self.seq, "ts": at_ms, "mono": 0,
                  "boot": "b", "sync": True, "dir": direction, "kind": "cccd",
                  "person": {"id": person["id"], "name": person["name"], "birth": person["birth"], "sex": "M"}}
        self.storage.store_records(self.storage.station(self.station_id), [protocol.sign_record(record, self.key)])
        return self.storage.sql.value("SELECT max(id) FROM checkins")


@pytest.fixture
def world(tmp_path):
    """Venues in Ho Chi Minh City (the officer's area) and Hanoi; the victim and the decoy
    at the Hanoi shop, where every account below, the officer included, sees them masked."""
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    hcm = owner.create_venue()
    hanoi = owner.create_venue(**HANOI)
    accounts, venues = site.services.accounts, site.services.venues
    for phone, role in ((MANAGER, "manager"), (CONTROLLER, "controller")):
        venues.add_member(hcm, accounts.account_for_phone(phone), role)
        venues.add_member(hanoi, accounts.account_for_phone(phone), role)
    site.services.officers.grant(accounts, OFFICER, "79")
    venues.add_member(hanoi, accounts.account_for_phone(OFFICER), "controller")
    accounts.set_operator(OPERATOR)
    shop, office = Gate(site.storage, "gate-hn", hanoi), Gate(site.storage, "gate-hcm", hcm)
    base = int(site.clock() * 1000) - 5 * H
    rows = {"victim_in": shop.scan(VICTIM, base), "decoy_in": shop.scan(DECOY, base + MIN),
            "victim_out": shop.scan(VICTIM, base + 2 * H, "out"), "decoy_out": shop.scan(DECOY, base + 3 * H, "out"),
            "in_area": office.scan(IN_AREA, base + 4 * MIN)}
    day = dt.datetime.fromtimestamp(base / 1000, site.services.tz).date().isoformat()
    return site, hcm, hanoi, rows, day


def _audit(site, action: str) -> list[dict]:
    return [json.loads(r[0]) for r in site.storage.sql.rows(
        "SELECT data FROM audit_log WHERE action = ? ORDER BY id", [action])]


def _table_body(page) -> str:
    return page.text[page.text.index("<tbody>"):page.text.index("</tbody>")]


def _answers(visitor, guesses: list[str], variant: dict, hanoi: int, day: str) -> set:
    """What each guess gets back, as the attacker sees it: the API's whole answer (rows,
    cursors, partial_search) and the table of the page, with the status codes."""
    params = {k: v.format(hanoi=hanoi, day=day) for k, v in variant.items()}
    seen = set()
    for guess in guesses:
        api = visitor.http.get("/api/history", params={**params, "q": guess})
        page = visitor.http.get("/history", params={**params, "q": guess})
        assert api.status_code == page.status_code == 200, (guess, api.text)
        seen.add((api.content, _table_body(page)))
    return seen


@pytest.mark.parametrize("phone", [OWNER, MANAGER, CONTROLLER, OPERATOR, OFFICER],
                         ids=["owner", "manager", "controller", "operator", "officer-member-elsewhere"])
def test_no_guess_at_a_hidden_digit_or_letter_gets_an_answer_that_differs_from_another(world, phone):
    site, hcm, hanoi, rows, day = world
    attacker = site.visitor().login(phone)
    # The rows are there and masked alike for this account.
    listed = {r["id"]: r for r in attacker.http.get("/api/history", params={"venue": hanoi}).json()["rows"]}
    assert {(r["name"], r["id_number"], r["birth"], r["full"]) for r in listed.values()} == {
        ("Nguyễn V** L**", "*********451", "1983", False)}
    assert set(listed) == {rows["victim_in"], rows["decoy_in"], rows["victim_out"], rows["decoy_out"]}
    for variant in VARIANTS:
        assert len(_answers(attacker, DIGIT_GUESSES, variant, hanoi, day)) == 1, variant
        assert len(_answers(attacker, LETTER_GUESSES, variant, hanoi, day)) == 1, variant
    # Sorting, paging and the visits view order rows by time only: the victim and the
    # decoy come out in the order they were scanned, whatever their hidden parts.
    for order in ("asc", "desc"):
        ids, cursor = [], None
        while True:
            page = attacker.http.get("/api/history", params={"venue": hanoi, "order": order, "limit": 1,
                                                             **({"after": cursor} if cursor else {})}).json()
            ids += [r["id"] for r in page["rows"]]
            if not (cursor := page["next_cursor"]):
                break
        scanned = [rows["victim_in"], rows["decoy_in"], rows["victim_out"], rows["decoy_out"]]
        assert ids == (scanned if order == "asc" else scanned[::-1])
    assert _audit(site, "qrgate.checkins.person.searched") == []


@pytest.mark.parametrize("phone", [CONTROLLER, OPERATOR])
def test_a_masked_viewer_searches_on_what_the_mask_shows(world, phone):
    site, hcm, hanoi, rows, day = world
    viewer = site.visitor().login(phone)

    def found(q: str) -> set[int]:
        response = viewer.http.get("/api/history", params={"q": q, "venue": hanoi})
        assert response.status_code == 200, response.text
        return {r["id"] for r in response.json()["rows"]}

    everyone = {rows["victim_in"], rows["decoy_in"], rows["victim_out"], rows["decoy_out"]}
    assert found("451") == found("nguyen") == found("Nguyễn V L") == found("nguyen v** l**") == everyone
    assert found("3451") == found("nguyen van") == found("lam") == found("452") == found("tran") == set()


def test_a_whole_id_number_answers_whether_the_person_was_there_audited_and_limited(world):
    site, hcm, hanoi, rows, day = world
    controller = site.visitor().login(CONTROLLER)
    first = controller.http.get("/api/history", params={"q": VICTIM["id"]})
    assert first.status_code == 200
    assert [(r["id"], r["id_number"], r["name"]) for r in first.json()["rows"]] == [
        (rows["victim_out"], "*********451", "Nguyễn V** L**"), (rows["victim_in"], "*********451", "Nguyễn V** L**")]
    for n in range(1, history_limits.ID_SEARCHES_PER_HOUR):
        guess = f"02408312{n % 10}451"
        assert controller.http.get("/api/history", params={"q": guess}).status_code == 200, n
    refused = controller.http.get("/api/history", params={"q": "024083120451"})
    assert refused.status_code == 429 and "an hour" in refused.json()["detail"]
    page = controller.http.get("/history", params={"q": "0240 8312 2451"})
    assert page.status_code == 429 and 'id="filter-error"' in page.text
    searched = _audit(site, "qrgate.checkins.person.searched")
    assert len(searched) == history_limits.ID_SEARCHES_PER_HOUR
    assert searched[0]["rows"] == 2 and searched[0]["venues"] == [hanoi]
    assert searched[0]["filter"]["search"] == VICTIM["id"] and searched[1]["rows"] == 0
    # Other searches go on; the limit is the account's, and an hour later it is lifted.
    assert controller.http.get("/api/history", params={"q": "nguyen"}).status_code == 200
    assert site.visitor().login(MANAGER).http.get("/api/history", params={"q": VICTIM["id"]}).status_code == 200
    site.clock.advance(3601)
    assert controller.http.get("/api/history", params={"q": VICTIM["id"]}).status_code == 200


def test_an_operator_is_limited_in_id_searches_across_every_venue(world):
    site, hcm, hanoi, rows, day = world
    operator = site.visitor().login(OPERATOR)
    answers = [operator.http.get("/api/history", params={"q": VICTIM["id"]}).status_code
               for _ in range(history_limits.ID_SEARCHES_PER_HOUR + 1)]
    assert answers == [200] * history_limits.ID_SEARCHES_PER_HOUR + [429]
    assert len(_audit(site, "qrgate.checkins.person.searched")) == history_limits.ID_SEARCHES_PER_HOUR


def test_an_officer_keeps_full_search_in_their_area_audited_as_full_reads(world):
    site, hcm, hanoi, rows, day = world
    officer = site.visitor().login(OFFICER)
    for q in ("0777", "90000777", "tran thi hoa", "t h"):
        response = officer.http.get("/api/history", params={"q": q})
        assert [(r["id"], r["name"], r["full"]) for r in response.json()["rows"]] == [
            (rows["in_area"], "Trần Thị Hoa", True)], q
    # A whole id number inside the area only reads what the officer reads in full anyway.
    for _ in range(history_limits.ID_SEARCHES_PER_HOUR + 1):
        assert officer.http.get("/api/history", params={"q": IN_AREA["id"], "area": "79"}).status_code == 200
    assert _audit(site, "qrgate.checkins.person.searched") == []
    reads = _audit(site, "qrgate.checkins.unmasked.read")
    assert len(reads) == 4 + history_limits.ID_SEARCHES_PER_HOUR + 1 and all(r["rows"] == 1 for r in reads)
    # Where the same officer is only a gate controller, the hidden digits stay hidden.
    assert officer.http.get("/api/history", params={"q": "3451"}).json()["rows"] == []


def test_the_trace_form_on_a_check_in_is_an_audited_full_read_and_limited(world):
    site, hcm, hanoi, rows, day = world
    officer = site.visitor().login(OFFICER)
    page = officer.http.get("/trace", params={"checkin": rows["in_area"]})
    assert page.status_code == 200 and IN_AREA["id"] in page.text and IN_AREA["name"] in page.text
    reads = _audit(site, "qrgate.checkins.unmasked.read")
    assert reads == [{"checkin": rows["in_area"], "page": "trace", "rows": 1, "venues": [hcm]}]
    entry = site.services.audit.for_venue(hcm)[0]
    assert entry.action == "qrgate.checkins.unmasked.read" and entry.phone == OFFICER
    # Outside the area: 404 as before, nothing read, nothing counted.
    assert officer.http.get("/trace", params={"checkin": rows["victim_in"]}).status_code == 404
    for _ in range(history_limits.TRACE_LOOKUPS_PER_HOUR - 1):
        assert officer.http.get("/trace", params={"checkin": rows["in_area"]}).status_code == 200
    refused = officer.http.get("/trace", params={"checkin": rows["in_area"]})
    assert refused.status_code == 429 and 'id="trace-error"' in refused.text and IN_AREA["id"] not in refused.text
    assert len(_audit(site, "qrgate.checkins.unmasked.read")) == history_limits.TRACE_LOOKUPS_PER_HOUR
    site.clock.advance(3601)
    assert officer.http.get("/trace", params={"checkin": rows["in_area"]}).status_code == 200
