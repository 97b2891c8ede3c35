"""The station as a systemd service: READY, a watchdog fed only while the pipeline is
alive, a clean stop that blanks the screen. Uses a real notify socket, as systemd does."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.service import ServiceNotifier
from provisioning.broker import free_port
from qrgate.samples import write_qr_png
from qrgate.sealing import x25519_public_to_text

pytestmark = pytest.mark.timeout(60)


def station_toml(tmp_path, source: str, *, station_id: str = "gate-svc", panel: str = "dummy",
                 screen_png: str = "screen.png") -> Path:
    """A station.toml with mock pins, a broker port nobody listens on, and ``source``."""
    cfg = tmp_path / "station.toml"
    cfg.write_text(f"""
[station]
id = "{station_id}"
server_key = "{x25519_public_to_text(X25519PrivateKey.generate().public_key())}"
[mqtt]
port = {free_port()}
tls = false
[feedback]
indicators = "gpio"
pin_factory = "mock"
panel = "{panel}"
screen_png = "{screen_png}"
[source]
{source}
""")
    return cfg


def read_messages(sock, until: str, limit: int = 50) -> list[str]:
    seen = []
    for _ in range(limit):
        msg = sock.recv(4096).decode()
        seen.append(msg)
        if until in msg:
            return seen
    raise AssertionError(f"no {until!r} in {seen}")


def test_station_tells_systemd_it_is_ready_feeds_the_watchdog_and_stops_cleanly(tmp_path):
    camera = tmp_path / "camera"
    camera.mkdir()
    write_qr_png("https://example.com", camera / "a.png")
    cfg = station_toml(tmp_path, f'kind = "folder"\npath = "{camera}"\nloop = true\ninterval_s = 0.05')
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "qrgate-edge"), "run", "--config", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        messages = read_messages(sock, "READY=1")
        messages += read_messages(sock, "WATCHDOG=1")
        assert any("STATUS=backlog 0, offline" in m for m in messages)
        proc.send_signal(signal.SIGTERM)
        read_messages(sock, "STOPPING=1")
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_a_station_started_without_its_camera_is_ready_shows_the_fault_and_scans_when_it_appears(tmp_path):
    # A station must come up and say what is wrong, not crash-loop under Restart=always.
    import json

    from PIL import Image

    from conftest import wait_until
    from edge.display.screens import render_idle
    from edge.feedback import IDLE_SHIFTS
    from edge.outcome import StationState

    camera = tmp_path / "camera"  # not there yet
    cfg = station_toml(tmp_path, f'kind = "folder"\npath = "{camera}"\nloop = true\ninterval_s = 0.05')
    runtime = tmp_path / "run"  # systemd's RuntimeDirectory=qrgate
    runtime.mkdir()
    sock_path = tmp_path / "notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(20)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000",
           "RUNTIME_DIRECTORY": str(runtime)}
    proc = subprocess.Popen([str(Path(sys.executable).parent / "qrgate-edge"), "run", "--config", str(cfg)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def screen_shows(state: StationState) -> bool:
        try:
            shown = Image.open(tmp_path / "screen.png").convert("1").tobytes()
        except OSError:
            return False
        return shown in {render_idle(state, shift).convert("1").tobytes() for shift in IDLE_SHIFTS}

    def health() -> dict:
        try:
            return json.loads((runtime / "health.json").read_text())
        except (OSError, ValueError):
            return {}

    try:
        read_messages(sock, "READY=1")
        # Fed while the fault is shown (not a hang); `systemctl status` names the fault.
        assert "STATUS=backlog 0, offline, camera fault" in read_messages(sock, "WATCHDOG=1")[-1]
        wait_until(lambda: screen_shows(StationState(fault="camera")), 20, "LỖI: camera on the screen")
        assert health()["fault"] == "camera" and health()["pid"] == proc.pid
        camera.mkdir()
        write_qr_png("https://example.com", camera / "a.png")
        wait_until(lambda: health().get("fault") == "" and health().get("last_capture_age_s") is not None, 20,
                   "the fault to clear once frames come")
        read_messages(sock, "WATCHDOG=1")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()[-2000:]
        assert not (runtime / "health.json").exists()  # a stopped station reports nothing
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


class RecordingNotifier:
    def __init__(self):
        self.sent = []

    def notify(self, state):
        self.sent.append(state)


class Clock:
    t = 1000.0

    def __call__(self):
        return self.t


def test_watchdog_is_not_fed_when_the_camera_stalls_unless_a_fault_is_shown(tmp_path):
    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource

    station = Station(load_station_config(station_toml(tmp_path, 'kind = "folder"\npath = "x"')),
                      source=ListSource([]), decoder=object())
    clock = Clock()
    station.last_capture = station.last_housekeeping = clock.t
    station.publisher._thread.start = lambda: None
    station.publisher.thread_alive = lambda: True
    notifier = RecordingNotifier()
    service = ServiceNotifier(station, notifier, clock=clock)
    assert service.beat() and notifier.sent[-1].startswith("WATCHDOG=1")
    clock.t += 45  # no frame for 45 s: the camera driver hangs
    station.last_housekeeping = clock.t
    assert not service.beat()
    assert notifier.sent[-1] == "STATUS=no camera frame for 45 s"
    station._set_fault("camera")  # the station knows and is retrying: not a hang
    assert service.beat()
    station.close()


def test_stopping_blanks_the_screen_and_switches_off_the_lights():
    from gpiozero.pins.mock import MockFactory

    from edge.display.panel import Screen, open_panel
    from edge.drivers.indicators_gpio import GpioIndicators
    from edge.feedback import FeedbackLoop
    from edge.outcome import Outcome, Result

    factory = MockFactory()
    device = open_panel("dummy")
    loop = FeedbackLoop(GpioIndicators(pin_factory=factory), Screen(device))
    loop.start()
    loop.post(Outcome(Result.FAULT, reason="storage"))
    assert loop.wait_idle(5)
    assert device.image.getbbox() is not None
    loop.close()
    assert device.image.getbbox() is None  # blank
    assert not factory.pin(27).state and not factory.pin(18).state
    factory.reset()


def test_server_tells_systemd_it_is_ready_and_feeds_the_watchdog(tmp_path, server_env):
    sock_path = tmp_path / "server-notify.sock"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(str(sock_path))
    sock.settimeout(30)
    env = {**os.environ, "NOTIFY_SOCKET": str(sock_path), "WATCHDOG_USEC": "400000"}
    proc = subprocess.Popen([sys.executable, "-c", "from server.cli import main; raise SystemExit(main())",
                             "run", "--config", str(server_env.config.path)],
                            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        read_messages(sock, "READY=1")
        assert any("STATUS=stored 0" in m for m in read_messages(sock, "WATCHDOG=1"))
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        if proc.poll() is None:
            proc.kill()
        sock.close()


def test_a_second_web_process_shares_the_port_and_serves_on_when_the_first_stops(server_env):
    # More `qrgate-server run --no-bridge` processes on one host use more cores: they
    # listen on the same port (SO_REUSEPORT) and the kernel spreads the connections. A
    # second bridge is refused.
    import urllib.request

    from conftest import wait_until

    url = f"http://127.0.0.1:{server_env.config.web.port}/healthz"

    def start(*options):
        return subprocess.Popen([sys.executable, "-c", "from server.cli import main; raise SystemExit(main())",
                                 "run", *options, "--config", str(server_env.config.path)],
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)

    def answers() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return response.status == 200
        except OSError:
            return False

    first = start()  # with the bridge
    second = None
    try:
        wait_until(answers, 60, "the first web process")
        # A second bridge on this host would fight the first for its broker session.
        again = start()
        assert again.wait(timeout=60) == 1
        assert "another `qrgate-server run` with its bridge is running here" in again.stderr.read().decode()
        second = start("--no-bridge")
        # Both listen: the second neither fails on the taken port nor takes it over.
        wait_until(lambda: second.poll() is not None or _listeners(server_env.config.web.port) == 2, 60,
                   "the second web process listening")
        assert second.poll() is None, second.stderr.read().decode()[-2000:]
        first.send_signal(signal.SIGTERM)
        assert first.wait(timeout=20) == 0, first.stderr.read().decode()[-2000:]
        assert all(answers() for _ in range(20))
    finally:
        for proc in (first, second):
            if proc is not None and proc.poll() is None:
                proc.kill()
                proc.wait(timeout=10)


def _listeners(port: int) -> int:
    """How many sockets listen on 127.0.0.1:port (from /proc/net/tcp)."""
    lines = Path("/proc/net/tcp").read_text().splitlines()[1:]
    return sum(1 for line in lines if line.split()[1] == f"0100007F:{port:04X}" and line.split()[3] == "0A")


def test_a_port_another_program_holds_is_refused_with_the_address():
    from qrgate.errors import UserError
    from server.cli import web_socket

    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    port = taken.getsockname()[1]
    try:
        with pytest.raises(UserError, match=f"cannot listen on 127.0.0.1:{port}: Address already in use"):
            web_socket("127.0.0.1", port)
    finally:
        taken.close()
