"""Telling systemd how the station is: ready, status line, and a watchdog fed only while
the scan pipeline, the sender and the housekeeping are really alive.

With `Type=notify` and `WatchdogSec=` in the unit, systemd restarts a station whose
pipeline hangs (a camera driver stuck in a read), not only one that crashed.
"""

from __future__ import annotations

import logging
import os
import threading
import time

logger = logging.getLogger(__name__)

# A camera gives frames many times a second: none for this long means the pipeline hangs.
CAMERA_STALL_S = 30.0


def watchdog_interval() -> float | None:
    """Half of systemd's WatchdogSec (from WATCHDOG_USEC), or None without a watchdog."""
    usec = os.environ.get("WATCHDOG_USEC")
    pid = os.environ.get("WATCHDOG_PID")
    if not usec or (pid and pid != str(os.getpid())):
        return None
    try:
        return int(usec) / 2_000_000
    except ValueError:
        return None


class ServiceNotifier:
    """Sends READY, STATUS and WATCHDOG to systemd for one Station (no-op without systemd)."""

    def __init__(self, station, notifier=None, clock=time.monotonic):
        if notifier is None:
            import sdnotify

            notifier = sdnotify.SystemdNotifier()
        self.station = station
        self.notifier = notifier
        self.clock = clock
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def alive(self) -> tuple[bool, str]:
        """Is every part that must run actually running? (ok, reason if not)"""
        return self._judge(self.station.liveness())

    def _judge(self, live) -> tuple[bool, str]:
        now = self.clock()
        if live.pipeline_stopped:
            return False, "scan pipeline stopped"
        if not live.sender_alive:
            return False, "sender thread stopped"
        if now - live.last_housekeeping > max(3 * live.housekeeping_s, 60.0):
            return False, "housekeeping stalled"
        if live.watches_frames and now - live.last_capture > CAMERA_STALL_S:
            return False, f"no camera frame for {now - live.last_capture:.0f} s"
        return True, ""

    def ready(self) -> None:
        self.notifier.notify("READY=1\nSTATUS=scanning")

    def start(self) -> None:
        interval = watchdog_interval()
        self.ready()
        if interval is None:
            return
        self._thread = threading.Thread(target=self._run, args=(interval,), name="watchdog", daemon=True)
        self._thread.start()

    def beat(self) -> bool:
        live = self.station.liveness()
        ok, reason = self._judge(live)
        if ok:
            # `systemctl status qrgate-edge` shows this line: a fault belongs in it.
            self.notifier.notify(f"WATCHDOG=1\nSTATUS=backlog {live.backlog}"
                                 f"{', offline' if not live.online else ''}"
                                 f"{f', {live.fault} fault' if live.fault else ''}")
        else:
            logger.error("not feeding the watchdog: %s", reason)
            self.notifier.notify(f"STATUS={reason}")
        return ok

    def _run(self, interval: float) -> None:
        while not self._stop.wait(interval):
            self.beat()

    def stop(self) -> None:
        self._stop.set()
        self.notifier.notify("STOPPING=1")
