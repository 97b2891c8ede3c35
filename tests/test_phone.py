"""A phone as a station, through its HTTP calls (the browser's part: test_phone_browser.py).

A gate controller enrols a phone with the venue's one-time code; the phone's signed
records go through the bridge's own checks and store; forged and replayed uploads are
refused as over MQTT; retiring the phone or removing the person's role stops it.
"""

from __future__ import annotations

import json
import time

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from qrgate import protocol
from qrgate.sealing import PersonSealer
from server.ingest.stationconfig import StationConfigStore, StationSettings
from server.phone.service import attach
from test_web_support import Site

pytestmark = pytest.mark.timeout(60)
OWNER, CONTROLLER, STRANGER = "0912486419", "0976929792", "0969201470"
PERSON = {"id": "024083123451", "name": "Nguyễn Gia Mạnh", "birth": "1983-03-21", "sex": "M"}


class Phone:
    """What the page does with its keys, done in Python: enrol, sign, seal, upload."""

    def __init__(self, visitor, venue: int):
        self.visitor = visitor
        self.venue = venue
        self.key = Ed25519PrivateKey.generate()
        self.setup: dict = {}
        self.seq = 0
        self.sealer: PersonSealer | None = None

    def enrol(self, code: str, mode: str = "toggle"):
        answer = self.visitor.api("POST", f"/api/phone/venues/{self.venue}/enrol",
                                  {"code": code, "public_key": protocol.public_key_to_text(self.key.public_key()),
                                   "mode": mode})
        if answer.status_code == 201:
            self.setup = answer.json()
            from qrgate.sealing import x25519_public_from_text

            self.sealer = PersonSealer(x25519_public_from_text(self.setup["server_key"]), self.station_id)
        return answer

    @property
    def station_id(self) -> str:
        return self.setup["station_id"]

    def record(self, person=PERSON, direction="in", key=None, seq=None) -> bytes:
        if seq is None:
            self.seq += 1
            seq = self.seq
        now_ms = int(time.time() * 1000)
        record = {"v": 1, "type": "checkin", "st": self.station_id, "seq": seq, "ts": now_ms, "mono": 1000 + seq,
                  "boot": "proc-" + "0" * 32, "sync": True, "dir": direction, "kind": "cccd",
                  "sealed": self.sealer.seal(person)}
        return protocol.canonical_json(protocol.sign_record(record, key or self.key))

    def upload(self, *records: bytes, station_id: str | None = None):
        return self.visitor.http.post(f"/api/phone/devices/{station_id or self.station_id}/records",
                                      content=protocol.encode_batch(records),
                                      headers={"content-type": "application/json"})


@pytest.fixture
def site(tmp_path):
    site = Site.create(tmp_path)
    attach(site.app, sealing_key=X25519PrivateKey.generate(), pass_key=Ed25519PrivateKey.generate())
    return site


@pytest.fixture
def venue(site):
    owner = site.visitor().login(OWNER)
    venue = owner.create_venue(name="Xưởng may Tân Phú")
    services = site.services
    services.venues.add_member(venue, services.accounts.account_for_phone(CONTROLLER), "controller")
    return owner, venue


def enrol_code(owner, venue: int) -> str:
    made = owner.api("POST", f"/api/venues/{venue}/enrol-code", {"minutes": 5})
    assert made.status_code == 201, made.text
    return made.json()["code"]


def test_a_gate_controller_enrols_a_phone_with_the_venue_code_once(site, venue):
    owner, venue_id = venue
    controller = site.visitor("198.51.100.4").login(CONTROLLER)
    page = controller.http.get(f"/phone/venues/{venue_id}")
    assert page.status_code == 200 and "Gắn điện thoại này làm trạm quét" in page.text
    assert "'wasm-unsafe-eval'" in page.headers["content-security-policy"]
    code = enrol_code(owner, venue_id)
    phone = Phone(controller, venue_id)
    answer = phone.enrol(code, mode="entry")
    assert answer.status_code == 201, answer.text
    setup = answer.json()
    assert setup["station_id"] == f"phone-{setup['number']}" and setup["venue"] == "Xưởng may Tân Phú"
    assert setup["config"]["mode"] == "entry" and setup["config"]["st"] == setup["station_id"]
    station = site.storage.station(setup["station_id"])
    assert station.public_key == protocol.public_key_to_text(phone.key.public_key()) and station.venue_id == venue_id
    # The code works once, and for nobody else afterwards either.
    again = Phone(controller, venue_id).enrol(code)
    assert again.status_code == 403 and again.json() == {"detail": "used"}
    history = owner.http.get(f"/api/venues/{venue_id}/history").json()["history"]
    assert any(e["action"] == "qrgate.phone.enrolled" for e in history)


def test_a_code_for_another_venue_or_a_stranger_is_refused_and_the_code_still_works(site, venue):
    owner, venue_id = venue
    other = owner.create_venue(name="Chợ Hàn")
    code = enrol_code(owner, other)
    controller = site.visitor("198.51.100.4").login(CONTROLLER)
    wrong = Phone(controller, venue_id).enrol(code)
    assert wrong.status_code == 403 and wrong.json() == {"detail": "other_venue"}
    stranger = site.visitor("198.51.100.5").login(STRANGER)
    assert Phone(stranger, other).enrol(code).status_code == 404  # not a member: the venue does not exist for them
    assert stranger.http.get(f"/phone/venues/{other}").status_code == 404
    assert Phone(owner, other).enrol(code).status_code == 201
    assert Phone(owner, other).enrol("not a code").json() == {"detail": "unknown"}


def test_records_are_verified_and_stored_once_like_a_stations(site, venue):
    owner, venue_id = venue
    phone = Phone(owner, venue_id)
    assert phone.enrol(enrol_code(owner, venue_id)).status_code == 201
    first, second = phone.record(), phone.record(direction="out")
    answer = phone.upload(first, second)
    assert answer.status_code == 200, answer.text
    assert json.loads(answer.content) == {"refused": {}, "stored": [1, 2]}
    assert abs(int(answer.headers["x-qrgate-time-ms"]) - site.clock() * 1000) < 1000
    assert site.storage.count_checkins(phone.station_id) == 2
    rows = site.storage.sql.rows("SELECT record FROM checkins WHERE station_id = ? ORDER BY seq", [phone.station_id])
    for (text,) in rows:
        protocol.verify_record(json.loads(text), phone.key.public_key())  # kept as signed, signature valid
    # A replayed upload stores nothing new: the same bytes are acked as stored, as over MQTT.
    again = phone.upload(first)
    assert json.loads(again.content) == {"refused": {}, "stored": [1]}
    assert site.storage.count_checkins(phone.station_id) == 2


def test_forged_and_conflicting_uploads_are_refused_like_forged_mqtt_records(site, venue):
    owner, venue_id = venue
    phone = Phone(owner, venue_id)
    assert phone.enrol(enrol_code(owner, venue_id)).status_code == 201
    forged = phone.record(key=Ed25519PrivateKey.generate())
    answer = phone.upload(forged)
    # Not acked at all: an unsigned record cannot make the phone set its own record 1 aside.
    assert answer.status_code == 200 and json.loads(answer.content) == {"refused": {}, "stored": []}
    assert site.storage.count_checkins(phone.station_id) == 0
    assert site.storage.refusal_counts().get("bad_signature") == 1
    genuine = phone.record(seq=1)
    assert json.loads(phone.upload(genuine).content)["stored"] == [1]
    # The same number signed again over other content: a conflict, refused and acked as such.
    other = phone.record(seq=1, direction="out")
    assert json.loads(phone.upload(other).content) == {"refused": {"1": "seq_conflict"}, "stored": []}
    # A record of this phone sent as another phone's is misaddressed, never stored.
    second = Phone(owner, venue_id)
    assert second.enrol(enrol_code(owner, venue_id)).status_code == 201
    assert json.loads(phone.upload(phone.record(), station_id=second.station_id).content)["stored"] == []
    # A person in the clear is what a station may not send.
    clear = protocol.sign_record({"v": 1, "type": "checkin", "st": phone.station_id, "seq": 9,
                                  "ts": int(time.time() * 1000), "mono": 1, "boot": "b", "sync": True, "dir": "in",
                                  "kind": "cccd", "person": PERSON}, phone.key)
    assert json.loads(phone.upload(protocol.canonical_json(clear)).content) == {"refused": {"9": "malformed"},
                                                                               "stored": []}
    for message in (b"x", b'{"records":5}', b'{"records":[], "more":1}'):
        whole = phone.visitor.http.post(f"/api/phone/devices/{phone.station_id}/records", content=message,
                                        headers={"content-type": "application/json"})
        assert whole.status_code == 400 and whole.json() == {"detail": "malformed"}
    assert site.storage.count_checkins(phone.station_id) == 1


def test_retiring_the_phone_or_removing_the_persons_role_stops_its_uploads(site, venue):
    owner, venue_id = venue
    controller = site.visitor("198.51.100.4").login(CONTROLLER)
    phone = Phone(controller, venue_id)
    assert phone.enrol(enrol_code(owner, venue_id)).status_code == 201
    assert phone.upload(phone.record()).status_code == 200
    services = site.services
    services.venues.revoke(venue_id, services.accounts.account_for_phone(CONTROLLER).id)
    refused = phone.upload(phone.record())
    assert refused.status_code == 403 and refused.json() == {"detail": "no_role"}
    services.venues.add_member(venue_id, services.accounts.account_for_phone(CONTROLLER), "controller")
    assert json.loads(phone.upload(phone.record(seq=2)).content)["stored"] == [2]
    services.fleet.retire(phone.station_id)
    retired = phone.upload(phone.record())
    assert retired.status_code == 403 and retired.json() == {"detail": "retired"}
    assert site.storage.refusal_counts().get("retired") == 1
    assert site.storage.count_checkins(phone.station_id) == 2
    assert controller.http.get(f"/api/phone/devices/{phone.station_id}/config").status_code == 403
    unknown = phone.upload(phone.record(), station_id="gate-1")
    assert unknown.status_code == 404


def test_config_gives_the_settings_and_block_list_the_server_pushes(site, venue):
    owner, venue_id = venue
    phone = Phone(owner, venue_id)
    assert phone.enrol(enrol_code(owner, venue_id)).status_code == 201
    store = StationConfigStore(site.storage)
    store.set_settings(phone.station_id, StationSettings(mode="exit", repeat_window_s=120.0, anti_passback=True))
    store.block("cccd:024083123451", "F1")
    config = owner.http.get(f"/api/phone/devices/{phone.station_id}/config?backlog=3").json()
    assert config["config"]["mode"] == "exit" and config["config"]["repeat_window_s"] == 120.0
    assert config["config"]["anti_passback"] is True and len(config["config"]["blocked"]) == 1
    assert config["server_ms"] == int(site.clock() * 1000)
    # Asked every minute by the open page: the fleet page sees the phone online, with its backlog.
    row = next(r for r in site.services.fleet.rows() if r["station_id"] == phone.station_id)
    assert row["online"] is True and row["backlog"] == 3 and row["fw"].endswith("(web)")
    stranger = site.visitor("198.51.100.5").login(STRANGER)
    assert stranger.http.get(f"/api/phone/devices/{phone.station_id}/config").status_code == 404
    assert site.visitor("198.51.100.6").http.get(f"/api/phone/devices/{phone.station_id}/config").status_code == 401


def test_history_can_name_the_phone_and_the_account_that_enrolled_it(site, venue):
    owner, venue_id = venue
    phone = Phone(owner, venue_id)
    assert phone.enrol(enrol_code(owner, venue_id)).status_code == 201
    labels = site.app.state.phone.devices.labels([phone.station_id, "gate-1"])
    assert labels == {phone.station_id: {"number": phone.setup["number"], "account_phone": OWNER}}
    assert phone.upload(phone.record()).status_code == 200
    # The scan history says which phone scanned, and whose (the number's middle hidden).
    page = owner.http.get(f"/history?venue={venue_id}").text
    assert f"Điện thoại số {phone.setup['number']} ({OWNER[:4]}•••{OWNER[-3:]})" in page
    assert phone.station_id not in page


def test_the_service_worker_and_manifest_make_an_installable_offline_app(site, venue):
    owner, venue_id = venue
    worker = owner.http.get("/phone/sw.js")
    assert worker.status_code == 200 and worker.headers["service-worker-allowed"] == "/phone/"
    assert "/static/phone/vendor/zxing-wasm/reader/zxing_reader.wasm" in worker.text
    manifest = site.visitor("198.51.100.9").http.get(f"/phone/venues/{venue_id}/manifest.webmanifest").json()
    assert manifest["start_url"] == f"/phone/venues/{venue_id}" and manifest["display"] == "standalone"
    assert {icon["sizes"] for icon in manifest["icons"]} == {"192x192", "512x512"}


def test_a_code_made_before_its_venue_closed_enrols_no_phone(site, venue):
    owner, venue_id = venue
    code = enrol_code(owner, venue_id)
    site.services.venues.close(venue_id)
    refused = Phone(owner, venue_id).enrol(code)
    assert refused.status_code == 403 and refused.json() == {"detail": "closed"}
    site.services.venues.reopen(venue_id)
    assert Phone(owner, venue_id).enrol(code).status_code == 201  # refused, the code was not spent
