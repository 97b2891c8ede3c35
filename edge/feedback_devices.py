"""Opening the lights, buzzer and screen of [feedback] by name, and trying again the
ones missing at start (neither is needed to count people)."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from edge.config import StationConfig
from qrgate.errors import DriverError, DriverUnavailable, UserError

# The station's log lines keep the name they always had (journald filters, the boot rig).
logger = logging.getLogger("edge.app")

# A screen or lights missing at start are tried again this often (seconds).
DEVICE_RETRY_S = 30.0


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
