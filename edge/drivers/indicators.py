"""The port for lights and sound: one call per decided scan."""

from __future__ import annotations

from typing import Protocol

from edge.outcome import Result


class Indicators(Protocol):
    """Lights and buzzer that tell a person the result of their scan.

    Must:
      - ``signal(result)``: start the pattern for ``result`` and return at once (patterns
        run in the background); a new signal cuts the previous pattern short, so a fast
        queue never hears stale beeps.
      - ``close()``: switch everything off and release the pins; safe to call twice.
    Each ``Result`` has its own pattern, told apart by colour *and* by sound, so a person
    who cannot see the colours (or hear in a noisy hall) still knows.
    """

    def signal(self, result: Result) -> None: ...

    def close(self) -> None: ...
