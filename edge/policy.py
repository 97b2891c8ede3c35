"""The check-in policy: a pure function from (person, their last check-in, now) to a verdict.

No clock, no I/O: the caller passes the time. Codes are a closed list (docs/protocol.md).
"""

from __future__ import annotations

from dataclasses import dataclass

from qrgate.config import option
from qrgate.protocol import MODES


@dataclass(frozen=True)
class PolicyConfig:
    """How a station decides; the [policy] section of station.toml."""

    mode: str = option("toggle", choices=MODES)
    # A second scan of the same person within this window is "already counted": a
    # person holding a card in front of the camera for a few seconds is one check-in.
    repeat_window_s: float = option(30.0, min=1.0, max=3600.0)
    # In toggle mode, an "in" older than this is treated as a forgotten exit: the next
    # scan is an entry again rather than an exit the next morning.
    toggle_reset_s: float = option(14 * 3600.0, min=60.0, max=7 * 86400.0)
    # Refuse a second entry without an exit in between (and the reverse), as this
    # station saw them: for a lane whose entries and exits pass the same station.
    anti_passback: bool = option(False)


@dataclass(frozen=True, slots=True)
class Instant:
    """A moment as the station knows it: wall time, and monotonic time within a boot.

    Monotonic time is trusted within one boot (the wall clock may be stepped by NTP);
    across boots only the wall clock can compare.
    """

    wall_s: float
    mono_s: float
    boot_id: str

    def seconds_since(self, earlier: Instant) -> float:
        if earlier.boot_id == self.boot_id:
            return self.mono_s - earlier.mono_s
        return self.wall_s - earlier.wall_s


@dataclass(frozen=True, slots=True)
class LastCheckin:
    direction: str  # "in" / "out"
    at: Instant


@dataclass(frozen=True, slots=True)
class Verdict:
    """``accepted`` with a direction, or refused with a ``code``."""

    accepted: bool
    code: str  # "accepted", "already_counted", "blocked" or "passback"
    direction: str = ""


def decide_checkin(last: LastCheckin | None, now: Instant, config: PolicyConfig, *, blocked: bool = False) -> Verdict:
    """Decide one scan of a person whose payload has already been parsed and accepted.

    ``blocked``: the person is on the block list pushed by the server.
    """
    if blocked:
        return Verdict(False, "blocked")
    if last is not None:
        elapsed = now.seconds_since(last.at)
        # A negative gap means the wall clock went backwards across a reboot: be safe,
        # treat it as inside the window rather than counting twice.
        if elapsed < config.repeat_window_s:
            return Verdict(False, "already_counted", last.direction)
    still_in = last is not None and now.seconds_since(last.at) < config.toggle_reset_s
    if config.mode == "entry":
        if config.anti_passback and still_in and last.direction == "in":
            return Verdict(False, "passback", "in")
        direction = "in"
    elif config.mode == "exit":
        if config.anti_passback and last is not None and last.direction == "out":
            return Verdict(False, "passback", "out")
        direction = "out"
    elif last is not None and last.direction == "in" and now.seconds_since(last.at) < config.toggle_reset_s:
        direction = "out"
    else:
        direction = "in"
    return Verdict(True, "accepted", direction)
