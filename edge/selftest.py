"""`qrgate-edge selftest`: check every part of a station and say what is wrong in plain words.

Each check returns a ``Check``; a technician reads the lines top to bottom. Nothing here
changes the station's data: the outbox is opened read-only, the screen shows a test
pattern, the lights blink once.
"""

from __future__ import annotations

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

from edge.config import StationConfig
from qrgate.errors import QrgateError


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


def check_feedback(cfg: StationConfig) -> list[Check]:
    from edge.app import open_feedback

    fb = cfg.feedback
    if fb.indicators == "none" and fb.panel == "none":
        return [Check("feedback", "warn", "no lights, buzzer or screen configured")]
    try:
        loop = open_feedback(cfg)
    except QrgateError as exc:
        return [Check("feedback", "fail", str(exc))]
    checks = []
    if loop.indicators is not None:
        from edge.outcome import Result

        loop.indicators.signal(Result.ACCEPTED)
        checks.append(Check("pins", "ok", f"green GPIO{fb.green}, red GPIO{fb.red}, amber GPIO{fb.amber}, "
                                          f"buzzer GPIO{fb.buzzer}: the green light should blink now"))
    if loop.screen is not None:
        from edge.display.screens import render_idle
        from edge.outcome import StationState

        loop.screen.show(render_idle(StationState(venue="Kiểm tra màn hình", online=True)))
        checks.append(Check("screen", "ok", f"{fb.panel} panel: the screen should read 'Kiểm tra màn hình'"))
    loop.close()
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
    try:
        client, props = make_client(f"selftest-{cfg.station.id}-{os.getpid()}", m, cfg.base, persistent=False)
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


def run_selftest(cfg: StationConfig, clock=None, *, skip: tuple[str, ...] = ()) -> list[Check]:
    from edge.clock import SystemClock

    steps: list[tuple[str, Callable[[], Check | list[Check]]]] = [
        ("storage", lambda: check_storage(cfg)),
        ("clock", lambda: check_clock(clock or SystemClock())),
        ("source", lambda: check_source(cfg)),
        ("feedback", lambda: check_feedback(cfg)),
        ("broker", lambda: check_broker(cfg)),
    ]
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

