"""What the station tells the world after each scan: the value feedback listens to.

The pipeline publishes one ``Outcome`` per decided scan and ``StationState`` whenever
connectivity or backlog changes. Feedback (lights, buzzer, screen) only consumes these;
it never calls back into the pipeline.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class Result(str, Enum):
    """The closed set of things a person at the gate can be told."""

    ACCEPTED = "accepted"  # counted and stored; server reachable
    ACCEPTED_OFFLINE = "accepted_offline"  # counted and stored; will be sent later
    ALREADY_COUNTED = "already_counted"  # same person inside the repeat window
    REFUSED = "refused"  # unreadable, unknown or invalid code
    FAULT = "fault"  # the station cannot record right now (disk, key...)


@dataclass(frozen=True, slots=True)
class Outcome:
    """One decided scan, as shown to the person in front of the station.

    ``masked_name`` is already masked (never the full name); ``reason`` is the refusal
    or fault code (see docs/protocol.md), empty when accepted; ``direction`` is
    ``"in"`` or ``"out"`` for counted scans.
    """

    result: Result
    reason: str = ""
    direction: str = ""
    masked_name: str = ""
    kind: str = ""  # payload kind: cccd, bhyt, national, pass
    mono_ns: int = 0


@dataclass(frozen=True, slots=True)
class StationState:
    """Idle-screen facts: where the station is and whether it is keeping up."""

    venue: str = ""
    mode: str = "toggle"  # entry / exit / toggle
    online: bool = False
    backlog: int = 0
    fault: str = ""  # non-empty while the station cannot record
