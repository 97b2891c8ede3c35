"""LEDs and a buzzer (active, or passive and tonal) on GPIO pins, through gpiozero (lgpio on the Pi).

Wiring (BCM numbers, defaults; change them in [feedback] of station.toml):

    GPIO17 --[330 ohm]--|>|-- GND    green LED  (anode to the resistor)
    GPIO27 --[330 ohm]--|>|-- GND    red LED
    GPIO22 --[330 ohm]--|>|-- GND    amber LED
    GPIO18 --- buzzer + ; buzzer - --- GND   (a 3.3 V *active* buzzer, <= 15 mA;
               a louder 5 V one through an NPN transistor with a 1 kohm base resistor)

An active buzzer has its own oscillator: the pin only switches it on and off, so it has
one pitch. A *passive* piezo (tonal=True) is driven with a square wave and can play a
high, middle or low tone; it needs a PWM pin (GPIO18 is hardware PWM0; lgpio also makes
software PWM on any pin).

See docs/wiring.md for the full table.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from edge.outcome import Result
from qrgate.errors import DriverError

logger = logging.getLogger(__name__)


# A passive buzzer's range: A4 (440 Hz) .. A6 (1760 Hz) around A5; tones below are
# positions in it, -1 lowest, 1 highest.
MID_TONE = "A5"
OCTAVES = 1
TONE_HIGH, TONE_MID, TONE_LOW = 1.0, 0.0, -1.0
# Time resolution of a tonal pattern, fed to gpiozero's source thread.
TONE_STEP = 0.02


@dataclass(frozen=True)
class Pattern:
    """Which LEDs light for how long, and the beeps: (on, off, count) at ``tone``.

    ``tone`` matters only for a passive (tonal) buzzer; an active one has one pitch.
    """

    leds: tuple[str, ...]
    led_on: float
    led_off: float
    led_count: int
    beep_on: float
    beep_off: float
    beep_count: int
    tone: float = TONE_MID

    def tone_values(self) -> list[float | None]:
        """The beeps as values for a TonalBuzzer's ``source``, one per TONE_STEP; ends silent."""
        values: list[float | None] = []
        for _ in range(self.beep_count):
            values += [self.tone] * max(1, round(self.beep_on / TONE_STEP))
            values += [None] * round(self.beep_off / TONE_STEP)
        if not values or values[-1] is not None:
            values.append(None)
        return values


# Distinct by colour and by rhythm: one short beep = counted; two very short = already
# counted; three = refused; one long = fault. A tonal buzzer adds pitch: high for
# counted, low for refused and fault.
PATTERNS: dict[Result, Pattern] = {
    Result.ACCEPTED: Pattern(("green",), 0.6, 0.0, 1, 0.08, 0.0, 1, TONE_HIGH),
    Result.ACCEPTED_OFFLINE: Pattern(("green", "amber"), 0.6, 0.0, 1, 0.08, 0.0, 1, TONE_HIGH),
    Result.ALREADY_COUNTED: Pattern(("amber",), 0.6, 0.0, 1, 0.04, 0.08, 2, TONE_MID),
    Result.REFUSED: Pattern(("red",), 0.8, 0.0, 1, 0.12, 0.08, 3, TONE_LOW),
    Result.FAULT: Pattern(("red",), 0.2, 0.2, 4, 1.0, 0.0, 1, TONE_LOW),
}


class GpioIndicators:
    """Three LEDs and a buzzer; see the module docstring for the wiring.

    ``tonal=True`` drives a passive piezo with gpiozero's ``TonalBuzzer`` (needs a PWM
    pin); otherwise an active buzzer with ``Buzzer``. ``pin_factory`` is passed to every
    gpiozero device: tests give ``gpiozero.pins.mock.MockFactory()`` (with
    ``pin_class=MockPWMPin`` for tonal); on the Pi leave it None (lgpio).
    """

    def __init__(self, green: int = 17, red: int = 27, amber: int = 22, buzzer: int = 18, *,
                 tonal: bool = False, pin_factory=None):
        from gpiozero import LED, Buzzer, TonalBuzzer
        from gpiozero.exc import GPIOZeroError
        from gpiozero.tones import Tone

        self.tonal = tonal
        self.leds = {}
        self.buzzer = None
        parts = [("green LED", green, lambda pin: LED(pin, pin_factory=pin_factory)),
                 ("red LED", red, lambda pin: LED(pin, pin_factory=pin_factory)),
                 ("amber LED", amber, lambda pin: LED(pin, pin_factory=pin_factory))]
        if tonal:
            parts.append(("tonal buzzer (PWM)", buzzer, lambda pin: TonalBuzzer(
                pin, mid_tone=Tone(MID_TONE), octaves=OCTAVES, pin_factory=pin_factory)))
        else:
            parts.append(("buzzer", buzzer, lambda pin: Buzzer(pin, pin_factory=pin_factory)))
        for role, pin, make in parts:
            try:
                device = make(pin)
            except (GPIOZeroError, OSError, ValueError) as exc:
                self.close()
                detail = str(exc) or type(exc).__name__
                raise DriverError(f"cannot drive the {role} on GPIO{pin}: {detail}") from exc
            if role.endswith("LED"):
                self.leds[role.split()[0]] = device
            else:
                self.buzzer = device
        logger.info("lights on GPIO%d/%d/%d, %s on GPIO%d", green, red, amber,
                    "tonal buzzer" if tonal else "buzzer", buzzer)

    def signal(self, result: Result) -> None:
        pattern = PATTERNS[result]
        for led in self.leds.values():
            led.off()
        self._silence()
        for name in pattern.leds:
            self.leds[name].blink(pattern.led_on, pattern.led_off, n=pattern.led_count, background=True)
        if self.tonal:
            # TonalBuzzer has no beep(); gpiozero's source thread plays the steps instead.
            self.buzzer.source_delay = TONE_STEP
            self.buzzer.source = pattern.tone_values()
        else:
            self.buzzer.beep(pattern.beep_on, pattern.beep_off, n=pattern.beep_count, background=True)

    def _silence(self) -> None:
        if self.buzzer is None:
            return
        if self.tonal:
            self.buzzer.source = None  # stops the previous pattern's thread
            self.buzzer.stop()
        else:
            self.buzzer.off()

    def close(self) -> None:
        try:
            self._silence()  # a released pin may keep its level: leave nothing sounding
        except Exception:
            logger.exception("silencing the buzzer")
        for device in [*self.leds.values(), self.buzzer]:
            if device is not None:
                try:
                    if hasattr(device, "off"):
                        device.off()  # a released pin may keep its level: leave nothing lit
                    device.close()
                except Exception:  # closing must not fail a shutdown
                    logger.exception("closing %s", device)
        self.leds = {}
        self.buzzer = None
