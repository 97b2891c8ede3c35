"""The station's housekeeping jobs: clock correction, the free-space guard, the server's
pushed config, and the health file that selftest reads while the station runs."""

from __future__ import annotations

import json
import logging
import os
import shutil
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from edge.config import StationConfig
from edge.pushed_config import PushedConfig, PushedConfigFile, parse_pushed_config
from edge.queue.outbox import Outbox, OutboxError
from qrgate.errors import RecordError

# The station's log lines keep the name they always had (journald filters, the boot rig).
logger = logging.getLogger("edge.app")

# What the running station says about itself, every housekeeping round, for
# `qrgate-edge selftest` (which must not open the devices the station holds).
HEALTH_FILE = "health.json"
# systemd's RuntimeDirectory=qrgate; a shell (selftest) has no $RUNTIME_DIRECTORY.
SYSTEM_RUN_DIR = Path("/run/qrgate")


def record_clock_correction(clock: Any, outbox: Outbox) -> bool:
    """If the clock has synchronised during a boot that recorded unsynced check-ins,
    record the boot's wall/monotonic offset so the server can correct their times.

    True if a clock record was written (the caller wakes the publisher).
    """
    now = clock.now()
    if outbox.unsynced_boot() != now.boot_id or not clock.synced():
        return False
    wall_ms, mono_ms = int(now.wall_s * 1000), int(now.mono_s * 1000)
    fields = {"type": "clock", "ts": wall_ms, "mono": mono_ms, "boot": now.boot_id, "sync": True,
              "base": wall_ms - mono_ms}
    try:
        outbox.append(fields, person_hash=None, now=now)
    except OutboxError as exc:
        logger.error("cannot record the clock correction: %s", exc)
        return False
    logger.info("clock synchronised: check-ins of this boot will be corrected by the server")
    return True


class FreeSpaceGuard:
    """Raises the storage fault while the disk is nearly full; clears it when space returns.

    ``low`` is True while scans must be refused for want of space.
    """

    def __init__(self, state_dir: Path, min_free_mb: int):
        self.state_dir = state_dir
        self.min_free_mb = min_free_mb
        self.low = False

    def check(self, fault: str, set_fault: Callable[[str], None]) -> bool:
        """Look at the free space; ``fault`` is the one showing, ``set_fault`` changes it."""
        try:
            free_mb = shutil.disk_usage(self.state_dir).free // (1024 * 1024)
        except OSError as exc:
            logger.error("cannot read free space of %s: %s", self.state_dir, exc)
            return False
        low = free_mb < self.min_free_mb
        if low and fault != "storage":
            logger.error("only %d MB free on %s: refusing scans until space returns", free_mb, self.state_dir)
            set_fault("storage")
        elif not low and fault == "storage" and self.low:
            logger.warning("free space is back (%d MB): accepting scans again", free_mb)
            set_fault("")
        self.low = low
        return low


class PushedConfigInbox:
    """The server's config messages: verified, kept on disk, and only a newer one taken."""

    def __init__(self, config: StationConfig, pass_keys: dict[str, Any]):
        self.station_id = config.station.id
        self.pass_keys = pass_keys
        self.file = PushedConfigFile(config.state_dir / "pushed-config.json")
        self.current: PushedConfig | None = None

    def load_stored(self) -> PushedConfig | None:
        """The config kept from an earlier run, if any and still valid."""
        return self.file.load(self.station_id, self.pass_keys)

    def receive(self, payload: bytes) -> PushedConfig | None:
        """A config message (any thread): the config to apply, or None to ignore it."""
        try:
            pushed = parse_pushed_config(payload, self.station_id, self.pass_keys)
        except RecordError as exc:
            logger.error("ignoring config from the broker: %s", exc)
            return None
        if self.current is not None and pushed.version <= self.current.version:
            return None
        try:
            self.file.save(payload)
        except OSError as exc:
            logger.error("cannot keep the new config on disk (%s); applying it for now", exc)
        return pushed


class HealthFile:
    """The running station's health, replaced atomically (a reader never sees half of it)."""

    def __init__(self, path: Path):
        self.path = path
        self._error = ""

    def write(self, health: dict[str, Any]) -> None:
        path = self.path
        try:
            handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(handle, "w") as temp_file:
                    json.dump(health, temp_file)
                os.replace(temp_name, path)  # no fsync: a lost update is rewritten in seconds
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            if str(exc) != self._error:  # once, not every few seconds
                logger.error("cannot write the health file %s: %s", path, exc)
            self._error = str(exc)
            return
        self._error = ""

    def remove(self) -> None:
        """A stopped station reports nothing."""
        try:
            self.path.unlink(missing_ok=True)
        except OSError:
            pass


def health_file(config: StationConfig, environ: Mapping[str, str] = os.environ) -> Path:
    """Where the running station writes its health: systemd's runtime directory
    ($RUNTIME_DIRECTORY, /run/qrgate for the unit; the first if it lists several), else
    the state folder."""
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    return (Path(runtime) if runtime else config.state_dir) / HEALTH_FILE


def health_file_candidates(config: StationConfig, environ: Mapping[str, str] = os.environ,
                           system_run_dir: Path = SYSTEM_RUN_DIR) -> list[Path]:
    """Where selftest looks for the running station's health file, first match wins:
    $RUNTIME_DIRECTORY, /run/qrgate (selftest from a shell has no $RUNTIME_DIRECTORY),
    then the state folder (a station run by hand)."""
    runtime = environ.get("RUNTIME_DIRECTORY", "").split(":")[0]
    paths = [Path(runtime) / HEALTH_FILE] if runtime else []
    paths += [system_run_dir / HEALTH_FILE, config.state_dir / HEALTH_FILE]
    return list(dict.fromkeys(paths))
