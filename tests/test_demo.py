"""The demo a newcomer runs: `qrgate-demo --once --json` end to end on real parts."""

from __future__ import annotations

import json
import os
import queue
import shlex
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(180)

BIN = Path(sys.executable).parent


def test_demo_once_stores_every_accepted_scan_and_says_so(tmp_path):
    data = tmp_path / "demo"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--data", str(data), "--web-port", "0"],
        capture_output=True, text=True, timeout=170,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary == {
        "images": 10,
        "accepted": 6,
        "refused": {"unknown_format": 2, "bad_encoding": 1, "too_long": 1},
        "stored_at_server": 6,
    }
    screen = Image.open(data / "station" / "screen.png")
    assert screen.size == (128, 64)


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "is not a demo folder" in out.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_counts_every_image_even_the_same_card_twice(tmp_path):
    from qrgate.samples import demo_samples, write_qr_png

    images = tmp_path / "images"
    images.mkdir()
    person = demo_samples()[0].text
    write_qr_png(person, images / "a.png")
    write_qr_png(person, images / "b.png")  # the same person shows the card again at once
    (images / "c.png").write_bytes((images / "a.png").read_bytes())
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--images", str(images),
         "--data", str(tmp_path / "demo"), "--web-port", "0"],
        capture_output=True, text=True, timeout=170,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {
        "images": 3, "accepted": 1, "refused": {"already_counted": 2}, "stored_at_server": 1,
    }


class RunningDemo:
    """`qrgate-demo` in its loop mode as a child process, as a newcomer runs it.

    ``lines`` holds its startup text by label ("Web UI", "Broker", ...); its log (stderr)
    goes to a file; ``broker_pid`` is the Mosquitto it started (from the broker's pid file).
    """

    def __init__(self, data: Path, log: Path, *options: str):
        self.data, self.log_path = data, log
        with open(log, "wb") as err:
            self.proc = subprocess.Popen([str(BIN / "qrgate-demo"), "--data", str(data), "--web-port", "0", *options],
                                         stdout=subprocess.PIPE, stderr=err, text=True)
        self._out: queue.Queue = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()
        self.lines: dict[str, str] = {}
        self.broker_pid: int | None = None

    def _read(self) -> None:
        for line in self.proc.stdout:
            self._out.put(line.rstrip("\n"))
        self._out.put(None)

    def wait_started(self, timeout: float = 60) -> None:
        """Read the startup text until the demo says it is scanning (the last line)."""
        deadline = time.monotonic() + timeout
        while True:
            try:
                line = self._out.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise AssertionError(f"the demo did not start within {timeout}s; got {self.lines}") from None
            if line is None:
                raise AssertionError(f"the demo exited ({self.proc.wait()}): {self.log()[-3000:]}")
            label, _, text = line.partition(":")
            self.lines[label] = text.strip()
            if line.startswith("Scanning"):
                break
        self.broker_pid = int((self.data / "broker" / "mosquitto.pid").read_text())

    @property
    def web_url(self) -> str:
        return self.lines["Web UI"].rstrip("/")

    @property
    def broker_port(self) -> int:
        return int(self.lines["Broker"].split()[0].rsplit(":", 1)[1])

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def broker_running(self) -> bool:
        """Whether the Mosquitto this demo started still runs (its pid, naming our config)."""
        try:
            cmdline = Path(f"/proc/{self.broker_pid}/cmdline").read_bytes()
        except OSError:
            return False
        return str(self.data / "broker" / "mosquitto.conf").encode() in cmdline

    def stop(self) -> None:
        """Stop the demo, and kill what it left behind, so a failed test leaks nothing."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)  # SIGINT may be ignored in a child started in the background
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        if self.broker_pid and self.broker_running():
            os.kill(self.broker_pid, signal.SIGKILL)


@pytest.fixture
def demo(tmp_path):
    running = RunningDemo(tmp_path / "demo", tmp_path / "demo.log", "-vv")
    try:
        running.wait_started()
        yield running
    finally:
        running.stop()


def run_printed(command: str, **placeholders: str) -> str:
    """Run a command as the demo printed it (this venv's scripts), its placeholders filled."""
    argv = [placeholders.get(word, word) for word in shlex.split(command)]
    if "/" not in argv[0]:
        argv[0] = str(BIN / argv[0])
    out = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, f"{command}: {out.stderr[-3000:]}"
    return out.stdout


def test_a_second_station_binds_to_the_running_demo_as_its_startup_text_says(demo, tmp_path):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from edge.config import load_station_config
    from qrgate import protocol

    make_code, _, enroll = demo.lines["Second station"].partition(", then ")
    assert "enrol-code" in make_code and "enroll" in enroll
    # By hand, as docs/protocol.md describes the handshake: POST /api/enrol with a code.
    code = json.loads(run_printed(make_code))
    assert code["url"] == demo.web_url
    public_key = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
    request = urllib.request.Request(
        code["url"] + "/api/enrol", method="POST", headers={"Content-Type": "application/json"},
        data=json.dumps({"v": 1, "token": code["token"], "public_key": public_key, "name": "demo-gate-2"}).encode())
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200
        binding = json.loads(response.read())
    assert binding["station_id"] == "demo-gate-2"
    assert binding["mqtt"]["port"] == demo.broker_port
    # And with the printed `enroll` command, as a technician would from a shell.
    token = json.loads(run_printed(make_code))["token"]
    station_toml = Path(run_printed(enroll, TOKEN=token, STATION_DIR=str(tmp_path / "gate-3")).strip())
    third = load_station_config(station_toml)
    assert third.station.id not in ("demo-gate-1", "demo-gate-2")
    assert third.mqtt.port == demo.broker_port


def test_sigterm_stops_the_demo_and_the_broker_it_started(demo):
    assert demo.broker_running()
    demo.proc.send_signal(signal.SIGTERM)  # as `kill` or a service manager stops it
    returncode = demo.proc.wait(timeout=60)
    assert not demo.broker_running()
    for port in (demo.broker_port, int(demo.web_url.rsplit(":", 1)[1])):
        with pytest.raises(ConnectionRefusedError):
            socket.create_connection(("127.0.0.1", port), timeout=5).close()
    assert returncode == 0
    assert "Traceback" not in demo.log()


def test_demo_log_at_its_most_verbose_never_names_the_bridges_shared_group(demo):
    from server.ingest.bridge import share_group_for
    from server.config import load_server_config

    config = load_server_config(demo.data / "server" / "server.toml")
    group = share_group_for(config.mqtt, config.base)
    deadline = time.monotonic() + 30
    while "subscribed" not in demo.log():  # the bridge logs it once the broker confirms
        assert time.monotonic() < deadline, "the bridge never said it subscribed"
        assert demo.proc.poll() is None, demo.log()[-3000:]
        time.sleep(0.05)
    assert "DEBUG" in demo.log()  # -vv: everything the demo can log
    assert group.rsplit("-", 1)[1] not in demo.log()


def test_a_pass_revoked_in_the_demo_reaches_its_station_and_the_page_says_so(demo):
    import re

    import httpx

    link = demo.lines["Venue page"].split()[0]
    roster = "ma_nv,ho_ten,bo_phan\nNV001,Nguyễn Văn Lâm,Tổ cắt\nNV002,Trần Thị Mai,Tổ may\n"
    with httpx.Client(base_url=demo.web_url, timeout=30, follow_redirects=True) as owner:
        venue_page = owner.get(link)
        assert venue_page.status_code == 200
        venue = int(re.search(r"/venues/(\d+)", str(venue_page.url)).group(1))
        csrf = owner.get("/api/session").json()["csrf_token"]
        assert owner.post(f"/api/venues/{venue}/roster", files={"file": ("r.csv", roster.encode(), "text/csv")},
                          headers={"X-CSRF-Token": csrf}).status_code == 200
        issued = owner.post(f"/api/venues/{venue}/passes", json={"without_phone": True, "days": 30},
                            headers={"X-CSRF-Token": csrf})
        pid = issued.json()["issued"][0]["pid"]
        # As the owner does it: the passes page's revoke form.
        page = owner.post(f"/venues/{venue}/passes/{pid}/revoke", data={"csrf": csrf, "reason": "mất thẻ"})
    assert page.status_code == 200
    assert f"Đã thu hồi thẻ {pid}." in page.text
    assert "Đã gửi danh sách chặn tới 1 trạm của địa điểm." in page.text
    assert "broker" not in page.text
    from conftest import wait_until

    pushed = demo.data / "station" / "state" / "pushed-config.json"
    wait_until(lambda: pushed.exists() and bool(json.loads(pushed.read_text()).get("blocked")), 30,
               "the demo's station to keep the block list")
