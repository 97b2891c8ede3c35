"""A recorded video file played as a camera, for demos, field-recording replays and benchmarks."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import cv2
import numpy as np

from edge.drivers.ports import Frame
from qrgate.errors import DriverError, UserError

logger = logging.getLogger(__name__)

# Used when a container does not say its frame rate; typical of phone recordings.
FALLBACK_FPS = 25.0


def to_gray(image: np.ndarray) -> np.ndarray:
    """Turn an OpenCV BGR, BGRA or already-gray image into a 2-D uint8 array."""
    if image.ndim == 2:
        return image
    if image.shape[2] == 4:
        return cv2.cvtColor(image, cv2.COLOR_BGRA2GRAY)
    return cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class VideoSource:
    """Plays a video file (anything OpenCV's FFmpeg backend reads) as grayscale frames.

    By default every frame is yielded as fast as the pipeline takes them, which is what
    a benchmark wants. With ``realtime`` the file plays at its own frame rate, as a live
    camera would: when the pipeline falls behind, the frames it missed are skipped, so
    it always gets the frame that is "now" in the recording. ``origin`` of each frame is
    ``"<path>#<frame index>"``. ``clock`` (seconds, monotonic) is for tests.
    """

    name = "video"

    def __init__(
        self,
        path: str | Path,
        *,
        realtime: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ):
        self.path = Path(path)
        if not self.path.is_file():
            raise UserError(f"video file {self.path} does not exist")
        self.realtime = realtime
        self._clock = clock
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._reading = False
        self._capture = cv2.VideoCapture(str(self.path))
        if not self._capture.isOpened():
            self._capture.release()
            raise DriverError(f"cannot open video file {self.path} (format not supported?)")
        fps = self._capture.get(cv2.CAP_PROP_FPS)
        if not fps or fps <= 0 or fps > 1000:
            logger.info("%s does not state a usable frame rate; assuming %s fps",
                        self.path, FALLBACK_FPS)
            fps = FALLBACK_FPS
        self.fps = float(fps)

    def _frame(self, image: np.ndarray, index: int) -> Frame:
        return Frame(to_gray(image), time.monotonic_ns(), f"{self.path}#{index}")

    def captures(self) -> Iterator[Frame]:
        """Yield the file's frames in order until it ends or ``close()`` is called."""
        with self._lock:
            if self._closed.is_set() or self._capture is None:
                return
            self._reading = True
        try:
            yield from self._play()
        finally:
            with self._lock:
                self._reading = False
                self._release()

    def _play(self) -> Iterator[Frame]:
        capture = self._capture
        index = 0  # index of the next frame in the file
        started = self._clock()
        while not self._closed.is_set():
            if self.realtime:
                due_index = int((self._clock() - started) * self.fps)
                skipped = 0
                while index < due_index and capture.grab():
                    index += 1
                    skipped += 1
                if skipped:
                    logger.debug("%s: pipeline behind, skipped %d frames", self.path, skipped)
                delay = started + index / self.fps - self._clock()
                if delay > 0 and self._closed.wait(delay):
                    return
            ok, image = capture.read()
            if not ok:
                return
            yield self._frame(image, index)
            index += 1

    def _release(self) -> None:
        if self._capture is not None:
            self._capture.release()
            self._capture = None

    def close(self) -> None:
        """Stop playing and release the file; safe from any thread, twice."""
        self._closed.set()
        with self._lock:
            # While captures() runs it owns the capture and releases it on its way out.
            if not self._reading:
                self._release()
