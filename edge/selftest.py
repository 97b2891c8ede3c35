"""`qrgate-edge selftest`: check every part of a station and say what is wrong in plain words.

Each check returns a ``Check``; a technician reads the lines top to bottom. Nothing here
changes the station's data: the outbox is opened read-only, the screen shows a test
pattern, the lights blink once. While the station runs (it holds its state folder's
lock) its camera or scanner, pins and screen are busy: selftest then reports the running
station's own view of them, from the health file it writes every housekeeping round.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import sqlite3
import ssl
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from edge.config import StationConfig
from qrgate.errors import QrgateError, UserError


@dataclass(frozen=True)
class Check:
    part: str
    status: str  # "ok", "warn" or "fail"
    message: str

    def line(self) -> str:
        return f"{self.status.upper():<4} {self.part:<8} {self.message}"


def check_storage(cfg: StationConfig) -> Check:
    state = cfg.state_dir
    if not state.is_dir():
        return Check("storage", "fail", f"state folder {state} does not exist (was the station provisioned?)")
    if not os.access(state, os.W_OK):
        return Check("storage", "fail", f"cannot write to {state}: the SD card may be read-only or worn out")
    free_mb = shutil.disk_usage(state).free // (1024 * 1024)
    if free_mb < cfg.station.min_free_mb:
        return Check("storage", "fail", f"only {free_mb} MB free on {state}; scans are refused below "
                                        f"{cfg.station.min_free_mb} MB: free space or replace the card")
    for name in ("station.key", "presence.secret"):
        path = state / name
        if path.exists() and stat.S_IMODE(path.stat().st_mode) & 0o077:
            return Check("storage", "fail", f"{path} can be read by other users: chmod 600 {path}")
    outbox = state / "outbox.sqlite3"
    waiting = 0
    if outbox.exists():
        try:
            db = sqlite3.connect(f"file:{outbox}?mode=ro", uri=True, timeout=5)
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            waiting = db.execute("SELECT count(*) FROM outbox").fetchone()[0]
            db.close()
        except sqlite3.Error as exc:
            return Check("storage", "fail", f"outbox {outbox} cannot be read: {exc}")
        if verdict != "ok":
            return Check("storage", "fail", f"outbox {outbox} is damaged ({verdict}); call support before anything else")
    damaged = sorted(p.name for p in state.glob("outbox.sqlite3.damaged-*") if not p.name.endswith(("-wal", "-shm")))
    if damaged:
        return Check("storage", "warn", f"{state}: a damaged outbox was set aside ({', '.join(damaged)}): "
                                        f"keep the file and call support; {waiting} record(s) waiting in the new one")
    return Check("storage", "ok", f"{state}: {free_mb} MB free, outbox intact, {waiting} record(s) waiting to be sent")


def check_clock(clock) -> Check:
    if clock.synced():
        return Check("clock", "ok", "synchronised with a time server")
    return Check("clock", "warn", "not synchronised yet: scans are kept and their times corrected later; "
                                  "check the network if this lasts")


def check_source(cfg: StationConfig, timeout: float = 5.0) -> Check:
    from edge.drivers.ports import Frame
    from edge.drivers.sources import open_source

    options = dict(cfg.source)
    kind = options.pop("kind")
    part = "scanner" if kind in ("hid", "serial") else "camera"
    try:
        source = open_source(kind, **options)
    except QrgateError as exc:
        return Check(part, "fail", f"{kind}: {exc}")
    if part == "scanner":
        source.close()
        return Check(part, "ok", f"{kind} scanner opened (scan a code to see it work)")
    got: list = []
    errors: list[BaseException] = []

    def first_frame():
        try:
            for capture in source.captures():
                got.append(capture)
                break
        except BaseException as exc:  # reported below, in words
            errors.append(exc)

    reader = threading.Thread(target=first_frame, daemon=True)
    reader.start()
    reader.join(timeout)
    source.close()
    if errors:
        return Check(part, "fail", f"{kind}: {errors[0]}")
    if not got:
        return Check(part, "fail", f"{kind}: no picture within {timeout:.0f} s: check the camera cable")
    frame = got[0]
    if isinstance(frame, Frame):
        h, w = frame.gray.shape
        return Check(part, "ok", f"{kind}: {w}x{h} picture received")
    return Check(part, "ok", f"{kind}: input received")


def _pins(cfg: StationConfig) -> str:
    fb = cfg.feedback
    return f"green GPIO{fb.green}, red GPIO{fb.red}, amber GPIO{fb.amber}, buzzer GPIO{fb.buzzer}"


def check_feedback(cfg: StationConfig) -> list[Check]:
    from edge.app import open_indicators, open_screen

    fb = cfg.feedback
    if fb.indicators == "none" and fb.panel == "none":
        return [Check("feedback", "warn", "no lights, buzzer or screen configured")]
    checks = []
    if fb.indicators != "none":
        try:
            indicators = open_indicators(cfg)
        except (QrgateError, OSError, ImportError) as exc:
            checks.append(Check("pins", "fail", str(exc)))
        else:
            from edge.outcome import Result

            indicators.signal(Result.ACCEPTED)
            checks.append(Check("pins", "ok", f"{_pins(cfg)}: the green light should blink now"))
            indicators.close()
    if fb.panel != "none":
        try:
            screen = open_screen(cfg)
        except (QrgateError, OSError, ImportError) as exc:
            checks.append(Check("screen", "fail", str(exc)))
        else:
            from edge.display.screens import render_idle
            from edge.outcome import StationState

            screen.show(render_idle(StationState(venue="Kiểm tra màn hình", online=True)))
            checks.append(Check("screen", "ok", f"{fb.panel} panel: the screen should read 'Kiểm tra màn hình'"))
            screen.close()
    return checks


def station_running(cfg: StationConfig) -> bool:
    """True while a station process holds the state folder's lock (edge/station_lock.py)."""
    if not cfg.state_dir.is_dir():
        return False  # nothing ever ran here; taking the lock would make the folder
    from edge.station_lock import station_lock

    try:
        with station_lock(cfg.state_dir):
            return False
    except UserError:
        return True
    except OSError:
        return False  # cannot tell (no permission for the lock): test the devices


def read_health(cfg: StationConfig, candidates: list[Path] | None = None) -> tuple[Path | None, dict | None]:
    """The running station's health file and its contents: the first of ``candidates``
    (``edge.housekeeping.health_file_candidates``) written by this station."""
    from edge.housekeeping import health_file_candidates

    for path in candidates if candidates is not None else health_file_candidates(cfg):
        try:
            health = json.loads(path.read_text())
        except (OSError, ValueError):
            continue
        if isinstance(health, dict) and health.get("station") == cfg.station.id:
            return path, health
    return None, None


# What each station fault means, for the technician (the screen shows "LỖI: ...").
FAULT_WORDS = {
    "storage": "storage fault: the disk is nearly full or a write failed",
    "camera": "camera fault: the camera cannot be opened or read",
    "scanner": "scanner fault: the scanner cannot be opened or read",
}


def _process_alive(pid) -> bool:
    try:
        os.kill(int(pid), 0)
    except PermissionError:
        return True  # alive, another user's
    except (OSError, TypeError, ValueError):
        return False
    return True


def check_running_station(cfg: StationConfig, candidates: list[Path] | None = None,
                          monotonic: Callable[[], float] = time.monotonic) -> list[Check]:
    """The camera or scanner, pins and screen as the running station sees them.

    Opening them here would fail (a camera is busy, a grabbed scanner, pins taken) or
    disturb the station, so nothing is opened: the station's health file is read. A
    fault in it, or a health file not rewritten for a while, is a failure.
    """
    from edge.housekeeping import health_file_candidates

    kind = str(cfg.source.get("kind", ""))
    part = "scanner" if kind in ("hid", "serial") else "camera"
    candidates = candidates if candidates is not None else health_file_candidates(cfg)
    path, health = read_health(cfg, candidates)
    if health is None:
        where = ", ".join(str(c) for c in candidates)
        return [Check(part, "warn", f"in use by the running station, which wrote no health file ({where}): "
                                    "stop it (systemctl stop qrgate-edge) to test the devices")]
    # The station rewrites it every housekeeping round; the watchdog allows this long.
    # Its monotonic time says how old it is: a file of an earlier boot has a time ahead of
    # this boot's clock or far behind it. (The boot id is no test: a unit with
    # ProtectKernelTunables= in a container reads another boot id than a shell does.)
    stale_after = max(3 * cfg.station.housekeeping_s, 60.0)
    age = monotonic() - float(health.get("mono_s", 0.0))
    if not 0 <= age <= stale_after or not _process_alive(health.get("pid")):
        return [Check(part, "fail", f"in use by the running station (pid {health.get('pid')}), whose health file "
                                    f"{path} is out of date: it may hang; see journalctl -u qrgate-edge")]
    fault = str(health.get("fault") or "")
    last = health.get("last_capture_age_s")
    thing = "frame" if part == "camera" else "scan"
    view = [
        "scanning" if health.get("scanning") else "not scanning",
        FAULT_WORDS.get(fault, f"fault '{fault}'") if fault else "no fault",
        f"last {thing} {last + age:.1f} s ago" if last is not None else f"no {thing} yet",  # as of now
    ]
    checks = [Check(part, "fail" if fault or not health.get("scanning") else "ok",
                    f"in use by the running station: {', '.join(view)}")]
    missing = health.get("missing") or {}
    fb = cfg.feedback
    if fb.indicators != "none":
        problem = missing.get("lights")
        checks.append(Check("pins", "fail", f"the running station cannot drive them: {problem}") if problem
                      else Check("pins", "ok", f"{_pins(cfg)}: in use by the running station"))
    if fb.panel != "none":
        problem = missing.get("screen")
        checks.append(Check("screen", "fail", f"the running station has no screen: {problem}") if problem
                      else Check("screen", "ok", f"{fb.panel} panel: in use by the running station"))
    return checks


def check_broker(cfg: StationConfig, timeout: float = 10.0) -> Check:
    import paho.mqtt.client as mqtt

    from qrgate.mqtt import make_client

    m = cfg.mqtt
    where = f"{m.host}:{m.port}"
    try:
        with socket.create_connection((m.host, m.port), timeout=timeout):
            pass
    except OSError as exc:
        return Check("broker", "fail", f"cannot reach {where} ({exc.strerror or exc}): is the network up, "
                                       "is the server address right, is the server running?")
    # This station's password opens the broker only under its own client id, which a
    # running station holds: a second login under it would take the station's connection.
    if station_running(cfg) and _running_station_online(cfg, timeout):
        return Check("broker", "ok", f"{where}: the running station is connected over TLS as {m.username}")
    try:
        # The one client id this station's password opens (provisioning/broker.py).
        client, props = make_client(f"station-{cfg.station.id}", m, cfg.base, persistent=False)
    except QrgateError as exc:
        return Check("broker", "fail", str(exc))
    result: list = []
    client.on_connect = lambda c, u, f, rc, p: result.append(rc)
    try:
        client.connect(m.host, m.port, keepalive=m.keepalive, properties=props)
    except ssl.SSLError as exc:
        return Check("broker", "fail", f"{where}: the server's certificate is not trusted ({exc.reason}); "
                                       "check ca_file and the server name")
    except OSError as exc:
        return Check("broker", "fail", f"{where}: {exc}")
    client.loop_start()
    deadline = time.monotonic() + timeout
    while not result and time.monotonic() < deadline:
        time.sleep(0.05)  # waiting for the broker's answer, bounded by the deadline
    client.disconnect()
    client.loop_stop()
    if not result:
        return Check("broker", "fail", f"{where} does not answer MQTT within {timeout:.0f} s")
    rc = result[0]
    if rc.is_failure:
        if rc.value in (134, 135, 4, 5):
            return Check("broker", "fail", f"{where} refused this station's name or password ({rc}): "
                                           "re-enrol the station")
        return Check("broker", "fail", f"{where} refused the connection: {rc}")
    return Check("broker", "ok", f"{where}: connected over TLS as {m.username}")


def _running_station_online(cfg: StationConfig, timeout: float) -> bool:
    """Whether the running station says it is connected, in a health file it wrote after
    this question (it rewrites it every housekeeping round)."""
    asked = time.monotonic()
    deadline = asked + min(timeout, 2 * cfg.station.housekeeping_s + 1)
    while True:
        _, health = read_health(cfg)
        if health is not None and health.get("online"):
            return True
        if health is not None and float(health.get("mono_s", 0.0)) >= asked or time.monotonic() > deadline:
            return False
        time.sleep(0.2)  # until its next round, bounded by the deadline


def run_selftest(cfg: StationConfig, clock=None, *, skip: tuple[str, ...] = ()) -> list[Check]:
    from edge.clock import SystemClock

    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("storage", lambda: check_storage(cfg)),
        ("clock", lambda: check_clock(clock or SystemClock())),
    ]
    if station_running(cfg):
        # Its devices are busy: ask the station instead of opening them (false failures).
        steps.append(("station", lambda: check_running_station(cfg)))
    else:
        steps += [("source", lambda: check_source(cfg)), ("feedback", lambda: check_feedback(cfg))]
    steps.append(("broker", lambda: check_broker(cfg)))
    checks: list[Check] = []
    for name, step in steps:
        if name in skip:
            continue
        try:
            found = step()
        except Exception as exc:  # a check must report, never crash the tool
            found = Check(name, "fail", f"unexpected error: {exc!r}")
        checks.extend(found if isinstance(found, list) else [found])
    return checks

