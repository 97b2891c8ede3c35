"""Lights and buzzer through gpiozero's MockFactory, and the feedback loop's timing."""

from __future__ import annotations

import threading
import time
import tracemalloc

import pytest
from gpiozero.pins.mock import MockFactory

from conftest import wait_until
from edge.display.panel import Screen, open_panel
from edge.drivers.indicators_gpio import PATTERNS, GpioIndicators
from edge.feedback import FeedbackLoop
from edge.outcome import Outcome, Result, StationState

PINS = {"green": 17, "red": 27, "amber": 22, "buzzer": 18}


@pytest.fixture
def factory():
    f = MockFactory()
    yield f
    f.reset()


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


def run_pattern(factory, indicators, result):
    pins = {name: factory.pin(n) for name, n in PINS.items()}
    for pin in pins.values():
        pin.clear_states()
    indicators.signal(result)
    pattern = PATTERNS[result]
    wait_until(lambda: len(high_periods(pins["buzzer"])) == pattern.beep_count, 10, f"{result} beeps")
    for name in pattern.leds:
        wait_until(lambda: len(high_periods(pins[name])) == pattern.led_count, 10, f"{result} {name} LED")
    return {name: high_periods(pin) for name, pin in pins.items()}


@pytest.mark.parametrize("result", list(Result))
def test_each_result_lights_its_own_leds_and_beeps_its_own_rhythm(factory, indicators, result):
    periods = run_pattern(factory, indicators, result)
    pattern = PATTERNS[result]
    lit = {name for name in ("green", "red", "amber") if periods[name]}
    assert lit == set(pattern.leds)
    assert len(periods["buzzer"]) == pattern.beep_count
    for on in periods["buzzer"]:
        assert on == pytest.approx(pattern.beep_on, abs=0.05)
    for name in pattern.leds:
        assert periods[name][0] == pytest.approx(pattern.led_on, abs=0.1)


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
