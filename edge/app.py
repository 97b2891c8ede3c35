"""The station's composition root: the one place that picks drivers and wires the stages.

    source -> decoder -> payload parser -> check-in policy -> signed outbox -> publisher
                                                 |
                                                 +-> Outcome -> feedback (lights, buzzer, screen)

Data flows one way; feedback and other listeners only receive Outcome/StationState.
The scan pipeline is in edge/pipeline.py, the housekeeping jobs in edge/housekeeping.py.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections import Counter
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from typing import Any

from edge.clock import SystemClock, read_boot_id
from edge.config import StationConfig
from edge.drivers.ports import Capture, Source
from edge.feedback_devices import FeedbackDevices, open_indicators, open_screen
from edge.housekeeping import (
    FreeSpaceGuard,
    HealthFile,
    PushedConfigInbox,
    health_file,
    health_file_candidates,
    record_clock_correction,
)
from edge.outcome import Outcome, StationState
from edge.pipeline import ScanPipeline
from edge.pushed_config import PushedConfig
from edge.queue.outbox import Outbox
from edge.queue.publisher import Publisher
from edge.station_lock import station_lock
from edge.update.notice import ReleaseNotice
from qrgate import protocol
from qrgate.errors import ConfigError, DriverError, DriverUnavailable, UserError
from qrgate.keyfiles import load_or_create_key, load_or_create_secret
from qrgate.personal_pass import key_id

logger = logging.getLogger(__name__)

__all__ = ["STATION_KEY_FILE", "FeedbackDevices", "Liveness", "Station", "health_file", "health_file_candidates",
           "open_indicators", "open_screen"]

STATION_KEY_FILE = "station.key"

Listener = Callable[[Outcome | StationState], None]


@dataclass(frozen=True)
class Liveness:
    """What the systemd watchdog (edge/service.py) needs to know about the station."""

    pipeline_stopped: bool  # run() was entered and its thread has ended
    sender_alive: bool
    last_housekeeping: float  # time.monotonic() of the last round
    housekeeping_s: float  # how often housekeeping should run
    last_capture: float  # time.monotonic() of the last capture (or of the start)
    watches_frames: bool  # a camera with no fault showing: frames must keep coming
    backlog: int
    online: bool
    fault: str


class Station:
    """One gate station: owns the outbox and publisher, runs the scan pipeline.

    Drivers may be passed in (tests, the demo); otherwise they are opened from the
    config by name. ``listeners`` receive every Outcome and StationState.

    A device missing at start does not stop the station: a camera or scanner that is not
    there is shown as the input fault and ``run()`` keeps trying it; lights and a screen
    are opened by ``feedback_devices`` (``FeedbackDevices``), which tries again from
    housekeeping. Only a configuration mistake is fatal.
    """

    def __init__(
        self,
        config: StationConfig,
        *,
        source: Source | None = None,
        decoder: Any = None,
        clock: Any = None,
        listeners: list[Listener] | None = None,
        feedback: Any = None,
        feedback_devices: FeedbackDevices | None = None,
    ):
        self.config = config
        self.clock = clock or SystemClock()
        state_dir = config.state_dir
        self._held = ExitStack()  # released by close()
        # One station process per state folder; key rotation waits for it to stop.
        self._held.enter_context(station_lock(state_dir))
        self._closed = False
        self.key = load_or_create_key(state_dir / STATION_KEY_FILE)
        self.outbox = Outbox(
            state_dir / "outbox.sqlite3",
            station_id=config.station.id,
            key=self.key,
            person_secret=load_or_create_secret(state_dir / "presence.secret"),
        )
        self.pass_keys = {}
        for text in config.station.pass_keys:
            pub = protocol.public_key_from_text(text)
            self.pass_keys[key_id(pub)] = pub
        self.source = source
        self.decoder = decoder
        self.feedback = feedback
        self.feedback_devices = feedback_devices or FeedbackDevices(config)
        self.listeners: list[Listener] = list(listeners or [])
        self.pipeline = ScanPipeline(self)
        self._space = FreeSpaceGuard(state_dir, config.station.min_free_mb)
        self._stop = threading.Event()
        self.policy = config.policy
        self._pushed = PushedConfigInbox(config, self.pass_keys)
        self._state = StationState(venue=config.station.venue, mode=config.policy.mode)
        stored = self._pushed.load_stored()
        if stored is not None:
            self._use_pushed(stored)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        # Liveness, for the systemd watchdog (edge/service.py).
        self.pipeline_thread: threading.Thread | None = None
        self.last_capture = time.monotonic()
        self.last_housekeeping = time.monotonic()
        self._captured = False  # any capture yet (a scanner may wait hours for its first)
        self.health_path = health_file(config)
        self._health_file = HealthFile(self.health_path)
        self._boot_id = read_boot_id()
        self.publisher = Publisher(
            self.outbox, config.mqtt, config.base, on_state=self._on_link_state, on_config=self.apply_config,
            resend_after_s=config.station.resend_after_s, status_fields=self._status_fields,
            on_release=ReleaseNotice(self.health_path.parent).receive,
        )

    # --- wiring ---
    def open_drivers(self) -> None:
        """Open whatever was not passed in, by the names in the config.

        Raises ConfigError for a mistake in [source]; a device that is not there is
        shown as a fault instead (the input fault, or a log line for lights and screen).
        """
        if self.decoder is None:
            from edge.decoder import get_decoder

            self.decoder = get_decoder(self.config.decoder.name)
        if self.feedback is None:
            self.feedback = self.feedback_devices.open_loop()
        if self.feedback is not None:
            self.listeners.append(self.feedback.post)
        if self.source is None:
            self._try_open_source()

    def _open_source(self) -> Source:
        from edge.drivers.sources import open_source

        options = dict(self.config.source)
        kind = options.pop("kind")
        try:
            return open_source(kind, **options)
        except UserError as exc:
            raise ConfigError(f"{self.config.path}: section [source]: {exc}") from None

    def _try_open_source(self) -> bool:
        """Open the source; if the device is not there, show the input fault (False)."""
        try:
            source = self._open_source()
        except (DriverError, DriverUnavailable) as exc:
            logger.error("cannot open the %s: %s", self._input_fault, exc)
            if self._state.fault != self._input_fault:
                self._set_fault(self._input_fault)
            return False
        self.source = source
        if self._state.fault == self._input_fault and not self.input_is_camera:
            # A scanner says nothing until someone scans: being open is working. A
            # camera's fault clears with its first frame (run()).
            self._set_fault("")
        return True

    def start(self) -> None:
        self.open_drivers()
        if self.config.station.metrics_port:
            from edge.metrics import StationMetrics

            metrics = StationMetrics(self)
            metrics.serve(self.config.station.metrics_port, self.config.station.metrics_host)
            self.listeners.append(metrics)
        if self.feedback is not None:
            self.feedback.start()
        self.housekeeping()
        self.emit(self._state)
        self.publisher.start()
        self._housekeeper.start()
    def run(self, *, retry_max_s: float = 30.0) -> None:
        """Scan until the source ends or stop() is called.

        A camera or scanner that is not there, fails or vanishes is shown as a fault on
        the screen (and in the status heartbeat) and opened again with growing pauses;
        the records already made are not touched.
        """
        self.pipeline_thread = threading.current_thread()
        delay = 1.0
        while not self._stop.is_set():
            if self.source is None and not self._try_open_source():
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, retry_max_s)
                continue
            if self._stop.is_set():  # stop() came while the source was being opened
                self._close_source()
                return
            try:
                for capture in self.source.captures():
                    self.last_capture = time.monotonic()
                    self._captured = True
                    if self._stop.is_set():
                        return
                    if self._state.fault == self._input_fault:
                        self._set_fault("")  # the device works again
                        delay = 1.0
                    self.handle_capture(capture)
                return  # the source ended (a folder read once, a video file)
            except DriverError as exc:
                logger.error("%s failed: %s; trying again in %.0f s", self._input_fault, exc, delay)
                self._set_fault(self._input_fault)
                self._close_source()
                self.source = None
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, retry_max_s)

    @property
    def input_is_camera(self) -> bool:
        return self._input_fault == "camera"

    def fault_showing(self) -> bool:
        return bool(self._state.fault)

    @property
    def fault(self) -> str:
        """The fault on the screen ("storage", "camera", "scanner"), or ""."""
        return self._state.fault

    @property
    def _input_fault(self) -> str:
        kind = str(self.config.source.get("kind", ""))
        return "scanner" if kind in ("hid", "serial") else "camera"

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            logger.exception("closing the source")

    def apply_config(self, payload: bytes) -> bool:
        """A config message from the server (any thread): verify, keep, apply if newer."""
        pushed = self._pushed.receive(payload)
        if pushed is None:
            return False
        self._use_pushed(pushed)
        logger.info("applied config version %d: mode %s, %d blocked", pushed.version, pushed.policy.mode,
                    len(pushed.blocked))
        self.emit(self._state)
        return True

    @property
    def pushed(self) -> PushedConfig | None:
        """The server's config in force, or None (the file's policy applies)."""
        return self._pushed.current

    def _use_pushed(self, pushed: PushedConfig) -> None:
        self._pushed.current = pushed
        self.policy = pushed.policy
        self._state = StationState(**{**self._state_dict(), "venue": pushed.venue or self._state.venue,
                                      "mode": pushed.policy.mode})

    # --- housekeeping (edge/housekeeping.py) ---
    def _housekeeping(self) -> None:
        while not self._stop.wait(self.config.station.housekeeping_s):
            try:
                self.housekeeping()
            except Exception:  # housekeeping must never take the gate down
                logger.exception("housekeeping failed")

    def housekeeping(self) -> None:
        """Clock correction, the free-space guard, pruning of old presence, another try
        at missing lights or screen, and the health file."""
        self.last_housekeeping = time.monotonic()
        self.check_clock()
        self.check_free_space()
        horizon = self.clock.now().wall_s - self.policy.toggle_reset_s - self.policy.repeat_window_s
        self.outbox.forget_presence_before(horizon)
        if self.feedback is not None:
            self.feedback_devices.retry_missing(self.feedback)
        self.write_health()

    def check_clock(self) -> bool:
        """Record the clock correction once the clock syncs (see record_clock_correction)."""
        if not record_clock_correction(self.clock, self.outbox):
            return False
        self.publisher.wake()
        return True

    def check_free_space(self) -> bool:
        """Raise the storage fault while the disk is nearly full; clear it when space returns."""
        return self._space.check(self._state.fault, self._set_fault)

    @property
    def low_space(self) -> bool:
        """The free-space guard is refusing scans."""
        return self._space.low

    def health(self) -> dict[str, Any]:
        """The station's own view of itself, as selftest shows it while the station runs."""
        now = time.monotonic()
        return {
            "station": self.config.station.id,
            "pid": os.getpid(),
            "time": round(time.time(), 3),
            # Ages are measured on the monotonic clock, shared by every process of a boot.
            "boot": self._boot_id,
            "mono_s": round(now, 3),
            "input": self._input_fault,
            "scanning": self.source is not None,  # the input device is open
            "fault": self._state.fault,
            "online": self.publisher.online,
            "backlog": self._state.backlog,
            "last_capture_age_s": round(now - self.last_capture, 3) if self._captured else None,
            "missing": dict(self.feedback_devices.problems),
        }

    def write_health(self) -> None:
        """Replace the health file (atomically: a reader never sees half of it)."""
        self._health_file.write(self.health())

    def liveness(self) -> Liveness:
        """What the systemd watchdog checks (edge/service.py)."""
        thread = self.pipeline_thread
        return Liveness(
            pipeline_stopped=thread is not None and not thread.is_alive(),
            sender_alive=self.publisher.thread_alive(),
            last_housekeeping=self.last_housekeeping,
            housekeeping_s=self.config.station.housekeeping_s,
            last_capture=self.last_capture,
            watches_frames=self.input_is_camera and not self.fault_showing(),
            backlog=self.outbox.backlog(),
            online=self.publisher.online,
            fault=self._state.fault,
        )

    def _set_fault(self, fault: str) -> None:
        self._state = StationState(**{**self._state_dict(), "fault": fault})
        self.emit(self._state)
        self.write_health()  # selftest sees a fault at once, not a round later

    # --- stopping ---
    def stop(self) -> None:
        self._stop.set()
        source = self.source  # run() may drop a failed source meanwhile
        if source is not None:
            source.close()

    def close(self) -> None:
        """Stop everything and release the state folder; safe to call twice."""
        if self._closed:
            return
        self._closed = True
        self.stop()
        if self._housekeeper.is_alive():
            self._housekeeper.join(timeout=5)
        self.publisher.close()
        if self.feedback is not None:
            self.feedback.close()
        self.outbox.close()
        self._health_file.remove()
        self._held.close()

    # --- the pipeline (edge/pipeline.py) ---
    def handle_capture(self, capture: Capture) -> list[Outcome]:
        return self.pipeline.handle_capture(capture)

    def handle_text(self, text: str | bytes) -> Outcome | None:
        """Decide one read code; None when it is the same card still held up."""
        return self.pipeline.handle_text(text)

    def new_presentation(self) -> None:
        """The view was cleared: the next capture is a different presentation."""
        self.pipeline.new_presentation()

    @property
    def counts(self) -> Counter[str]:
        """Decided scans by result (and result.reason for refusals and faults)."""
        return self.pipeline.counts

    # --- listeners ---
    def emit(self, event: Outcome | StationState) -> None:
        """Hand an event to every listener; a failing listener is logged, not raised."""
        for listener in self.listeners:
            try:
                listener(event)
            except Exception:  # a broken screen must not stop the gate
                logger.exception("listener failed")

    def _state_dict(self) -> dict[str, Any]:
        s = self._state
        return {"venue": s.venue, "mode": s.mode, "online": s.online, "backlog": s.backlog, "fault": s.fault}

    def _status_fields(self) -> dict[str, Any]:
        """What the fleet page shows about this station (heartbeat, every minute)."""
        fields = {"sync": bool(self.clock.synced()), "fault": self._state.fault, "mode": self.policy.mode}
        if self.outbox.set_aside is not None:
            fields["outbox_set_aside"] = self.outbox.set_aside.name  # shown on the fleet page
        return fields

    def _on_link_state(self, online: bool, backlog: int) -> None:
        self._state = StationState(**{**self._state_dict(), "online": online, "backlog": backlog})
        self.emit(self._state)
