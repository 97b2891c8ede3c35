"""Ports between the station's stages: what a source hands to the decoder.

A *source* produces captures. A camera-like source yields ``Frame`` (a grayscale image
the decoder must read); a scanner yields ``ScannedText`` (the scanner decoded the code
itself). Sources keep only the newest frame: when the pipeline is slower than the
camera, stale frames are dropped, never queued.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np


@dataclass(frozen=True, slots=True)
class Frame:
    """One grayscale camera frame: ``gray`` is a 2-D uint8 array (H x W)."""

    gray: np.ndarray
    mono_ns: int
    origin: str = ""  # file name, device path: for logs and the decode tool


@dataclass(frozen=True, slots=True)
class ScannedText:
    """A code already decoded by a scanner (USB HID or serial)."""

    text: str
    mono_ns: int
    origin: str = ""
    raw: bytes = field(default=b"", repr=False)


Capture = Frame | ScannedText

# A device that vanished is tried again after a pause that doubles up to this.
RETRY_MAX_S = 5.0


def retry_with_backoff(closed: threading.Event, first_delay_s: float, attempt: Callable[[], bool]) -> bool:
    """Call ``attempt`` after growing pauses until it returns True (then True), or until
    ``closed`` is set (then False at once, even mid-pause)."""
    delay = first_delay_s
    while not closed.wait(delay):
        if attempt():
            return True
        delay = min(delay * 2, RETRY_MAX_S)
    return False


class BlockingReader:
    """Base of a scanner whose ``captures()`` blocks on the device in the pipeline thread
    while ``close()`` may come from any other thread (the station's stop, a signal).

    Subclasses must implement ``_is_open()`` (the device is open now), ``_read_codes()``
    (the reading loop; it ends once ``self._closed`` is set) and ``_release()`` (close
    the device; called once, by whichever side finishes last). They may override
    ``_interrupt()`` to wake a reader blocked without a timeout.
    """

    def __init__(self) -> None:
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._reading = False

    def captures(self) -> Iterator[ScannedText]:
        with self._lock:
            if self._closed.is_set() or not self._is_open():
                return
            self._reading = True
        try:
            yield from self._read_codes()
        finally:
            with self._lock:
                self._reading = False
                self._release()

    def close(self) -> None:
        """Stop reading and release the device; safe from any thread, and twice."""
        self._closed.set()
        with self._lock:
            if self._reading:
                self._interrupt()  # the reader releases the device on its way out
            else:
                self._release()

    def _is_open(self) -> bool:
        raise NotImplementedError

    def _read_codes(self) -> Iterator[ScannedText]:
        raise NotImplementedError

    def _release(self) -> None:
        raise NotImplementedError

    def _interrupt(self) -> None:
        """Wake a blocked reader; by default it notices ``_closed`` within its timeout."""


@runtime_checkable
class Source(Protocol):
    """Contract for every input source.

    Must:
      - ``captures()``: yield ``Frame`` or ``ScannedText`` until ``close()`` is called or
        the source is exhausted (a folder read once, a video that ended). Blocking is
        fine; it runs on the pipeline thread. When it cannot keep up it drops old frames.
      - ``close()``: release the device; safe to call twice and from another thread.
    Errors opening the device are raised as ``qrgate.errors.DriverError`` with the
    device path in the message, also when the device is not there (yet): the station
    shows the camera or scanner fault and tries again. ``UserError`` is only for a
    mistake in the options, which retrying cannot mend.
    """

    name: str

    def captures(self) -> Iterator[Capture]: ...

    def close(self) -> None: ...
