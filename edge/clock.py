"""What the station knows about time: wall clock, monotonic clock, boot id, NTP sync state."""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import logging
import time
import uuid
from pathlib import Path

from edge.policy import Instant

logger = logging.getLogger(__name__)

_TIME_ERROR = 5  # adjtimex(2) returns this while the kernel clock is not synchronised


def read_boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        # Not Linux: a per-process id still keeps monotonic times from being compared across runs.
        return "proc-" + uuid.uuid4().hex


class _Timex(ctypes.Structure):
    # Only the leading fields matter; the tail is padding big enough for any libc.
    _fields_ = [("modes", ctypes.c_uint), ("_rest", ctypes.c_byte * 512)]


@functools.cache
def _libc() -> ctypes.CDLL | None:
    # find_library runs ldconfig (about 1.5 ms): once per process, not once per scan.
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name, use_errno=True) if name else None
    except OSError:
        return None


def clock_synchronised() -> bool:
    """True when the kernel says NTP (timesyncd, chrony) has synchronised the clock."""
    libc = _libc()
    if libc is None:
        return False
    try:
        tx = _Timex()
        state = libc.adjtimex(ctypes.byref(tx))
    except (OSError, AttributeError):
        return False
    return state not in (-1, _TIME_ERROR)


class SystemClock:
    """The station's clock; tests pass their own object with the same two methods."""

    def __init__(self) -> None:
        self.boot_id = read_boot_id()

    def now(self) -> Instant:
        return Instant(time.time(), time.monotonic(), self.boot_id)

    def synced(self) -> bool:
        return clock_synchronised()
