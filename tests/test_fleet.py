"""The fleet seen by an operator: status and heartbeat, reassigning and retiring a station."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from conftest import wait_until
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result
from qrgate.samples import demo_samples
from server.ingest.bridge import Bridge
from server.cli import open_sealing
from server.ingest.fleet import Fleet

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def running(tmp_path, server_env):
    setup = server_env.add_station("gate-9", tmp_path / "station", source={"kind": "list"},
                                   feedback={"indicators": "none", "panel": "none"},
                                   station_options={"resend_after_s": 1.0})
    bridge = Bridge(server_env.storage, server_env.config.mqtt, server_env.config.base,
                    opener=open_sealing(server_env.config))
    bridge.start()
    assert bridge.wait_connected(30)
    station = Station(load_station_config(setup.config_path), source=ListSource([]))
    station.start()
    yield station, bridge, Fleet(server_env.storage)
    station.close()
    bridge.close()


def fleet_row(fleet, station_id="gate-9"):
    return next(r for r in fleet.rows() if r["station_id"] == station_id)


def test_fleet_shows_a_station_online_with_backlog_firmware_and_clock(running):
    station, bridge, fleet = running
    wait_until(lambda: fleet_row(fleet)["last_seen_ms"] is not None, 30, "first status")
    row = fleet_row(fleet)
    assert row["online"] and row["backlog"] == 0 and row["fw"] == "0.1.0"
    assert row["clock_synced"] in (True, False) and row["venue"] == "Nhà máy Test - Cổng 1"
    station.publisher.close()  # a clean stop says "offline" at once
    wait_until(lambda: not fleet_row(fleet)["online"], 30, "offline status")


def test_reassigned_station_counts_its_next_checkins_at_the_new_venue(running, server_env):
    station, bridge, fleet = running
    market = server_env.storage.add_venue("Chợ Đông Ba")
    fleet.reassign("gate-9", market)
    wait_until(lambda: station.publisher.online, 30, "station online")
    assert station.handle_text(demo_samples()[0].text).result is Result.ACCEPTED
    wait_until(lambda: server_env.storage.count_checkins("gate-9") == 1, 30, "stored check-in")
    assert server_env.storage.latest_checkins(1)[0]["venue"] == "Chợ Đông Ba"
    assert [e["action"] for e in fleet.events("gate-9")] == ["qrgate.station.reassigned"]


def test_retired_station_is_refused_and_counted_and_cannot_log_in_again(running, server_env, tmp_path):
    station, bridge, fleet = running
    config = server_env.config.path
    out = subprocess.run([str(Path(sys.executable).parent / "qrgate-provision"), "retire", "--server-config",
                          str(config), "--broker-dir", str(server_env.broker.files.directory), "--station", "gate-9"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    station.handle_text(demo_samples()[1].text)  # a stolen station keeps trying
    wait_until(lambda: server_env.storage.refusal_counts().get("retired", 0) >= 1
               or not station.publisher.online, 30, "refusal or disconnection")
    assert server_env.storage.count_checkins("gate-9") == 0
    # Its credentials no longer open the broker.
    from edge.selftest import check_broker

    check = check_broker(load_station_config(tmp_path / "station" / "station.toml"))
    assert check.status == "fail" and "refused this station's name or password" in check.message
    assert fleet_row(fleet)["status"] == "retired"


# -- the fleet page ----------------------------------------------------------------------


class UnreachableBroker:
    """The broker's accounts when Mosquitto cannot be told (the real failure is a
    DriverError from provisioning.broker.BrokerFiles)."""

    def remove_user(self, name):
        from qrgate.errors import DriverError

        raise DriverError(f"cannot reach the broker to delete {name}")


def _operator_site(tmp_path, broker=None):
    import json as jsonlib

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qrgate import protocol
    from server.selfcheckin.selfcheckin import parse_declaration
    from test_web_support import Site

    site = Site.create(tmp_path, broker_files=broker)
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue(name="Chợ Hàn")
    site.storage.add_station("gate-han", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    site.services.fleet.record_status("gate-han", jsonlib.dumps(
        {"online": True, "backlog": 2, "sync": False, "fw": "1.4.2", "fault": "scanner"}).encode(),
        now_ms=int(site.clock() * 1000))
    site.services.self_checkin.check_in(site.services.venues.get(venue),
                                        parse_declaration("001090000123", "Lê Văn An", "1990", "in", 2026))
    site.services.accounts.set_operator("0900000001")
    return site, site.visitor("198.51.100.1").login("0900000001"), venue


def test_the_fleet_page_says_the_clock_and_faults_in_words_and_leaves_self_checkin_out(tmp_path):
    site, operator, venue = _operator_site(tmp_path)
    page = operator.http.get("/fleet").text
    assert "Chưa đồng bộ: giờ quét có thể lệch" in page and "Đầu đọc mã không hoạt động" in page
    assert "✗" not in page and "onsubmit" not in page
    assert f'data-station="self-{venue}"' not in page and "không phải trạm quét" in page
    assert [s["station_id"] for s in operator.http.get("/api/fleet").json()["stations"]] == ["gate-han"]
    # The self check-in source cannot be retired or moved from the fleet either.
    assert operator.form(f"/fleet/self-{venue}/retire", {}).status_code == 404
    assert operator.form(f"/fleet/self-{venue}/reassign", {"venue_id": str(venue)}).status_code == 404
    assert site.storage.station(f"self-{venue}").status == "active"


def test_moving_and_retiring_say_what_happened_once_and_errors_are_said_in_vietnamese(tmp_path):
    site, operator, venue = _operator_site(tmp_path)
    wrong = operator.form("/fleet/gate-han/reassign", {"venue_id": "987654"})
    assert wrong.status_code == 400 and "hãy chọn một địa điểm có trong danh sách" in wrong.text
    moved = operator.form("/fleet/gate-han/reassign", {"venue_id": str(venue)})
    assert moved.status_code == 303
    assert "Đã chuyển trạm" in operator.http.get("/fleet").text
    assert "Đã chuyển trạm" not in operator.http.get("/fleet").text  # said once
    assert operator.form("/fleet/gate-han/retire", {}).status_code == 303
    assert "Đã ngừng trạm" in operator.http.get("/fleet").text


def test_a_retirement_the_broker_missed_says_so_and_offers_to_tell_it_again(tmp_path):
    site, operator, venue = _operator_site(tmp_path, broker=UnreachableBroker())
    page = operator.form("/fleet/gate-han/retire", {})
    assert page.status_code == 503
    assert "chưa báo được cho máy chủ MQTT" in page.text and 'id="broker-again"' in page.text
    assert "cannot reach" not in page.text
    assert site.storage.station("gate-han").status == "retired"  # its records are refused already
