"""Stations in the web UI: a venue owner makes a setup code, a station enrols with it
through the same server; an operator sees the fleet and retires a station."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import new_storage
from qrgate import protocol
from server.ingest.enrol import Enrolment, EnrolSettings
from server.accounts.sms import DevSmsSender
from server.web.app import create_app
from test_web_support import FakeClock, Site

pytestmark = pytest.mark.timeout(60)


class RecordingBroker:
    """Stands in for the broker's password file in these web tests (the real one is
    exercised end to end in tests/test_enrolment.py)."""

    def __init__(self):
        self.users, self.removed, self.reloads = [], [], 0

    def add_user(self, name):
        self.users.append(name)
        return "pw-" + name

    def remove_user(self, name):
        self.removed.append(name)

    def reload(self):
        self.reloads += 1
        return True


@pytest.fixture
def site(tmp_path):
    broker = RecordingBroker()
    storage, sender, clock = new_storage(tmp_path / "server.sqlite3"), DevSmsSender(), FakeClock()
    enrolment = Enrolment(storage, broker, EnrolSettings("mqtt.example.vn", 8883, "CA", "SEAL", ("PASS",)))
    app = create_app(storage, sender=sender, clock=clock, enrolment=enrolment, broker_files=broker)
    return Site(storage, sender, clock, app), broker


def test_owner_makes_a_setup_code_that_binds_a_station_once(site):
    site, broker = site
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Xưởng may Tân Phú")
    assert 'id="enrol-code"' in owner.http.get(f"/venues/{venue}").text  # the button on the venue page
    page = owner.form(f"/venues/{venue}/enrol-code", {})
    assert page.status_code == 200 and "<svg" in page.text and "Xưởng may Tân Phú" in page.text
    made = owner.api("POST", f"/api/venues/{venue}/enrol-code", {"minutes": 5})
    assert made.status_code == 201
    code = json.loads(made.json()["code"])
    assert code["qrgate_enrol"] == 1 and code["url"] == "http://testserver"
    station = site.visitor("192.0.2.10")
    key = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
    answer = station.http.post("/api/enrol", json={"v": 1, "token": code["token"], "public_key": key, "name": "gate-tp"})
    assert answer.status_code == 200, answer.text
    binding = answer.json()
    assert binding["station_id"] == "gate-tp" and binding["venue"] == "Xưởng may Tân Phú"
    assert binding["mqtt"]["host"] == "mqtt.example.vn" and broker.users == ["gate-tp"] and broker.reloads == 1
    again = station.http.post("/api/enrol", json={"v": 1, "token": code["token"], "public_key": key})
    assert again.status_code == 403
    history = owner.http.get(f"/api/venues/{venue}/history").json()
    assert any(e["action"] == "qrgate.station.enrol_code" for e in history["history"])


def test_only_operators_see_the_fleet_and_can_retire(site):
    site, broker = site
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Chợ Hàn")
    site.storage.add_station("gate-han", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    assert owner.http.get("/fleet").status_code == 404
    assert owner.http.get("/api/fleet").status_code == 404
    site.services.accounts.set_operator("0900000001")
    operator = site.visitor("198.51.100.1").login("0900000001")
    fleet = operator.http.get("/api/fleet").json()["stations"]
    assert [(s["station_id"], s["state"], s["venue"]) for s in fleet] == [("gate-han", "offline", "Chợ Hàn")]
    page = operator.http.get("/fleet")
    assert page.status_code == 200 and "gate-han" in page.text
    assert operator.form("/fleet/gate-han/retire", {}, csrf=False).status_code == 403
    assert operator.form("/fleet/gate-han/retire", {}).status_code == 303
    assert site.storage.station("gate-han").status == "retired" and broker.removed == ["gate-han"]
    assert operator.http.get("/api/fleet").json()["stations"][0]["state"] == "retired"


def test_metrics_are_served_without_personal_data(site):
    site, _ = site
    text = site.visitor().http.get("/metrics").text
    assert "qrgate_checkins" in text and "qrgate_stations" in text
