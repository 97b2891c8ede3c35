"""Feedback: lights, buzzer and screen, driven on their own thread from posted events.

The pipeline calls ``post()`` and never waits: a slow I2C bus or a stuck buzzer must not
slow scanning. Outcomes are queued in order; station states are coalesced (only the
newest matters), so a flood of state changes costs no memory.
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable

from edge.display.screens import render_idle, render_result
from edge.outcome import Outcome, StationState

logger = logging.getLogger(__name__)

# The idle screen walks through these offsets against burn-in.
IDLE_SHIFTS = ((0, 0), (1, 0), (1, 1), (0, 1), (-1, 1), (-1, 0), (-1, -1), (0, -1), (1, -1))
MAX_PENDING_OUTCOMES = 256


class FeedbackLoop:
    """Shows each Outcome for ``result_seconds``, then the idle screen.

    ``indicators`` (edge.drivers.indicators.Indicators) and ``screen``
    (edge.display.panel.Screen) may each be None when the station has none, and be
    handed over later with ``attach()`` (a panel that answers only after start).
    """

    def __init__(self, indicators, screen, *, result_seconds: float = 2.5, idle_shift_seconds: float = 30.0,
                 dim_after_seconds: float = 120.0, clock: Callable[[], float] = time.monotonic):
        self.indicators = indicators
        self.screen = screen
        self.result_seconds = result_seconds
        self.idle_shift_seconds = idle_shift_seconds
        self.dim_after_seconds = dim_after_seconds
        self.clock = clock
        self.state = StationState()
        self.shown: Outcome | None = None
        self._outcomes: deque[Outcome] = deque()
        self._new_state: StationState | None = None
        self._new_parts: list[tuple[str, object]] = []
        self._cond = threading.Condition()
        self._posted = 0
        self._handled = 0
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="feedback", daemon=True)
        now = clock()
        self._result_until = 0.0
        self._next_shift = now + idle_shift_seconds
        self._shift_index = 0
        self._last_activity = now

    def start(self) -> None:
        self._thread.start()

    def post(self, event: Outcome | StationState) -> None:
        """Hand an event over; returns at once."""
        with self._cond:
            if isinstance(event, Outcome):
                if len(self._outcomes) >= MAX_PENDING_OUTCOMES:
                    # Only if the display thread is stuck for hundreds of scans: the
                    # records are safe in the outbox; showing stale results is useless.
                    self._outcomes.popleft()
                    self._handled += 1
                self._outcomes.append(event)
            else:
                if self._new_state is not None:
                    self._handled += 1  # the older state is replaced, never shown
                self._new_state = event
            self._posted += 1
            self._cond.notify_all()

    def attach(self, *, indicators=None, screen=None) -> None:
        """Start using lights or a screen that could not be opened at start; returns at
        once. A new screen shows the current view straight away."""
        parts = [(name, part) for name, part in (("indicators", indicators), ("screen", screen)) if part is not None]
        with self._cond:
            if not self._closed:
                self._new_parts += parts
                self._posted += len(parts)
                self._cond.notify_all()
                return
        for _, part in parts:  # too late: nobody else would release them
            part.close()

    def wait_idle(self, timeout: float) -> bool:
        """True once every posted event has been handled (for tests and the demo)."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while self._handled < self._posted:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._cond.wait(left)
        return True

    def close(self, timeout: float = 2.0) -> None:
        with self._cond:
            self._closed = True
            self._cond.notify_all()
        if self._thread.is_alive():
            self._thread.join(timeout)
        with self._cond:
            late, self._new_parts = [part for _, part in self._new_parts], []
        for part in (self.indicators, self.screen, *late):
            if part is not None:
                part.close()

    def _next_deadline(self, now: float) -> float:
        if self.shown is not None:
            return self._result_until
        deadlines = [self._next_shift]
        if self.screen is not None and not self.screen.dimmed:
            deadlines.append(self._last_activity + self.dim_after_seconds)
        return min(deadlines)

    def _run(self) -> None:
        try:
            self._draw_idle()
        except Exception:
            logger.exception("cannot draw the idle screen")
        while True:
            with self._cond:
                while not (self._closed or self._outcomes or self._new_state is not None or self._new_parts):
                    wait = self._next_deadline(self.clock()) - self.clock()
                    if wait <= 0:
                        break
                    self._cond.wait(wait)
                if self._closed:
                    return
                outcomes = list(self._outcomes)
                self._outcomes.clear()
                state, self._new_state = self._new_state, None
                parts, self._new_parts = self._new_parts, []
            try:
                self._step(outcomes, state, parts)
            except Exception:  # a broken panel must not stop the feedback thread
                logger.exception("feedback step failed")
            with self._cond:
                self._handled += len(outcomes) + (state is not None) + len(parts)
                self._cond.notify_all()

    def _step(self, outcomes: list[Outcome], state: StationState | None,
              parts: list[tuple[str, object]] = ()) -> None:
        now = self.clock()
        for name, part in parts:
            replaced = getattr(self, name)
            if replaced is not None:
                replaced.close()
            setattr(self, name, part)
        new_screen = any(name == "screen" for name, _ in parts)
        if state is not None:
            self.state = state
        for outcome in outcomes:
            self._last_activity = now
            if self.indicators is not None:
                self.indicators.signal(outcome.result)
            self.shown = outcome
            self._result_until = now + self.result_seconds
        if outcomes:
            self._wake_screen()
            self._show(render_result(self.shown, self.state))
            return
        if self.shown is not None and now >= self._result_until:
            # The idle screen first: ``shown`` is None only once the panel shows it.
            self._draw_idle()
            self.shown = None
            return
        if self.shown is not None:
            if state is not None or new_screen:  # keep the result, refresh its status line
                self._show(render_result(self.shown, self.state))
            return
        if now >= self._next_shift:
            self._shift_index = (self._shift_index + 1) % len(IDLE_SHIFTS)
            self._next_shift = now + self.idle_shift_seconds
            self._draw_idle()
        elif state is not None or new_screen:
            self._draw_idle()
        if self.screen is not None and now - self._last_activity >= self.dim_after_seconds:
            self.screen.dim(True)

    def _wake_screen(self) -> None:
        if self.screen is not None:
            self.screen.dim(False)

    def _draw_idle(self) -> None:
        self._show(render_idle(self.state, IDLE_SHIFTS[self._shift_index]))

    def _show(self, image) -> None:
        if self.screen is not None:
            self.screen.show(image)
