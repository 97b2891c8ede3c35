"""Is the release on trial healthy? What the unit, the station and the server say, and
the judgement over them.

A release is kept when, within ``trial_s`` of its start:

1. READY: the unit is active and running, its main process from the new release, within
   ``ready_s`` (``Type=notify``: systemd says active only after the station's READY=1);
2. the watchdog fed: it stays so for ``steady_s`` (more than ``WatchdogSec``) with no
   restart, and systemd saw a WATCHDOG=1 from the new process;
3. a heartbeat acked by the server: the server's answer to the updater's report says it
   stored a status from this station, carrying the new version, after the switch;
4. a record acked by the server: when records were waiting (the station's backlog, or
   check-ins the server stored since the switch), the server stored at least one more
   check-in than before the switch. A gate nobody passed during the trial has no
   record to send: then 1-3 decide, and the status says so.

Anything else by the deadline (or a stop or restart after READY) is a rollback, and the
reason names the first thing that failed.
"""

from __future__ import annotations

import json
import logging
import subprocess
from dataclasses import dataclass
from pathlib import Path

logger = logging.getLogger(__name__)

SHOW_PROPERTIES = ("ActiveState", "SubState", "MainPID", "NRestarts", "ExecMainStartTimestampMonotonic",
                   "WatchdogTimestampMonotonic", "StatusText")
HEALTH_FILE = Path("/run/qrgate/health.json")


@dataclass(frozen=True)
class Sample:
    """One look at the station during a trial (``at``: the updater's monotonic clock)."""

    at: float
    state: str  # "active/running", "activating/start", "activating/auto-restart", ...
    in_release: bool  # the main process runs from the release on trial
    restarts: int
    watchdog_fed: bool  # systemd saw WATCHDOG=1 after this process started
    server: dict | None = None  # the server's answer to the report, None if it did not answer
    backlog: int | None = None  # the running station's outbox backlog (its health file)

    @property
    def running(self) -> bool:
        return self.state == "active/running" and self.in_release


@dataclass
class TrialWatch:
    """Accumulates samples of one trial and judges it (no clock inside: ``now`` is given)."""

    version: str
    started: float
    server_ms_at_switch: int  # the server's clock when the switch was made
    checkins_at_switch: int | None
    ready_s: float
    steady_s: float
    trial_s: float
    ready_at: float | None = None
    restarts_at_ready: int = 0
    broken: str = ""
    heartbeat: bool = False
    pending: bool = False
    record_acked: bool = False
    last_state: str = ""
    fed: bool = False
    # Why a rollback was decided, as a code the fleet page translates (qrgate/updates.py CAUSES).
    cause: str = ""

    def feed(self, s: Sample) -> None:
        self.last_state = s.state
        if self.ready_at is None:
            if s.running:
                self.ready_at, self.restarts_at_ready = s.at, s.restarts
        elif not s.running or s.restarts != self.restarts_at_ready:
            self.broken = self.broken or (f"stopped or restarted after READY (now {s.state}, "
                                          f"{s.restarts - self.restarts_at_ready} restart(s)): watchdog or crash")
        if self.ready_at is not None and s.running:
            self.fed = s.watchdog_fed
        if s.backlog:
            self.pending = True
        answer = s.server
        if answer:
            if answer.get("fw") == self.version and (answer.get("last_seen_ms") or 0) > self.server_ms_at_switch:
                self.heartbeat = True
            checkins = answer.get("checkins")
            if isinstance(checkins, int) and self.checkins_at_switch is not None and \
                    checkins > self.checkins_at_switch:
                self.pending = self.record_acked = True

    def verdict(self, now: float) -> tuple[str, str]:
        """("keep", detail), ("wait", what is missing) or ("rollback", reason)."""
        if self.broken:
            self.cause = "restarted"
            return "rollback", self.broken
        if self.ready_at is None:
            if now - self.started > self.ready_s:
                self.cause = "not_ready"
                return "rollback", f"not READY within {self.ready_s:.0f} s (the unit is {self.last_state or 'unknown'})"
            return "wait", "READY"
        missing = []
        if now - self.ready_at < self.steady_s or not self.fed:
            missing.append(("no_watchdog", f"the watchdog was not fed for {self.steady_s:.0f} s after READY"))
        if not self.heartbeat:
            missing.append(("no_heartbeat", "no heartbeat of this version reached the server"))
        if self.pending and not self.record_acked:
            missing.append(("no_record", "records were waiting and none was acked by the server"))
        if not missing:
            detail = "READY, watchdog fed, heartbeat acked, " + (
                "a record acked" if self.record_acked else "no record was waiting to be sent")
            return "keep", detail
        if now - self.started > self.trial_s:
            self.cause = missing[0][0]
            return "rollback", f"not healthy within {self.trial_s:.0f} s: {missing[0][1]}"
        return "wait", "; ".join(text for _, text in missing)


def unit_sample(unit: str, version: str, at: float, runner=subprocess.run) -> Sample:
    """What systemd says about the unit now."""
    out = runner(["systemctl", "show", unit, "-p", ",".join(SHOW_PROPERTIES)], capture_output=True, text=True,
                 timeout=30)
    props = dict(line.split("=", 1) for line in out.stdout.splitlines() if "=" in line)
    pid = int(props.get("MainPID", "0") or 0)
    in_release = False
    if pid:
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")
            in_release = any(f"/releases/{version}/".encode() in part for part in cmdline[:2])
        except OSError:
            in_release = False
    started = int(props.get("ExecMainStartTimestampMonotonic", "0") or 0)
    fed_at = int(props.get("WatchdogTimestampMonotonic", "0") or 0)
    return Sample(at=at, state=f"{props.get('ActiveState', '?')}/{props.get('SubState', '?')}",
                  in_release=in_release, restarts=int(props.get("NRestarts", "0") or 0),
                  watchdog_fed=bool(pid) and fed_at > started > 0, backlog=station_backlog(pid))


def station_backlog(pid: int, path: Path = HEALTH_FILE) -> int | None:
    """The backlog the running station wrote into its health file (None if not this process's)."""
    try:
        health = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    if not isinstance(health, dict) or health.get("pid") != pid:
        return None
    backlog = health.get("backlog")
    return backlog if isinstance(backlog, int) else None


def restart_unit(unit: str, runner=subprocess.run) -> None:
    """Restart the station's unit without waiting for READY (the trial watches for it)."""
    runner(["systemctl", "reset-failed", unit], capture_output=True, timeout=60)
    done = runner(["systemctl", "restart", "--no-block", unit], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        logger.error("systemctl restart %s: %s", unit, done.stderr.strip())
