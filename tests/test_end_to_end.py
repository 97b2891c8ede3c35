"""Images in front of a station become signed rows in the server, each exactly once,
through a real Mosquitto with the project's TLS/password/ACL config, across a broker
crash and a server crash in the middle of the stream."""

from __future__ import annotations

import json
import ssl
import subprocess
import sys

import httpx
import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion

from conftest import ServerProcess, wait_until
from edge.app import Station
from edge.drivers.fake import ListSource
from edge.config import load_station_config
from edge.outcome import Result
from qrgate import protocol
from qrgate.samples import cccd, write_qr_png

pytestmark = pytest.mark.timeout(180)


def make_people_images(directory, count):
    directory.mkdir()
    for i in range(count):
        text = cccd(f"0790{i:08d}", "", f"Nguyễn Văn Thợ {i:02d}", "01021990", "Nam",
                    f"{i} Lê Lợi, Phường Bến Thành, TP Hồ Chí Minh", "01012022")
        write_qr_png(text, directory / f"{i:03d}.png", scale=4)


def test_images_become_signed_rows_exactly_once_across_broker_and_server_crashes(tmp_path, server_env):
    make_people_images(tmp_path / "images", 30)
    setup = server_env.add_station(
        "gate-1", tmp_path / "station",
        source={"kind": "folder", "path": str(tmp_path / "images")},
        feedback={"indicators": "gpio", "pin_factory": "mock", "panel": "dummy"},
        station_options={"resend_after_s": 2.0},
    )
    server = ServerProcess(server_env.config.path, tmp_path / "server.log")
    server.start()
    station = Station(load_station_config(setup.config_path))
    results = []
    station.listeners.append(lambda e: results.append(e) if hasattr(e, "result") else None)
    station.start()
    try:
        for i, capture in enumerate(station.source.captures()):
            station.handle_capture(capture)
            if i == 9:
                server_env.broker.stop(kill=True)
                server_env.broker.start()
            if i == 19:
                server.kill()
                server.start()
        assert station.publisher.wait_drained(90), f"backlog left: {station.outbox.backlog()}"
    finally:
        station.close()
        server.stop()

    accepted = [o for o in results if o.result in (Result.ACCEPTED, Result.ACCEPTED_OFFLINE)]
    assert len(accepted) == 30
    rows = server_env.storage.sql.rows(
        "SELECT seq, record FROM checkins WHERE station_id = 'gate-1' ORDER BY seq"
    )
    assert [r[0] for r in rows] == list(range(1, 31))  # every one, exactly once
    public = protocol.public_key_from_text(setup.public_key)
    for _, body in rows:
        record = protocol.validate_record(json.loads(body))
        protocol.verify_record(record, public)
        assert "sealed" in record and "Thợ" not in body  # sealed on the station's disk and on the wire
    names = {r[0] for r in server_env.storage.sql.rows("SELECT name FROM checkins")}
    assert names == {f"Nguyễn Văn Thợ {i:02d}" for i in range(30)}


def test_web_page_and_json_list_stored_checkins_masked(tmp_path, server_env):
    make_people_images(tmp_path / "images", 3)
    setup = server_env.add_station(
        "gate-2", tmp_path / "station", source={"kind": "folder", "path": str(tmp_path / "images")},
        feedback={"indicators": "none", "panel": "none"},
        # The server may not have subscribed yet when the first batch leaves: resend soon.
        station_options={"resend_after_s": 1.0},
    )
    server = ServerProcess(server_env.config.path, tmp_path / "server.log")
    server.start()
    station = Station(load_station_config(setup.config_path))
    station.start()
    try:
        station.run()
        assert station.publisher.wait_drained(60)
        base = f"http://127.0.0.1:{server_env.config.web.port}"
        wait_until(lambda: _get(base + "/healthz") is not None, 30, "web server")
        # Only an operator sees every venue's latest check-ins; log in as one.
        cli = [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())"]
        config = str(server_env.config.path)
        subprocess.run([*cli, "operator-add", "--config", config, "--phone", "0900000009"], check=True, timeout=60)
        link = subprocess.run([*cli, "login-link", "--config", config, "--phone", "0900000009",
                               "--base-url", base], check=True, capture_output=True, text=True, timeout=60).stdout.strip()
        assert httpx.get(base + "/api/checkins", timeout=5).status_code == 404  # not for anonymous visitors
        with httpx.Client(timeout=5) as operator:
            operator.get(link, follow_redirects=True)
            data = operator.get(base + "/api/checkins").json()
    finally:
        station.close()
        server.stop()
    assert [c["name"] for c in data["checkins"]] == ["Nguyễn V** T** 0*"] * 3
    assert [c["id_number"] for c in data["checkins"]] == ["*********002", "*********001", "*********000"]
    assert {c["birth"] for c in data["checkins"]} == {"1990"}


def _get(url):
    try:
        return httpx.get(url, timeout=2)
    except httpx.HTTPError:
        return None


def _client(broker, username=None, password=None, tls=True, client_id=""):
    client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    if username:
        client.username_pw_set(username, password)
    if tls:
        client.tls_set(ca_certs=str(broker.files.ca_cert), cert_reqs=ssl.CERT_REQUIRED)
    return client


def test_broker_refuses_anonymous_and_plain_connections(broker):
    anon = _client(broker)
    codes = []
    anon.on_connect = lambda c, u, f, rc, p: codes.append(rc)
    anon.connect("127.0.0.1", broker.files.port)
    anon.loop_start()
    try:
        wait_until(lambda: codes, 15, "CONNACK")
    finally:
        anon.loop_stop()
    assert codes[0].is_failure  # not authorised
    # A client speaking plain MQTT to the TLS-only listener never gets a CONNACK.
    plain = _client(broker, "anyone", "x", tls=False)
    acked, closed = [], []
    plain.on_connect = lambda *a: acked.append(a)
    plain.on_disconnect = lambda *a: closed.append(a)
    plain.connect("127.0.0.1", broker.files.port)
    plain.loop_start()
    try:
        wait_until(lambda: closed or acked, 15, "plain connection to be dropped")
    finally:
        plain.loop_stop()
    assert not acked


def test_a_station_cannot_publish_as_another_station(tmp_path, server_env):
    gate1 = server_env.add_station("gate-1", tmp_path / "s1", feedback={"indicators": "none", "panel": "none"})
    server_env.add_station("gate-2", tmp_path / "s2", feedback={"indicators": "none", "panel": "none"})
    broker = server_env.broker
    seen = []
    listener = _client(broker, "qrgate-server", (server_env.config.base / "mqtt.password").read_text().strip())
    listener.on_message = lambda c, u, m: seen.append(m.topic)
    subscribed = []
    listener.on_subscribe = lambda *a: subscribed.append(a)
    listener.on_connect = lambda c, *a: c.subscribe(protocol.records_topic("+"), qos=1)
    listener.connect("127.0.0.1", broker.files.port)
    listener.loop_start()
    # gate-1's password opens the broker only under gate-1's own client id.
    intruder = _client(broker, "gate-1", (tmp_path / "s1" / "mqtt.password").read_text().strip(),
                       client_id="station-gate-1")
    intruder.connect("127.0.0.1", broker.files.port)
    intruder.loop_start()
    try:
        wait_until(lambda: subscribed, 15, "listener subscription")
        forbidden = intruder.publish(protocol.records_topic("gate-2"), b'{"records":[]}', qos=1)
        allowed = intruder.publish(protocol.records_topic("gate-1"), b'{"records":[]}', qos=1)
        forbidden.wait_for_publish(10)
        allowed.wait_for_publish(10)
        wait_until(lambda: protocol.records_topic("gate-1") in seen, 15, "the allowed message")
    finally:
        intruder.loop_stop()
        listener.loop_stop()
    assert protocol.records_topic("gate-2") not in seen
    assert gate1.station_id == "gate-1"


def test_config_and_block_list_reach_a_running_station_through_the_broker(tmp_path, server_env):
    from qrgate.keyfiles import load_or_create_key
    from qrgate.samples import demo_samples
    from server.ingest.stationconfig import StationConfigStore, StationSettings, publish_configs

    setup = server_env.add_station("gate-3", tmp_path / "station", source={"kind": "list"},
                                   feedback={"indicators": "none", "panel": "none"})
    station = Station(load_station_config(setup.config_path), source=ListSource([]))
    station.start()
    try:
        wait_until(lambda: station.publisher.online, 30, "station online")
        store = StationConfigStore(server_env.storage)
        store.set_settings("gate-3", StationSettings(mode="exit"))
        store.block("cccd:001196004321", "quarantine")
        sent = publish_configs(store, load_or_create_key(server_env.config.pass_key_file),
                               server_env.config.mqtt, server_env.config.base)
        assert sent == 1
        wait_until(lambda: station.pushed is not None, 30, "config applied")
        uyen = demo_samples()[1].text  # CCCD 001196004321
        assert station.handle_text(uyen).reason == "blocked"
        manh = station.handle_text(demo_samples()[0].text)
        assert manh.direction == "out"  # the pushed mode
    finally:
        station.close()
