"""`qrgate-edge selftest`: what a technician reads on site, against a real broker, and
beside a running station whose devices it must leave alone."""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from edge.app import FeedbackDevices, Station, health_file, health_file_candidates
from edge.clock import read_boot_id
from edge.config import load_station_config
from edge.drivers import scanner_hid
from edge.selftest import check_running_station, read_health, run_selftest
from qrgate.errors import DriverError
from qrgate.samples import demo_samples, write_qr_png
from test_scanners import FakeDevices
from test_service import station_toml


def selftest(config: Path):
    out = subprocess.run([str(Path(sys.executable).parent / "qrgate-edge"), "selftest", "--json", "--config",
                          str(config)], capture_output=True, text=True, timeout=60)
    return out.returncode, {c["part"]: c for c in map(json.loads, out.stdout.splitlines())}


def make_station(tmp_path, server_env):
    images = tmp_path / "images"
    images.mkdir()
    write_qr_png(demo_samples()[0].text, images / "a.png")
    setup = server_env.add_station("gate-7", tmp_path / "station", source={"kind": "folder", "path": str(images)})
    (tmp_path / "station" / "state").mkdir(exist_ok=True)
    return setup.config_path


def test_a_healthy_station_passes_every_check(tmp_path, server_env):
    code, checks = selftest(make_station(tmp_path, server_env))
    assert code == 0, checks
    assert checks["storage"]["status"] == "ok" and "0 record(s) waiting" in checks["storage"]["message"]
    assert checks["camera"]["status"] == "ok" and "picture received" in checks["camera"]["message"]
    assert checks["pins"]["status"] == "ok" and checks["screen"]["status"] == "ok"
    assert checks["broker"]["status"] == "ok" and "connected over TLS as gate-7" in checks["broker"]["message"]
    assert checks["clock"]["status"] in ("ok", "warn")


def test_wrong_password_and_missing_broker_are_explained(tmp_path, server_env):
    config = make_station(tmp_path, server_env)
    (tmp_path / "station" / "mqtt.password").write_text("not-the-password\n")
    code, checks = selftest(config)
    assert code == 1
    assert "refused this station's name or password" in checks["broker"]["message"]
    server_env.broker.stop()
    code, checks = selftest(config)
    assert "cannot reach 127.0.0.1:" in checks["broker"]["message"]
    assert "is the server running?" in checks["broker"]["message"]


def test_a_missing_camera_folder_and_a_readable_key_are_failures(tmp_path, server_env):
    config = make_station(tmp_path, server_env)
    text = config.read_text().replace(str(tmp_path / "images"), str(tmp_path / "nowhere"))
    config.write_text(text)
    key = tmp_path / "station" / "state" / "station.key"
    os.chmod(key, 0o644)
    code, checks = selftest(config)
    assert code == 1
    assert checks["camera"]["status"] == "fail" and "nowhere" in checks["camera"]["message"]
    assert checks["storage"]["status"] == "fail" and f"chmod 600 {key}" in checks["storage"]["message"]


# --- beside a running station: its devices are busy, so selftest asks it instead -----


def running_station_config(tmp_path, source: str, panel: str = "dummy"):
    return load_station_config(station_toml(tmp_path, source, station_id="gate-busy", panel=panel, screen_png=""))


class ExclusiveDevices:
    """evdev.InputDevice replaced at the boundary: a grabbed scanner cannot be grabbed
    again (EBUSY), as the kernel answers a second program."""

    def __init__(self):
        self.devices = FakeDevices()

    def open(self, path: str):
        device = self.devices.open(path)
        others = self.devices.opened[:-1]

        def grab():
            if any(d.grabbed and not d.closed for d in others):
                raise OSError(errno.EBUSY, "Device or resource busy")
            device.grabbed = True

        device.grab = grab
        return device


@pytest.fixture
def running():
    """Starts a Station with its pipeline on a thread; stops it after the test."""
    stations = []

    def start(cfg, **parts):
        station = Station(cfg, **parts)
        station.start()
        thread = threading.Thread(target=station.run, daemon=True)
        thread.start()
        stations.append((station, thread))
        return station

    yield start
    for station, thread in stations:
        station.close()
        thread.join(timeout=10)


def by_part(checks):
    return {c.part: c for c in checks}


def test_beside_a_running_station_selftest_reports_its_view_and_grabs_nothing(tmp_path, monkeypatch, running):
    exclusive = ExclusiveDevices()
    monkeypatch.setattr(scanner_hid.evdev, "InputDevice", exclusive.open)
    port = tmp_path / "usb-Fake_2D_Scanner-event-kbd"
    port.touch()
    cfg = running_station_config(tmp_path, f'kind = "hid"\ndevice_path = "{port}"')
    running(cfg)

    checks = by_part(run_selftest(cfg, skip=("broker",)))

    assert len(exclusive.devices.opened) == 1  # the station's own: selftest did not open it
    scanner = checks["scanner"]
    assert (scanner.status, scanner.message) == ("ok", "in use by the running station: scanning, no fault, no scan yet")
    assert checks["pins"].status == "ok" and "in use by the running station" in checks["pins"].message
    assert checks["screen"].status == "ok" and "in use by the running station" in checks["screen"].message
    assert checks["storage"].status == "ok"


def test_what_the_running_station_lacks_is_a_selftest_failure(tmp_path, running):
    def no_i2c(kind, *, i2c_port, address):
        raise DriverError(f"I2C device not found: /dev/i2c-{i2c_port} (enable I2C: raspi-config)")

    cfg = running_station_config(tmp_path, f'kind = "folder"\npath = "{tmp_path / "camera"}"\nloop = true',
                                 panel="ssd1306")
    # The camera folder is not there (the station shows the camera fault), nor is I2C.
    running(cfg, feedback_devices=FeedbackDevices(cfg, panel_opener=no_i2c))

    checks = by_part(run_selftest(cfg, skip=("broker",)))

    assert (checks["camera"].status, checks["screen"].status, checks["pins"].status) == ("fail", "fail", "ok")
    assert checks["camera"].message == ("in use by the running station: not scanning, "
                                        "camera fault: the camera cannot be opened or read, no frame yet")
    assert checks["screen"].message == ("the running station has no screen: ssd1306 panel at 0x3C on /dev/i2c-1: "
                                        "I2C device not found: /dev/i2c-1 (enable I2C: raspi-config)")


def test_the_health_file_is_in_systemds_runtime_directory_and_selftest_finds_it_from_a_shell(tmp_path):
    cfg = running_station_config(tmp_path, 'kind = "list"')
    state = cfg.state_dir
    assert health_file(cfg, {"RUNTIME_DIRECTORY": "/run/qrgate"}) == Path("/run/qrgate/health.json")
    assert health_file(cfg, {}) == state / "health.json"  # run by hand
    run_dir = tmp_path / "run-qrgate"
    # selftest from a shell (sudo -u qrgate ...) has no $RUNTIME_DIRECTORY: /run/qrgate first.
    assert health_file_candidates(cfg, {}, run_dir) == [run_dir / "health.json", state / "health.json"]
    assert health_file_candidates(cfg, {"RUNTIME_DIRECTORY": str(tmp_path / "rt")}, run_dir) == [
        tmp_path / "rt" / "health.json", run_dir / "health.json", state / "health.json"]

    run_dir.mkdir()
    state.mkdir()
    (run_dir / "health.json").write_text(json.dumps({"station": "another-gate", "fault": ""}))
    (state / "health.json").write_text(json.dumps({"station": "gate-busy", "fault": "storage"}))
    path, health = read_health(cfg, health_file_candidates(cfg, {}, run_dir))
    assert path == state / "health.json" and health["fault"] == "storage"  # this station's, not another's


def test_a_health_file_the_station_stopped_writing_is_a_failure(tmp_path):
    cfg = running_station_config(tmp_path, 'kind = "list"')
    cfg.state_dir.mkdir()
    health = cfg.state_dir / "health.json"
    fields = {"station": "gate-busy", "pid": os.getpid(), "boot": read_boot_id(), "mono_s": 1000.0,
              "fault": "", "scanning": True, "last_capture_age_s": 0.2, "missing": {}}
    health.write_text(json.dumps(fields))

    fresh = by_part(check_running_station(cfg, [health], monotonic=lambda: 1000.5))
    stale = by_part(check_running_station(cfg, [health], monotonic=lambda: 1090.0))
    earlier_boot = by_part(check_running_station(cfg, [health], monotonic=lambda: 12.0))
    gone = subprocess.Popen(["true"])  # a writer that has ended
    gone.wait(timeout=30)
    health.write_text(json.dumps({**fields, "pid": gone.pid}))
    writer_gone = by_part(check_running_station(cfg, [health], monotonic=lambda: 1000.5))

    # 0.2 s before the file was written, 0.5 s ago
    assert fresh["camera"].message == "in use by the running station: scanning, no fault, last frame 0.7 s ago"
    assert stale["camera"].status == "fail" and f"(pid {os.getpid()})" in stale["camera"].message
    assert "out of date: it may hang" in stale["camera"].message
    assert earlier_boot["camera"].status == "fail" and writer_gone["camera"].status == "fail"
