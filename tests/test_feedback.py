"""Lights and buzzer through gpiozero's MockFactory, and the feedback loop's timing."""

from __future__ import annotations

import threading
import time
import tracemalloc
from pathlib import Path

import pytest
from gpiozero import Device
from gpiozero.pins.mock import MockFactory, MockPWMPin

from conftest import wait_until
from edge.display.panel import Screen, open_panel
from edge.drivers.indicators_gpio import PATTERNS, GpioIndicators
from edge.feedback import FeedbackLoop
from edge.outcome import Outcome, Result, StationState
from qrgate.errors import DriverError

PINS = {"green": 17, "red": 27, "amber": 22, "buzzer": 18}


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


class PitchRecordingPin(MockPWMPin):
    """gpiozero's PWM mock pin, also remembering every frequency it was set to."""

    def __init__(self, factory, info):
        super().__init__(factory, info)
        self.frequencies: list[float] = []

    def _set_frequency(self, value):
        super()._set_frequency(value)
        if value is not None:
            self.frequencies.append(value)


def pattern_finished(pins, pattern) -> bool:
    done = len(high_periods(pins["buzzer"])) == pattern.beep_count and not pins["buzzer"].state
    for name in pattern.leds:
        done = done and len(high_periods(pins[name])) == pattern.led_count and not pins[name].state
    return done


@pytest.fixture(scope="module")
def played():
    """Every result played once on active and once on tonal buzzers, all at the same time.

    Patterns run in real time (up to 1.6 s); playing them side by side, each on its own
    mock pins, keeps this file fast. Maps (tonal, result) to {part: [high periods]} plus
    "pitches": the buzzer frequencies set while it played.
    """
    runs = []
    for tonal in (False, True):
        for result in Result:
            factory = MockFactory(pin_class=PitchRecordingPin) if tonal else MockFactory()
            indicators = GpioIndicators(tonal=tonal, pin_factory=factory)
            pins = {name: factory.pin(n) for name, n in PINS.items()}
            for pin in pins.values():
                pin.clear_states()
            if tonal:
                pins["buzzer"].frequencies.clear()  # gpiozero's 100 Hz PWM default from opening
            runs.append((tonal, result, factory, indicators, pins))
    for _, result, _, indicators, _ in runs:
        indicators.signal(result)
    recorded = {}
    for tonal, result, factory, indicators, pins in runs:
        wait_until(lambda: pattern_finished(pins, PATTERNS[result]), 10, f"{result} pattern (tonal={tonal})")
        recorded[tonal, result] = {name: high_periods(pin) for name, pin in pins.items()}
        recorded[tonal, result]["pitches"] = set(getattr(pins["buzzer"], "frequencies", ()))
        indicators.close()
        factory.reset()
    return recorded


@pytest.mark.parametrize("result", list(Result))
def test_each_result_lights_its_own_leds_and_beeps_its_own_rhythm(played, result):
    periods = played[False, result]
    pattern = PATTERNS[result]
    lit = {name for name in ("green", "red", "amber") if periods[name]}
    assert lit == set(pattern.leds)
    assert len(periods["buzzer"]) == pattern.beep_count
    for on in periods["buzzer"]:
        assert on == pytest.approx(pattern.beep_on, abs=0.05)
    for name in pattern.leds:
        assert periods[name][0] == pytest.approx(pattern.led_on, abs=0.1)


@pytest.mark.parametrize("result, pitch", [
    (Result.ACCEPTED, 1760.0), (Result.ACCEPTED_OFFLINE, 1760.0), (Result.ALREADY_COUNTED, 880.0),
    (Result.REFUSED, 440.0), (Result.FAULT, 440.0),
])
def test_a_passive_buzzer_sounds_high_for_counted_and_low_for_refused(played, result, pitch):
    periods = played[True, result]
    pattern = PATTERNS[result]
    assert periods["pitches"] == {pitch}
    assert len(periods["buzzer"]) == pattern.beep_count
    for on in periods["buzzer"]:
        # A tone is played in steps, each a thread's sleep: on a loaded machine their
        # lateness adds up over the fault's 1 s beep (1.10 s seen). 15 % still tells every
        # pattern's beep from the next longest (0.04, 0.08, 0.12, 1.0 s).
        assert on == pytest.approx(pattern.beep_on, rel=0.15, abs=0.05)
    lit = {name for name in ("green", "red", "amber") if periods[name]}
    assert lit == set(pattern.leds)


@pytest.fixture
def indicators(factory):
    ind = GpioIndicators(pin_factory=factory)
    yield ind
    ind.close()


def high_periods(pin) -> list[float]:
    """Durations of every completed high period recorded on a mock pin.

    gpiozero's MockPin stamps each state change with the time since the previous
    change, so the stamp of a change to low is the length of the high before it.
    """
    periods, high = [], False
    for change in pin.states:
        if high and not change.state:
            periods.append(change.timestamp)
        high = bool(change.state)
    return periods


def test_patterns_are_distinct_by_colour_or_rhythm():
    signatures = {(p.leds, p.led_count, p.beep_count, p.beep_on) for p in PATTERNS.values()}
    assert len(signatures) == len(Result)


def test_a_new_scan_cuts_the_previous_pattern_short(factory, indicators):
    red = factory.pin(PINS["red"])
    indicators.signal(Result.FAULT)
    wait_until(lambda: red.state, 5, "red on")
    indicators.signal(Result.ACCEPTED)
    wait_until(lambda: factory.pin(PINS["green"]).state, 5, "green on")
    assert not red.state


def test_a_passive_buzzer_needs_a_pwm_pin_and_says_which():
    with pytest.raises(DriverError, match="tonal buzzer .*GPIO18"):
        GpioIndicators(tonal=True, pin_factory=MockFactory())  # plain MockPin: no PWM


def test_two_parts_on_one_pin_are_refused_naming_the_pin(factory):
    with pytest.raises(DriverError, match="red LED on GPIO17"):
        GpioIndicators(green=17, red=17, pin_factory=factory)
    GpioIndicators(pin_factory=factory).close()  # the half-built one released its pins


def test_off_the_pi_without_a_pin_factory_the_error_names_the_pin(monkeypatch):
    if Path("/proc/device-tree/model").exists() and "Raspberry" in Path("/proc/device-tree/model").read_text():
        pytest.skip("on a Raspberry Pi the default pin factory works")
    monkeypatch.delenv("GPIOZERO_PIN_FACTORY", raising=False)
    monkeypatch.setattr(Device, "pin_factory", None)
    with pytest.warns(Warning):  # gpiozero warns as it falls back from each library
        with pytest.raises(DriverError, match="green LED on GPIO17"):
            GpioIndicators()


def test_result_screen_returns_to_idle_after_its_time(factory, indicators):
    device = open_panel("dummy")
    loop = FeedbackLoop(indicators, Screen(device), result_seconds=0.2)
    loop.start()
    try:
        loop.post(StationState(venue="Cổng 1", online=True))
        loop.post(Outcome(Result.REFUSED, reason="unknown_format"))
        assert loop.wait_idle(5)
        assert loop.shown is not None
        result_image = device.image.copy()
        wait_until(lambda: loop.shown is None, 5, "idle screen")
        assert device.image.tobytes() != result_image.tobytes()
    finally:
        loop.close()


def test_idle_screen_dims_after_a_while_and_a_scan_wakes_it():
    device = open_panel("dummy")
    screen = Screen(device)
    loop = FeedbackLoop(None, screen, result_seconds=0.05, dim_after_seconds=0.2)
    loop.start()
    try:
        wait_until(lambda: screen.dimmed, 5, "dimmed idle screen")
        loop.post(Outcome(Result.ACCEPTED, direction="in", masked_name="A*"))
        assert loop.wait_idle(5)
        assert not screen.dimmed
    finally:
        loop.close()


def test_idle_screen_moves_against_burn_in():
    device = open_panel("dummy")
    loop = FeedbackLoop(None, Screen(device), idle_shift_seconds=0.05)
    loop.start()
    try:
        loop.post(StationState(venue="Cổng 1"))
        assert loop.wait_idle(5)
        first = device.image.tobytes()
        wait_until(lambda: device.image.tobytes() != first, 5, "idle screen to move")
    finally:
        loop.close()


def test_posting_never_blocks_and_a_flood_of_states_costs_no_memory():
    gate = threading.Event()

    class SlowScreen:
        dimmed = False

        def show(self, image):
            gate.wait(10)  # an I2C bus that hangs

        def dim(self, on):
            pass

        def close(self):
            pass

    loop = FeedbackLoop(None, SlowScreen())
    loop.start()
    try:
        tracemalloc.start()
        before = tracemalloc.take_snapshot()
        started = time.monotonic()
        for i in range(10_000):
            loop.post(StationState(backlog=i))
        elapsed = time.monotonic() - started
        after = tracemalloc.take_snapshot()
        tracemalloc.stop()
        grown = sum(s.size_diff for s in after.compare_to(before, "filename"))
        assert elapsed < 5  # returned while the screen was stuck
        assert grown < 200_000
        gate.set()
        assert loop.wait_idle(10)
        assert loop.state.backlog == 9_999  # the newest state is the one shown
    finally:
        gate.set()
        loop.close()


def test_a_screen_attached_late_shows_the_current_result_at_once_and_is_blanked_at_close():
    from edge.display.screens import render_result

    device = open_panel("dummy")
    loop = FeedbackLoop(None, None, result_seconds=60)  # the panel did not answer at start
    loop.start()
    try:
        loop.post(StationState(venue="Cổng 1", online=True))
        loop.post(Outcome(Result.ACCEPTED, direction="in", masked_name="A*"))
        assert loop.wait_idle(5)
        loop.attach(screen=Screen(device))
        assert loop.wait_idle(5)
        expected = render_result(Outcome(Result.ACCEPTED, direction="in", masked_name="A*"),
                                 StationState(venue="Cổng 1", online=True))
        assert device.image.convert("1").tobytes() == expected.convert("1").tobytes()
    finally:
        loop.close()
    assert device.image.getbbox() is None


def test_a_part_attached_after_close_is_released():
    from PIL import Image

    device = open_panel("dummy")
    device.display(Image.new("1", (128, 64), 1))  # lit
    loop = FeedbackLoop(None, None)
    loop.close()
    loop.attach(screen=Screen(device))  # the retry opened the panel as the station stopped
    assert device.image.getbbox() is None  # cleared and released, not left lit
