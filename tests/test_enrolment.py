"""Enrolment against a running server and a real Mosquitto with TLS: no secret typed, the
key made on the station, single-use codes, and a station that then works."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from conftest import serve_app, wait_until
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result
from qrgate.samples import demo_samples, write_qr_png
from server.ingest.bridge import Bridge
from server.cli import open_sealing
from server.ingest.enrol import enrolment_for
from server.web.app import create_app

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent


@pytest.fixture
def enrol_server(server_env):
    enrolment = enrolment_for(server_env.config, server_env.storage)
    app = create_app(server_env.storage, enrolment=enrolment)
    with serve_app(app, "enrolment endpoint") as base:
        bridge = Bridge(server_env.storage, server_env.config.mqtt, server_env.config.base,
                        opener=open_sealing(server_env.config))
        bridge.start()
        yield base, enrolment
        bridge.close()


def run(*args):
    return subprocess.run([str(BIN / args[0]), *args[1:]], capture_output=True, text=True, timeout=60)


def post(url, body):
    request = urllib.request.Request(url + "/api/enrol", data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


def database_holds(storage, text: str) -> bool:
    """Whether ``text`` is anywhere in the server's database: the SQLite file's bytes, or
    any row of any table on PostgreSQL."""
    db = storage.sql
    if db.dialect == "sqlite":
        return text.encode() in storage.path.read_bytes()
    tables = [t for (t,) in db.rows("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    assert "stations" in tables and "station_keys" in tables
    return any(db.one(f'SELECT 1 FROM "{t}" r WHERE r::text LIKE ? LIMIT 1', [f"%{text}%"]) for t in tables)


def test_a_station_enrolled_from_a_shell_publishes_and_is_stored(tmp_path, server_env, enrol_server):
    url, enrolment = enrol_server
    # A server whose [web] timezone is not the default: the station learns the calendar.
    enrolment.settings = dataclasses.replace(enrolment.settings, timezone="Asia/Bangkok")
    code = run("qrgate-provision", "enrol-code", "--server-config", str(server_env.config.path),
               "--venue", str(server_env.venue_id), "--url", url)
    assert code.returncode == 0, code.stderr
    text = json.loads(code.stdout)
    assert text["qrgate_enrol"] == 1 and text["url"] == url
    out = run("qrgate-provision", "enroll", "--token", text["token"], "--server", url,
              "--dir", str(tmp_path / "st"), "--name", "gate-east")
    assert out.returncode == 0, out.stderr
    key_file = tmp_path / "st" / "state" / "station.key"
    assert stat.S_IMODE(os.stat(key_file).st_mode) == 0o600
    station_row = server_env.storage.station("gate-east")
    assert station_row is not None and station_row.venue_id == server_env.venue_id
    assert not database_holds(server_env.storage, "PRIVATE")  # only the public key went over
    config = load_station_config(tmp_path / "st" / "station.toml")
    assert config.station.timezone == "Asia/Bangkok"
    station = Station(config, source=ListSource([]))
    station.start()
    try:
        wait_until(lambda: station.publisher.online, 30, "enrolled station online")
        assert station.handle_text(demo_samples()[0].text).result is Result.ACCEPTED
        assert station.publisher.wait_drained(30)
    finally:
        station.close()
    assert server_env.storage.count_checkins("gate-east") == 1
    # A reused code is refused.
    again = run("qrgate-provision", "enroll", "--token", text["token"], "--server", url, "--dir", str(tmp_path / "x"))
    assert again.returncode == 1 and "already used" in again.stderr


def test_expired_unknown_and_newer_handshakes_are_refused(enrol_server, server_env):
    url, enrolment = enrol_server
    from qrgate import protocol
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    public = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
    expired = enrolment.create_token(server_env.venue_id, minutes=1, now_ms=1_000_000)
    status, body = post(url, {"v": 1, "token": expired, "public_key": public})
    assert (status, body["error"]) == (403, "this enrolment code has expired: ask for a new one")
    status, body = post(url, {"v": 1, "token": "made-up", "public_key": public})
    assert (status, body["error"]) == (403, "unknown enrolment code")
    fresh = enrolment.create_token(server_env.venue_id)
    status, body = post(url, {"v": 2, "token": fresh, "public_key": public})
    assert status == 400 and "handshake version 2 is newer than this server knows (1)" in body["error"]
    status, body = post(url, {"v": 1, "token": fresh, "public_key": "not-a-key"})
    assert status == 400
    status, _ = post(url, {"v": 1, "token": fresh, "public_key": public})  # still unused: works once
    assert status == 200
    assert server_env.storage.sql.value("SELECT count(*) FROM stations") == 1


def test_a_new_station_reads_the_setup_code_with_its_own_camera(tmp_path, server_env, enrol_server):
    from edge.enrolment import enrol_from_code
    from server.ingest.enrol import enrol_code_text

    url, enrolment = enrol_server
    camera = tmp_path / "camera"
    camera.mkdir()
    write_qr_png("https://example.com/not-a-setup-code", camera / "1-other.png")
    write_qr_png(enrol_code_text(url, enrolment.create_token(server_env.venue_id)), camera / "2-setup.png")
    boot = tmp_path / "st" / "station.toml"
    boot.parent.mkdir()
    boot.write_text(f'[source]\nkind = "folder"\npath = "{camera}"\n[feedback]\nindicators = "none"\npanel = "dummy"\n')
    path = enrol_from_code(boot, timeout=30)
    config = load_station_config(path)
    assert config.source == {"kind": "folder", "path": str(camera)}  # kept from the setup file
    assert config.station.venue == "Nhà máy Test - Cổng 1"
    assert server_env.storage.station(config.station.id) is not None


def test_a_station_set_up_by_install_sh_keeps_its_key_and_outbox_in_the_state_folder(tmp_path, server_env,
                                                                                      enrol_server):
    """install.sh writes the setup file with [station] state_dir = "/var/lib/qrgate", the one
    folder the unit may write; the config folder (/etc/qrgate) is read-only to the unit."""
    from edge.enrolment import enrol_from_code
    from server.ingest.enrol import enrol_code_text

    url, enrolment = enrol_server
    camera, state = tmp_path / "camera", tmp_path / "var-lib-qrgate"
    camera.mkdir()
    write_qr_png(enrol_code_text(url, enrolment.create_token(server_env.venue_id)), camera / "setup.png")
    setup = (Path(__file__).parent.parent / "provisioning" / "station.toml.in").read_text()
    setup = setup.replace('"/var/lib/qrgate"', f'"{state}"').replace('kind = "picamera2"', f'kind = "folder"\npath = "{camera}"')
    setup = setup.replace('indicators = "gpio"', 'indicators = "none"').replace('panel = "ssd1306"', 'panel = "dummy"')
    etc = tmp_path / "etc-qrgate"
    etc.mkdir()
    (etc / "station.toml").write_text(setup)
    config = load_station_config(enrol_from_code(etc / "station.toml", timeout=30))
    assert config.state_dir == state
    assert stat.S_IMODE(os.stat(state / "station.key").st_mode) == 0o600
    os.chmod(etc, 0o555)  # as under ProtectSystem=strict
    try:
        station = Station(config, source=ListSource([]))
        station.close()
    finally:
        os.chmod(etc, 0o755)
    assert (state / "outbox.sqlite3").exists()
    assert sorted(p.name for p in etc.iterdir()) == ["ca.crt", "mqtt.password", "station.toml"]


def test_rotating_the_key_keeps_queued_records_valid_and_refuses_forgeries(tmp_path, server_env, enrol_server):
    url, enrolment = enrol_server
    token = enrolment.create_token(server_env.venue_id)
    out = run("qrgate-provision", "enroll", "--token", token, "--server", url, "--dir", str(tmp_path / "st"),
              "--name", "gate-rot")
    assert out.returncode == 0, out.stderr
    config = tmp_path / "st" / "station.toml"
    station = Station(load_station_config(config), source=ListSource([]))
    assert station.handle_text(demo_samples()[0].text).result is Result.ACCEPTED_OFFLINE  # queued, old key
    busy = run("qrgate-edge", "rotate-key", "--config", str(config))
    assert busy.returncode == 1 and "is running: stop it first" in busy.stderr
    old_key = (tmp_path / "st" / "state" / "station.key").read_bytes()
    station.close()
    rotated = run("qrgate-edge", "rotate-key", "--config", str(config))  # server_url came with enrolment
    assert rotated.returncode == 0, rotated.stderr
    assert "new key signs from record 2" in rotated.stdout
    assert (tmp_path / "st" / "state" / "station.key").read_bytes() != old_key
    assert [seq for seq, _ in server_env.storage.station_keys("gate-rot")] == [1, 2]
    station = Station(load_station_config(config), source=ListSource([]))
    station.start()
    try:
        wait_until(lambda: station.publisher.online, 30, "station online")
        assert station.handle_text(demo_samples()[1].text).result is Result.ACCEPTED  # new key
        assert station.publisher.wait_drained(30)
    finally:
        station.close()
    assert server_env.storage.count_checkins("gate-rot") == 2  # the old-key record too
    # A rotation signed by anyone but the station is refused.
    import base64

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qrgate import protocol

    thief = Ed25519PrivateKey.generate()
    body = {"v": 1, "station_id": "gate-rot", "new_public_key": protocol.public_key_to_text(thief.public_key()),
            "from_seq": 50, "ts_ms": int(time.time() * 1000)}
    sig = thief.sign(protocol.ROTATE_SIGNING_CONTEXT + protocol.canonical_json(body))
    request = urllib.request.Request(url + "/api/rotate-key", method="POST",
                                     data=json.dumps({**body, "sig": base64.b64encode(sig).decode()}).encode(),
                                     headers={"Content-Type": "application/json"})
    with pytest.raises(urllib.error.HTTPError) as err:
        urllib.request.urlopen(request, timeout=10)
    assert err.value.code == 403


def test_enrolment_codes_can_be_typed_after_an_option_on_a_command_line(server_env):
    enrolment = enrolment_for(server_env.config, server_env.storage)
    tokens = [enrolment.create_token(server_env.venue_id) for _ in range(200)]
    assert len(set(tokens)) == 200
    assert not [t for t in tokens if t.startswith("-")]  # argparse would read it as an option
