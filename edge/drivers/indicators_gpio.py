"""LEDs and an active buzzer on GPIO pins, through gpiozero (lgpio on the Pi).

Wiring (BCM numbers, defaults; change them in [feedback] of station.toml):

    GPIO17 --[330 ohm]--|>|-- GND    green LED  (anode to the resistor)
    GPIO27 --[330 ohm]--|>|-- GND    red LED
    GPIO22 --[330 ohm]--|>|-- GND    amber LED
    GPIO18 --- buzzer + ; buzzer - --- GND   (a 3.3 V *active* buzzer, <= 15 mA;
               a louder 5 V one through an NPN transistor with a 1 kohm base resistor)

See docs/wiring.md for the full table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.outcome import Result
from qrgate.errors import DriverError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Pattern:
    """Which LEDs light for how long, and the beeps: (on, off, count)."""

    leds: tuple[str, ...]
    led_on: float
    led_off: float
    led_count: int
    beep_on: float
    beep_off: float
    beep_count: int


# Distinct by colour and by rhythm: one short beep = counted; two very short = already
# counted; three = refused; one long = fault.
PATTERNS: dict[Result, Pattern] = {
    Result.ACCEPTED: Pattern(("green",), 0.6, 0.0, 1, 0.08, 0.0, 1),
    Result.ACCEPTED_OFFLINE: Pattern(("green", "amber"), 0.6, 0.0, 1, 0.08, 0.0, 1),
    Result.ALREADY_COUNTED: Pattern(("amber",), 0.6, 0.0, 1, 0.04, 0.08, 2),
    Result.REFUSED: Pattern(("red",), 0.8, 0.0, 1, 0.12, 0.08, 3),
    Result.FAULT: Pattern(("red",), 0.2, 0.2, 4, 1.0, 0.0, 1),
}


class GpioIndicators:
    """Three LEDs and a buzzer; see the module docstring for the wiring.

    ``pin_factory`` is passed to every gpiozero device: tests give
    ``gpiozero.pins.mock.MockFactory()``; on the Pi leave it None (lgpio).
    """

    def __init__(self, green: int = 17, red: int = 27, amber: int = 22, buzzer: int = 18, *, pin_factory=None):
        from gpiozero import LED, Buzzer
        from gpiozero.exc import GPIOZeroError

        self.leds = {}
        self.buzzer = None
        pins = {"green": green, "red": red, "amber": amber}
        try:
            for name, pin in pins.items():
                self.leds[name] = LED(pin, pin_factory=pin_factory)
            self.buzzer = Buzzer(buzzer, pin_factory=pin_factory)
        except (GPIOZeroError, OSError) as exc:
            self.close()
            raise DriverError(f"cannot drive GPIO pins {pins} and buzzer GPIO{buzzer}: {exc}") from exc

    def signal(self, result: Result) -> None:
        pattern = PATTERNS[result]
        for led in self.leds.values():
            led.off()
        self.buzzer.off()
        for name in pattern.leds:
            self.leds[name].blink(pattern.led_on, pattern.led_off, n=pattern.led_count, background=True)
        self.buzzer.beep(pattern.beep_on, pattern.beep_off, n=pattern.beep_count, background=True)

    def close(self) -> None:
        for device in [*self.leds.values(), self.buzzer]:
            if device is not None:
                try:
                    device.off()  # a released pin may keep its level: leave nothing lit or sounding
                    device.close()
                except Exception:  # closing must not fail a shutdown
                    logger.exception("closing %s", device)
        self.leds = {}
        self.buzzer = None
