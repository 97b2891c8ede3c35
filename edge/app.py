"""The station's composition root: the one place that picks drivers and wires the stages.

    source -> decoder -> payload parser -> check-in policy -> signed outbox -> publisher
                                                 |
                                                 +-> Outcome -> feedback (lights, buzzer, screen)

Data flows one way; feedback and other listeners only receive Outcome/StationState.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from edge.clock import SystemClock, read_boot_id
from edge.config import StationConfig
from edge.drivers.ports import Capture, Frame, Source
from edge.outcome import Outcome, Result, StationState
from edge.payloads import Person, PayloadRefused, parse_payload
from edge.policy import decide_checkin
from edge.pushed_config import PushedConfig, PushedConfigFile, parse_pushed_config
from edge.queue.outbox import Outbox, OutboxError
from edge.queue.publisher import Publisher
from qrgate import protocol
from qrgate.errors import ConfigError, DriverError, DriverUnavailable, RecordError, UserError
from qrgate.keyfiles import load_or_create_key, load_or_create_secret
from qrgate.masking import mask_person_name
from qrgate.personal_pass import key_id
from qrgate.sealing import PersonSealer, x25519_public_from_text

logger = logging.getLogger(__name__)

STATION_KEY_FILE = "station.key"
# A screen or lights missing at start are tried again this often (seconds).
DEVICE_RETRY_S = 30.0
# What the running station says about itself, every housekeeping round, for
# `qrgate-edge selftest` (which must not open the devices the station holds).
HEALTH_FILE = "health.json"
# systemd's RuntimeDirectory=qrgate; a shell (selftest) has no $RUNTIME_DIRECTORY.
SYSTEM_RUN_DIR = Path("/run/qrgate")

Listener = Callable[[Outcome | StationState], None]


@dataclass
class _Sighting:
    text: str
    mono_s: float


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
        self.feedback_devices = feedback_devices or FeedbackDevices(config)
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
        self._captured = False  # any capture yet (a scanner may wait hours for its first)
        self.health_path = health_file(config)
        self._health_error = ""
        self._boot_id = read_boot_id()
        self.publisher = Publisher(
            self.outbox, config.mqtt, config.base, on_state=self._on_link_state, on_config=self.apply_config,
            resend_after_s=config.station.resend_after_s, status_fields=self._status_fields,
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
        self._emit(self._state)
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
        path = self.health_path
        try:
            handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            try:
                with os.fdopen(handle, "w") as temp_file:
                    json.dump(self.health(), temp_file)
                os.replace(temp_name, path)  # no fsync: a lost update is rewritten in seconds
            except BaseException:
                Path(temp_name).unlink(missing_ok=True)
                raise
        except OSError as exc:
            if str(exc) != self._health_error:  # once, not every few seconds
                logger.error("cannot write the health file %s: %s", path, exc)
            self._health_error = str(exc)
            return
        self._health_error = ""

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
        self.write_health()  # selftest sees a fault at once, not a round later

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
        try:
            self.health_path.unlink(missing_ok=True)  # a stopped station reports nothing
        except OSError:
            pass
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


def open_indicators(config: StationConfig):
    """The lights and buzzer of [feedback], or None when it has none.

    Raises DriverError (no GPIO chip, a pin taken) or DriverUnavailable (gpiozero or
    lgpio not installed), with the pins or the library named.
    """
    fb = config.feedback
    if fb.indicators != "gpio":
        return None
    from edge.drivers.indicators_gpio import GpioIndicators

    factory = _pin_factory(fb.pin_factory)
    try:
        return GpioIndicators(fb.green, fb.red, fb.amber, fb.buzzer, tonal=fb.tonal, pin_factory=factory)
    except ImportError as exc:
        raise DriverUnavailable(f"gpiozero is not installed ({exc}; pip install gpiozero)") from exc
    except BaseException:
        if factory is not None:
            factory.close()  # a factory holds the GPIO chip open
        raise


def _pin_factory(name: str):
    """gpiozero's pin factory for [feedback] pin_factory; None lets gpiozero choose."""
    if name == "mock":
        from gpiozero.pins.mock import MockFactory, MockPWMPin

        return MockFactory(pin_class=MockPWMPin)
    if name == "lgpio":
        try:
            from gpiozero.pins.lgpio import LGPIOFactory
        except ImportError as exc:
            raise DriverUnavailable(f"pin_factory 'lgpio': lgpio is not installed ({exc}; "
                                    "apt install python3-lgpio, venv with --system-site-packages)") from exc
        try:
            return LGPIOFactory()
        except Exception as exc:  # lgpio.error shares no base with OSError
            raise DriverError(f"pin_factory 'lgpio': cannot open the GPIO chip: {exc} "
                              "(is /dev/gpiochip0 there, and the user in group gpio?)") from exc
    return None


def open_screen(config: StationConfig, panel_opener: Callable[..., Any] | None = None):
    """The screen of [feedback] (a Screen on the luma device), or None when it has none.

    ``panel_opener`` has ``edge.display.panel.open_panel``'s signature (the default).
    Raises DriverError or DriverUnavailable naming the panel, its address and bus.
    """
    fb = config.feedback
    if fb.panel == "none":
        return None
    from edge.display.panel import Screen, open_panel

    opener = panel_opener or open_panel
    where = f"{fb.panel} panel at 0x{fb.i2c_address:02X} on /dev/i2c-{fb.i2c_port}"
    try:
        device = opener(fb.panel, i2c_port=fb.i2c_port, address=fb.i2c_address)
    except UserError:
        raise
    except ImportError as exc:
        raise DriverUnavailable(f"{where}: {exc}") from exc
    except Exception as exc:  # luma's own errors share no base with OSError
        raise DriverError(f"{where}: {exc}") from exc
    mirror = Path(fb.screen_png) if fb.screen_png else None
    if mirror is not None and not mirror.is_absolute():
        mirror = config.base / mirror
    return Screen(device, mirror_png=mirror)


class FeedbackDevices:
    """Opens the lights and the screen named in [feedback]; keeps trying the missing ones.

    Neither is needed to count people: a panel not wired yet, I2C not enabled, or no
    GPIO chip is logged (naming the panel and bus, or the pins), the station runs
    without it, and ``retry_missing`` (from housekeeping, at most every ``retry_s``)
    hands a part that answers later to the feedback loop. ``problems`` says what is
    missing and why (for the health file).
    """

    def __init__(self, config: StationConfig, *, retry_s: float = DEVICE_RETRY_S,
                 panel_opener: Callable[..., Any] | None = None, clock: Callable[[], float] = time.monotonic):
        self.config = config
        self.retry_s = retry_s
        self.panel_opener = panel_opener
        self.clock = clock
        self.problems: dict[str, str] = {}  # "lights" / "screen" -> why it is missing
        self._next_try = 0.0

    def open_loop(self):
        """A FeedbackLoop with whatever opened (None when [feedback] has neither part)."""
        fb = self.config.feedback
        if fb.indicators == "none" and fb.panel == "none":
            return None
        from edge.feedback import FeedbackLoop

        indicators = self._try("lights")
        screen = self._try("screen")
        self._next_try = self.clock() + self.retry_s
        return FeedbackLoop(indicators, screen, result_seconds=fb.result_seconds)

    def retry_missing(self, loop) -> None:
        """Try the missing parts again if it is time; attach what opens to ``loop``."""
        if not self.problems or self.clock() < self._next_try:
            return
        self._next_try = self.clock() + self.retry_s
        for part in list(self.problems):
            opened = self._try(part)
            if opened is not None:
                logger.warning("the %s answer%s now: using %s", part, "" if part == "lights" else "s",
                               "them" if part == "lights" else "it")
                loop.attach(**{"indicators" if part == "lights" else "screen": opened})

    def _open(self, part: str):
        if part == "lights":
            return open_indicators(self.config)
        return open_screen(self.config, self.panel_opener)

    def _try(self, part: str):
        try:
            opened = self._open(part)
        except UserError:
            raise
        except Exception as exc:  # no light or screen failure may stop the gate
            message = str(exc) or type(exc).__name__
            if self.problems.get(part) != message:  # logged once, not every retry
                logger.error("no %s: %s; running without %s, trying again every %.0f s", part, message,
                             "them" if part == "lights" else "it", self.retry_s)
            self.problems[part] = message
            return None
        self.problems.pop(part, None)
        return opened
