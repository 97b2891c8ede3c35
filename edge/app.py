"""The station's composition root: the one place that picks drivers and wires the stages.

    source -> decoder -> payload parser -> check-in policy -> signed outbox -> publisher
                                                 |
                                                 +-> Outcome -> feedback (lights, buzzer, screen)

Data flows one way; feedback and other listeners only receive Outcome/StationState.
"""

from __future__ import annotations

import datetime as dt
import logging
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from zoneinfo import ZoneInfo

from edge.clock import SystemClock
from edge.config import StationConfig
from edge.drivers.ports import Capture, Frame, Source
from edge.outcome import Outcome, Result, StationState
from edge.payloads import Person, PayloadRefused, parse_payload
from edge.policy import decide_checkin
from edge.pushed_config import PushedConfig, PushedConfigFile, parse_pushed_config
from edge.queue.outbox import Outbox, OutboxError
from edge.queue.publisher import Publisher
from qrgate import protocol
from qrgate.errors import ConfigError, DriverError, RecordError, UserError
from qrgate.keyfiles import load_or_create_key, load_or_create_secret
from qrgate.masking import mask_person_name
from qrgate.personal_pass import key_id
from qrgate.sealing import PersonSealer, x25519_public_from_text

logger = logging.getLogger(__name__)

STATION_KEY_FILE = "station.key"

Listener = Callable[[Outcome | StationState], None]


@dataclass
class _Sighting:
    text: str
    mono_s: float


class Station:
    """One gate station: owns the outbox and publisher, runs the scan pipeline.

    Drivers may be passed in (tests, the demo); otherwise they are opened from the
    config by name. ``listeners`` receive every Outcome and StationState.
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
    ):
        self.config = config
        self.clock = clock or SystemClock()
        self._tz = ZoneInfo(config.station.timezone)  # the day a pass's dates are checked on
        state_dir = config.state_dir
        # One station process per state folder; key rotation waits for it to stop.
        from edge.key_rotation import station_lock

        self._lock = station_lock(state_dir)
        self._lock.__enter__()
        self._closed = False
        self.key = load_or_create_key(state_dir / STATION_KEY_FILE)
        self.outbox = Outbox(
            state_dir / "outbox.sqlite3",
            station_id=config.station.id,
            key=self.key,
            person_secret=load_or_create_secret(state_dir / "presence.secret"),
        )
        self.sealer = PersonSealer(x25519_public_from_text(config.station.server_key), config.station.id)
        self.pass_keys = {}
        for text in config.station.pass_keys:
            pub = protocol.public_key_from_text(text)
            self.pass_keys[key_id(pub)] = pub
        self.source = source
        self.decoder = decoder
        self.feedback = feedback
        self.listeners: list[Listener] = list(listeners or [])
        self.counts: Counter[str] = Counter()
        self._last: _Sighting | None = None
        self._low_space = False
        self._stop = threading.Event()
        self.policy = config.policy
        self.pushed: PushedConfig | None = None
        self._pushed_file = PushedConfigFile(state_dir / "pushed-config.json")
        self._state = StationState(venue=config.station.venue, mode=config.policy.mode)
        stored = self._pushed_file.load(config.station.id, self.pass_keys)
        if stored is not None:
            self._use_pushed(stored)
        self._housekeeper = threading.Thread(target=self._housekeeping, name="housekeeping", daemon=True)
        # Liveness, for the systemd watchdog (edge/service.py).
        self.pipeline_thread: threading.Thread | None = None
        self.last_capture = time.monotonic()
        self.last_housekeeping = time.monotonic()
        self.publisher = Publisher(
            self.outbox, config.mqtt, config.base, on_state=self._on_link_state, on_config=self.apply_config,
            resend_after_s=config.station.resend_after_s, status_fields=self._status_fields,
        )

    # --- wiring ---
    def open_drivers(self) -> None:
        """Open whatever was not passed in, by the names in the config."""
        if self.decoder is None:
            from edge.decoder import get_decoder

            self.decoder = get_decoder(self.config.decoder.name)
        if self.source is None:
            self.source = self._open_source()
        if self.feedback is None:
            self.feedback = open_feedback(self.config)
        if self.feedback is not None:
            self.listeners.append(self.feedback.post)

    def _open_source(self) -> Source:
        from edge.drivers.sources import open_source

        options = dict(self.config.source)
        kind = options.pop("kind")
        try:
            return open_source(kind, **options)
        except UserError as exc:
            raise ConfigError(f"{self.config.path}: section [source]: {exc}") from None

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
        self._emit(self._state)
        self.publisher.start()
        self._housekeeper.start()

    def run(self, *, retry_max_s: float = 30.0) -> None:
        """Scan until the source ends or stop() is called.

        A camera or scanner that fails or vanishes is shown as a fault on the screen and
        opened again with growing pauses; the records already made are not touched.
        """
        assert self.source is not None, "start() opens the source"
        self.pipeline_thread = threading.current_thread()
        delay = 1.0
        while not self._stop.is_set():
            try:
                for capture in self.source.captures():
                    self.last_capture = time.monotonic()
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
                if self._stop.wait(delay):
                    return
                delay = min(delay * 2, retry_max_s)
                try:
                    self.source = self._open_source()
                except DriverError as again:
                    logger.error("cannot open the %s: %s", self._input_fault, again)

    @property
    def input_is_camera(self) -> bool:
        return self._input_fault == "camera"

    def fault_showing(self) -> bool:
        return bool(self._state.fault)

    @property
    def _input_fault(self) -> str:
        kind = str(self.config.source.get("kind", ""))
        return "scanner" if kind in ("hid", "serial") else "camera"

    def _close_source(self) -> None:
        try:
            self.source.close()
        except Exception:
            logger.exception("closing the failed source")

    def apply_config(self, payload: bytes) -> bool:
        """A config message from the server (any thread): verify, keep, apply if newer."""
        try:
            pushed = parse_pushed_config(payload, self.config.station.id, self.pass_keys)
        except RecordError as exc:
            logger.error("ignoring config from the broker: %s", exc)
            return False
        if self.pushed is not None and pushed.version <= self.pushed.version:
            return False
        try:
            self._pushed_file.save(payload)
        except OSError as exc:
            logger.error("cannot keep the new config on disk (%s); applying it for now", exc)
        self._use_pushed(pushed)
        logger.info("applied config version %d: mode %s, %d blocked", pushed.version, pushed.policy.mode,
                    len(pushed.blocked))
        self._emit(self._state)
        return True

    def _use_pushed(self, pushed: PushedConfig) -> None:
        self.pushed = pushed
        self.policy = pushed.policy
        self._state = StationState(**{**self._state_dict(), "venue": pushed.venue or self._state.venue,
                                      "mode": pushed.policy.mode})

    def _housekeeping(self) -> None:
        while not self._stop.wait(self.config.station.housekeeping_s):
            try:
                self.housekeeping()
            except Exception:  # housekeeping must never take the gate down
                logger.exception("housekeeping failed")

    def housekeeping(self) -> None:
        """Clock correction, the free-space guard and pruning of old presence."""
        self.last_housekeeping = time.monotonic()
        self.check_clock()
        self.check_free_space()
        horizon = self.clock.now().wall_s - self.policy.toggle_reset_s - self.policy.repeat_window_s
        self.outbox.forget_presence_before(horizon)

    def check_free_space(self) -> bool:
        """Raise the storage fault while the disk is nearly full; clear it when space returns."""
        try:
            free_mb = shutil.disk_usage(self.config.state_dir).free // (1024 * 1024)
        except OSError as exc:
            logger.error("cannot read free space of %s: %s", self.config.state_dir, exc)
            return False
        low = free_mb < self.config.station.min_free_mb
        if low and self._state.fault != "storage":
            logger.error("only %d MB free on %s: refusing scans until space returns", free_mb, self.config.state_dir)
            self._set_fault("storage")
        elif not low and self._state.fault == "storage" and self._low_space:
            logger.warning("free space is back (%d MB): accepting scans again", free_mb)
            self._set_fault("")
        self._low_space = low
        return low

    def _set_fault(self, fault: str) -> None:
        self._state = StationState(**{**self._state_dict(), "fault": fault})
        self._emit(self._state)

    def check_clock(self) -> bool:
        """If the clock has synchronised during a boot that recorded unsynced check-ins,
        record the boot's wall/monotonic offset so the server can correct their times.

        Called every few seconds by the station's housekeeping; True if a clock record
        was written.
        """
        now = self.clock.now()
        if self.outbox.unsynced_boot() != now.boot_id or not self.clock.synced():
            return False
        wall_ms, mono_ms = int(now.wall_s * 1000), int(now.mono_s * 1000)
        fields = {"type": "clock", "ts": wall_ms, "mono": mono_ms, "boot": now.boot_id, "sync": True,
                  "base": wall_ms - mono_ms}
        try:
            self.outbox.append(fields, person_hash=None, now=now)
        except OutboxError as exc:
            logger.error("cannot record the clock correction: %s", exc)
            return False
        logger.info("clock synchronised: check-ins of this boot will be corrected by the server")
        self.publisher.wake()
        return True

    def new_presentation(self) -> None:
        """The view was cleared (the next capture is a different person's card even if
        it holds the same code): used when each image is a separate presentation."""
        self._last = None

    def stop(self) -> None:
        self._stop.set()
        if self.source is not None:
            self.source.close()

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
        self._lock.__exit__(None, None, None)

    # --- the pipeline ---
    def handle_capture(self, capture: Capture) -> list[Outcome]:
        if isinstance(capture, Frame):
            texts: list[str | bytes] = [d.text for d in self.decoder.decode(capture.gray)]
            if not texts:
                self.counts["no_code"] += 1
        else:
            texts = [capture.raw or capture.text]
        outcomes = []
        for text in texts:
            outcome = self.handle_text(text)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def handle_text(self, text: str | bytes) -> Outcome | None:
        """Decide one read code; None when it is the same card still held up."""
        now = self.clock.now()
        key = text if isinstance(text, str) else text.decode("utf-8", "replace")
        last = self._last
        self._last = _Sighting(key, now.mono_s)
        if last is not None and last.text == key and now.mono_s - last.mono_s < self.config.station.hold_s:
            return None
        mono_ns = int(now.mono_s * 1e9)
        synced = bool(self.clock.synced())
        # With an unsynced clock the date may be years off: check pass signatures, not dates.
        today = dt.datetime.fromtimestamp(now.wall_s, self._tz).date() if synced else None
        try:
            person = parse_payload(text, pass_keys=self.pass_keys, today=today)
        except PayloadRefused as exc:
            logger.info("refused code (%s): %s", exc.reason, exc.detail)
            return self._emit_outcome(Outcome(Result.REFUSED, reason=exc.reason, mono_ns=mono_ns))
        person_hash = self.outbox.person_hash(person.person_key)
        blocked = self.pushed is not None and self.pushed.is_blocked(person.person_key)
        verdict = decide_checkin(self.outbox.last_checkin(person_hash), now, self.policy, blocked=blocked)
        masked = mask_person_name(person.name)
        if verdict.code in ("blocked", "passback"):
            logger.info("refused a %s card: %s", person.kind, verdict.code)  # no personal data in logs
            return self._emit_outcome(Outcome(Result.REFUSED, reason=verdict.code, kind=person.kind, mono_ns=mono_ns))
        if not verdict.accepted:
            return self._emit_outcome(
                Outcome(Result.ALREADY_COUNTED, reason=verdict.code, direction=verdict.direction,
                        masked_name=masked, kind=person.kind, mono_ns=mono_ns)
            )
        if self._low_space:
            return self._emit_outcome(Outcome(Result.FAULT, reason="storage", mono_ns=mono_ns))
        try:
            appended = self.outbox.append(
                self._record_fields(person, verdict.direction, now, synced), person_hash=person_hash, now=now
            )
        except OutboxError as exc:
            logger.error("cannot record check-in: %s", exc)
            self._set_fault("storage")
            return self._emit_outcome(Outcome(Result.FAULT, reason="storage", mono_ns=mono_ns))
        if self._state.fault == "storage":
            # The write worked again (space freed, card re-seated): the fault clears by itself.
            self._set_fault("")
        self.publisher.wake()
        # On disk before anyone sees green; the line names no one.
        logger.info("recorded seq %d: %s %s", appended.seq, person.kind, verdict.direction)
        result = Result.ACCEPTED if self.publisher.online else Result.ACCEPTED_OFFLINE
        return self._emit_outcome(
            Outcome(result, direction=verdict.direction, masked_name=masked, kind=person.kind, mono_ns=mono_ns)
        )

    def _record_fields(self, person: Person, direction: str, now, synced: bool) -> dict[str, Any]:
        person_fields = {"id": person.id_number, "name": person.name, "birth": person.birth, "sex": person.sex}
        return {
            "type": "checkin",
            "ts": int(now.wall_s * 1000),
            "mono": int(now.mono_s * 1000),
            "boot": now.boot_id,
            "sync": synced,
            "dir": direction,
            "kind": person.kind,
            "sealed": self.sealer.seal(person_fields),
        }

    # --- listeners ---
    def _emit_outcome(self, outcome: Outcome) -> Outcome:
        self.counts[outcome.result.value] += 1
        if outcome.reason and outcome.result in (Result.REFUSED, Result.FAULT):
            self.counts[f"{outcome.result.value}.{outcome.reason}"] += 1
        self._emit(outcome)
        return outcome

    def _emit(self, event: Outcome | StationState) -> None:
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
        self._emit(self._state)


def open_feedback(config: StationConfig):
    """Build the feedback loop from the [feedback] section (None if all of it is off)."""
    fb = config.feedback
    indicators = None
    if fb.indicators == "gpio":
        from edge.drivers.indicators_gpio import GpioIndicators

        factory = None
        if fb.pin_factory == "mock":
            from gpiozero.pins.mock import MockFactory, MockPWMPin

            factory = MockFactory(pin_class=MockPWMPin)
        indicators = GpioIndicators(fb.green, fb.red, fb.amber, fb.buzzer, tonal=fb.tonal, pin_factory=factory)
    screen = None
    if fb.panel != "none":
        from pathlib import Path

        from edge.display.panel import Screen, open_panel

        device = open_panel(fb.panel, i2c_port=fb.i2c_port, address=fb.i2c_address)
        mirror = Path(fb.screen_png) if fb.screen_png else None
        if mirror is not None and not mirror.is_absolute():
            mirror = config.base / mirror
        screen = Screen(device, mirror_png=mirror)
    if indicators is None and screen is None:
        return None
    from edge.feedback import FeedbackLoop

    return FeedbackLoop(indicators, screen, result_seconds=fb.result_seconds)

