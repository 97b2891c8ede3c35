"""The pieces bench/bench_fleet.py stands up for one fleet size: an account for every
station on the project's broker, the server's bridge worker, the processes that simulate
the stations (bench/fleet_sim.py), and what is read from /proc about each.

Accounts are made the way ``BrokerFiles.add_user`` makes them while the broker is
stopped (provisioning/broker.py: the plugin's own commands applied to its file), but for
thousands of stations in one write of the file instead of one write per station.
"""

from __future__ import annotations

import json
import os
import queue
import resource
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]


def raise_open_files(wanted: int) -> int:
    """Raise this process's open-files limit (inherited by the broker, the bridge and the
    simulated stations it starts); root may raise the hard limit too. Returns the limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft >= wanted:
        return soft
    for limit in ((max(wanted, hard), max(wanted, hard)), (hard, hard)):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, limit)
            return limit[0]
        except (ValueError, OSError):
            continue
    return soft


def add_station_accounts(files, station_ids: list[str]) -> dict[str, str]:
    """Give every station its broker account (bound to ``station-<id>``, its own role) in
    one change (``BrokerFiles.add_users``); returns the passwords."""
    return files.add_users(station_ids)


def cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def start_bridge(config: Path, log: Path) -> subprocess.Popen:
    """``qrgate-server bridge --worker-id 1``: the real ingest (records and status), as
    systemd runs it; returns once it has subscribed."""
    with open(log, "ab") as out:
        proc = subprocess.Popen(
            [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())", "-v",
             "bridge", "--config", str(config), "--worker-id", "1"],
            stdout=out, stderr=out, cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while b"subscribed" not in log.read_bytes():
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            raise RuntimeError(f"bench: the bridge worker did not subscribe; see {log}")
        time.sleep(0.05)  # polling its log for the line it writes once subscribed; bounded
    return proc


def stop_process(proc: subprocess.Popen | None) -> None:
    if proc is not None and proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)


class SimProcess:
    """A bench/fleet_sim.py process: its stations (or the bare subscriber), spoken to in
    JSON lines; ``wait`` takes the next answer of a kind, keeping the others for later."""

    def __init__(self, spec: dict, log: Path, *, subscriber: bool = False):
        args = [sys.executable, "-m", "bench.fleet_raw" if subscriber else "bench.fleet_sim"]
        with open(log, "ab") as err:
            self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err,
                                         cwd=REPO_ROOT, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        self.log = log
        self.events: queue.Queue = queue.Queue()
        self.kept: list[dict] = []
        threading.Thread(target=self._read, daemon=True).start()
        self.send(spec)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def _read(self) -> None:
        for line in self.proc.stdout:
            self.events.put(json.loads(line))
        self.events.put(None)

    def send(self, obj: dict) -> None:
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def wait(self, ev: str, timeout: float, **match) -> dict:
        def fits(e: dict) -> bool:
            return e.get("ev") == ev and all(e.get(k) == v for k, v in match.items())

        for e in self.kept:
            if fits(e):
                self.kept.remove(e)
                return e
        deadline = time.monotonic() + timeout
        while True:
            try:
                e = self.events.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                raise TimeoutError(f"bench: no {ev!r} from {self.log.name} within {timeout:.0f} s") from None
            if e is None:
                raise RuntimeError(f"bench: {self.log.name} exited; see {self.log}")
            if fits(e):
                return e
            self.kept.append(e)

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait(timeout=10)


def machine() -> dict:
    """What the figures were measured on."""
    import platform
    import ssl as ssl_module

    import paho.mqtt

    model = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("model name")), "")
    mem_kib = next((int(line.split()[1]) for line in Path("/proc/meminfo").read_text().splitlines()
                    if line.startswith("MemTotal:")), 0)
    from provisioning.broker import find_mosquitto

    version = subprocess.run([find_mosquitto(), "-h"], capture_output=True, text=True).stdout.split("\n")[0]
    return {"cores": os.cpu_count(), "cpu": model, "ram_gib": round(mem_kib / 2**20, 1),
            "kernel": platform.release(), "python": platform.python_version(), "paho": paho.mqtt.__version__,
            "openssl": ssl_module.OPENSSL_VERSION, "mosquitto": version.strip()}
