"""One run of the station's updater: finish what a power cut interrupted, look for a
newer release, install it beside the running one, switch, watch the trial, then keep it
or switch back (docs/updates.md, "On the station").

Every step that changes what boots is written to the journal first, so the next run
(at boot, by the timer) knows where the last one stopped: a switch made but not judged
is judged again; a rollback begun is finished.
"""

from __future__ import annotations

import json
import logging
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any, Callable

from edge.update.health import Sample, TrialWatch, restart_unit, unit_sample
from edge.update.install import InstallFailed, install_release
from edge.update.layout import CURRENT, GOOD, Layout, read_json, write_json
from edge.update.settings import UpdateSettings
from edge.update.verify import ReleaseChecker, ServerUnreachable, UpdateRefused
from qrgate.errors import QrgateError
from qrgate.updates import machine_arch, sign_report, version_key

logger = logging.getLogger(__name__)

JOURNAL = "journal.json"
STATUS = "status.json"
MAX_ATTEMPTS = 3  # trials cut by a power cut before the release is given up
MAX_ROUNDS = 4  # checks in one run when notices keep arriving during a check
# Outcomes shown until something new happens (a later check finding nothing keeps them).
LASTING = ("kept", "rolled_back", "failed")


class Updater:
    """The updater of one station (see the module docstring)."""

    def __init__(self, settings: UpdateSettings, *, clock: Callable[[], float] = time.monotonic,
                 sleep: Callable[[float], None] = time.sleep, sample=unit_sample, restart=restart_unit,
                 reporter=None, checker_factory=None):
        self.settings = settings
        self.s = settings.update
        self.layout = Layout(settings.prefix)
        self.state_dir = settings.state_dir
        self.clock, self.sleep = clock, sleep
        self._sample, self._restart = sample, restart
        self.arch = self.s.arch or machine_arch()
        self._station = None
        self.server_url = self.s.server_url
        self._reporter = reporter
        self._checker_factory = checker_factory

    # --- files ---
    @property
    def journal_path(self) -> Path:
        return self.state_dir / JOURNAL

    @property
    def status_path(self) -> Path:
        return self.state_dir / STATUS

    def status(self) -> dict[str, Any]:
        return read_json(self.status_path) or {"n": 0, "failed": []}

    def _set_status(self, state: str, version: str = "", reason: str = "", **extra) -> dict[str, Any]:
        status = self.status()
        if state == "idle" and status.get("state") in LASTING:
            # Nothing new: the fleet page goes on showing the last outcome and its reason.
            status.update({"checked": int(time.time()), "running": self.layout.current() or ""})
            write_json(self.status_path, status)
            return status
        status.update({"state": state, "version": version, "reason": reason, "running": self.layout.current() or "",
                       "good": self.layout.good() or "", "at": int(time.time()), "refusal": "", "cause": "", **extra})
        write_json(self.status_path, status)
        log = logger.warning if state in ("rolled_back", "refused", "failed") else logger.info
        log("update %s %s %s", state, version, reason)
        return status

    # --- the station's identity and the server ---
    def _station_config(self):
        if self._station is None:
            from edge.config import load_station_config

            self._station = load_station_config(self.s.station_config)
            self.server_url = self.server_url or self._station.station.server_url
        return self._station

    def report(self, status: dict[str, Any] | None = None) -> dict | None:
        """Send the status (read from its file unless given), signed by the station's key;
        the server's answer, or None. The report's number is counted into ``status``."""
        if status is None:
            status = self.status()
        if self._reporter is not None:
            return self._reporter(status)
        try:
            station = self._station_config()
        except QrgateError as exc:
            logger.error("cannot report: %s", exc)
            return None
        key_file = station.state_dir / "station.key"
        if not key_file.exists() or not self.server_url:
            return None
        from qrgate.keyfiles import load_or_create_key

        status["n"] = int(status.get("n", 0)) + 1
        write_json(self.status_path, status)
        update = {k: status.get(k, "") for k in ("state", "version", "reason", "running", "good", "refusal", "cause")}
        body = sign_report(load_or_create_key(key_file), {"v": 1, "station_id": station.station.id, "n": status["n"],
                                                          "update": update})
        request = urllib.request.Request(self.server_url.rstrip("/") + "/api/releases/report",
                                         data=json.dumps(body).encode(), method="POST",
                                         headers={"Content-Type": "application/json"})
        try:
            with urllib.request.urlopen(request, timeout=15) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, OSError, ValueError) as exc:
            logger.info("the server did not take the update report: %s", exc)
            return None

    def checker(self) -> ReleaseChecker:
        if self._checker_factory is not None:
            return self._checker_factory()
        if not self.server_url:
            self._station_config()
        if not self.server_url:
            raise QrgateError("no server address: set [update] server_url or enrol the station")
        root = Path(self.s.root_file)
        if not root.exists():  # none installed: the enrolled server's, taken once (verify.first_root)
            root = self.state_dir / "first-root.json"
        return ReleaseChecker(root, self.state_dir / "metadata", self.state_dir / "downloads",
                              self.server_url, arch=self.arch)

    # --- one run ---
    def run(self) -> dict[str, Any]:
        """``run_once``, again while a release notice arrived during the last check.

        systemd starts the updater once for a notice that arrives while it runs (at boot,
        the check may run before the network is up and the notice come just after): the
        notice would otherwise wait for the timer, hours later."""
        notice = Path(self.s.notice_file)
        status: dict[str, Any] = {}
        for _ in range(MAX_ROUNDS):
            started = time.time()
            status = self.run_once()
            if status.get("state") in ("rolled_back", "failed", "refused"):
                return status
            try:
                again = notice.stat().st_mtime >= started - 1
            except OSError:
                again = False
            if not again:
                return status
            logger.info("a release notice arrived during the check: looking again")
        return status

    def run_once(self) -> dict[str, Any]:
        """Finish an interrupted update, then look for a newer release; return the status."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        resumed = self.recover()
        if resumed is not None:
            return resumed
        running = self.layout.current()
        if running is None:
            return self._set_status("failed", reason=f"{self.layout.prefix}/current is not a release link: "
                                                     f"install with provisioning/install.sh first")
        if self.layout.good() is None:
            self.layout.point(GOOD, running)
        # Which releases this station's waves allow (server/releases/waves.py): asked
        # first, in a signed report of where it stands. No answer, no new release.
        status = self.status()
        if not status.get("state"):
            status = self._set_status("idle", running, reason="first check")
        answer = self.report(status)
        if not isinstance(answer, dict):
            return self._set_status("unreachable", reason="the server did not answer the update report "
                                                          "(a release is taken only when its wave allows)")
        allowed = answer.get("allowed") if isinstance(answer.get("allowed"), list) else None
        try:
            checker = self.checker()
            offer = checker.newest(running, skip=set(status.get("failed", [])), allowed=allowed)
        except UpdateRefused as exc:
            return self._reported("refused", reason=f"{exc.code}: {exc.detail}", refusal=exc.code)
        except ServerUnreachable as exc:
            return self._set_status("unreachable", reason=str(exc))
        except QrgateError as exc:
            return self._reported("failed", reason=str(exc))
        if offer is None:
            return self._reported("idle", running, reason="no newer release" if allowed is None else
                                  "no newer release in this station's waves")
        self._set_status("downloading", offer.version)
        try:
            bundle = checker.download(offer)
        except UpdateRefused as exc:
            return self._reported("refused", offer.version, reason=f"{exc.code}: {exc.detail}", refusal=exc.code)
        except ServerUnreachable as exc:
            return self._set_status("unreachable", offer.version, reason=str(exc))
        self._reported("installing", offer.version)
        try:
            install_release(bundle, self.layout, offer.version, self.arch,
                            self.state_dir / f"install-{offer.version}.log")
        except (InstallFailed, OSError) as exc:
            self._remember_failed(offer.version)
            return self._reported("failed", offer.version, reason=str(exc)[:300])
        return self.switch_and_try(offer.version, running)

    def _reported(self, state: str, version: str = "", reason: str = "", **extra) -> dict[str, Any]:
        status = self._set_status(state, version, reason, **extra)
        self.report(status)
        return status

    def _remember_failed(self, version: str) -> None:
        status = self.status()
        failed = [v for v in status.get("failed", []) if v != version] + [version]
        status["failed"] = failed[-20:]
        write_json(self.status_path, status)

    # --- switching ---
    def switch_and_try(self, version: str, previous: str) -> dict[str, Any]:
        answer = self.report(self._set_status("trying", version, reason=f"switched from {previous}")) or {}
        journal = {"phase": "trying", "version": version, "previous": previous, "attempts": 1,
                   "server_ms": answer.get("server_ms", 0), "checkins": answer.get("checkins")}
        write_json(self.journal_path, journal)
        self.layout.point(CURRENT, version)
        logger.info("switched to %s (from %s): restarting %s", version, previous, self.s.unit)
        self._restart(self.s.unit)
        return self.watch(journal)

    def watch(self, journal: dict[str, Any]) -> dict[str, Any]:
        version = journal["version"]
        started = self.clock()
        first = self._sample(self.s.unit, version, started)
        watch = TrialWatch(version=version, started=started, server_ms_at_switch=int(journal.get("server_ms") or 0),
                           checkins_at_switch=journal.get("checkins"), ready_s=self.s.ready_s,
                           steady_s=self.s.steady_s, trial_s=self.s.trial_s)
        watch.feed(first)
        while True:
            verdict, detail = watch.verdict(self.clock())
            if verdict == "keep":
                return self.keep(version, detail)
            if verdict == "rollback":
                return self.rollback(journal, detail, watch.cause)
            self.sleep(self.s.poll_s)
            now = self.clock()
            sample = self._sample(self.s.unit, version, now)
            answer = self.report() if sample.running else None
            watch.feed(Sample(**{**sample.__dict__, "server": answer}))

    def keep(self, version: str, detail: str) -> dict[str, Any]:
        self.layout.point(GOOD, version)
        self.journal_path.unlink(missing_ok=True)
        removed = self.layout.prune(self.s.keep_releases, version_key)
        if removed:
            logger.info("removed old releases: %s", ", ".join(removed))
        return self._reported("kept", version, reason=detail)

    def rollback(self, journal: dict[str, Any], reason: str, cause: str = "interrupted") -> dict[str, Any]:
        version, previous = journal["version"], journal["previous"]
        write_json(self.journal_path, {**journal, "phase": "rolling_back", "reason": reason, "cause": cause})
        self._remember_failed(version)
        logger.error("release %s is not healthy (%s): switching back to %s", version, reason, previous)
        self.layout.point(CURRENT, previous)
        self._restart(self.s.unit)
        self.journal_path.unlink(missing_ok=True)
        return self._reported("rolled_back", version, reason=reason, cause=cause)

    def recover(self) -> dict[str, Any] | None:
        """Finish what an interrupted run left (power cut, reboot); None when nothing was."""
        journal = read_json(self.journal_path)
        if journal is None:
            return None
        version, previous = journal.get("version", ""), journal.get("previous", "")
        current, good = self.layout.current(), self.layout.good()
        if journal.get("phase") == "rolling_back":
            if current != previous:
                self.layout.point(CURRENT, previous)
            self._restart(self.s.unit)
            self.journal_path.unlink(missing_ok=True)
            return self._reported("rolled_back", version, reason=journal.get("reason", "rolled back"),
                                  cause=journal.get("cause", "interrupted"))
        if good == version:  # kept just before the cut
            self.journal_path.unlink(missing_ok=True)
            return self._reported("kept", version, reason="kept before a restart")
        if current != version:  # the cut came before the switch: nothing changed
            self.journal_path.unlink(missing_ok=True)
            return None
        attempts = int(journal.get("attempts", 1)) + 1
        if attempts > MAX_ATTEMPTS:
            return self.rollback(journal, f"the trial was cut {attempts - 1} times (power or reboot)")
        journal = {**journal, "attempts": attempts}
        write_json(self.journal_path, journal)
        logger.warning("resuming the trial of %s (attempt %d) after an interruption", version, attempts)
        self._set_status("trying", version, reason=f"trial resumed after a restart (attempt {attempts})")
        return self.watch(journal)
