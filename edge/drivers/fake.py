"""Stand-in input source for pipeline tests: yields a fixed list of captures, then ends."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Iterator

import numpy as np

from edge.drivers.ports import Capture, Frame, ScannedText


class ListSource:
    """A source that replays ``items`` once, in order, then is exhausted.

    Items may be ``str`` (becomes ``ScannedText`` with ``raw`` = its UTF-8 bytes),
    ``bytes`` (``ScannedText`` as a serial scanner would deliver them, ``text`` decoded
    with replacement characters), a 2-D ``uint8`` array (becomes a ``Frame``), or a
    ready ``Frame`` / ``ScannedText`` (passed through unchanged).
    """

    name = "list"

    def __init__(self, items: Iterable[object], *, origin: str = "list"):
        self.origin = origin
        self._items = [self._to_capture_template(item) for item in items]
        self._closed = threading.Event()

    @staticmethod
    def _to_capture_template(item: object) -> object:
        if isinstance(item, (Frame, ScannedText, str, bytes)):
            return item
        if isinstance(item, np.ndarray):
            if item.ndim != 2 or item.dtype != np.uint8:
                raise TypeError(
                    f"ListSource frames must be 2-D uint8 arrays, got {item.ndim}-D {item.dtype}"
                )
            return item
        raise TypeError(f"ListSource cannot turn {type(item).__name__} into a capture")

    def _capture(self, item: object) -> Capture:
        now = time.monotonic_ns()
        if isinstance(item, (Frame, ScannedText)):
            return item
        if isinstance(item, str):
            return ScannedText(item, now, self.origin, item.encode("utf-8"))
        if isinstance(item, bytes):
            return ScannedText(item.decode("utf-8", "replace"), now, self.origin, item)
        return Frame(item, now, self.origin)

    def captures(self) -> Iterator[Capture]:
        """Yield every item once as a capture; stops early once ``close()`` is called."""
        for item in self._items:
            if self._closed.is_set():
                return
            yield self._capture(item)

    def close(self) -> None:
        """Stop the replay; safe to call twice and from another thread."""
        self._closed.set()
