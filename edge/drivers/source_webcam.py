"""A USB (UVC) webcam read through OpenCV, keeping only the newest frame."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

import cv2

from edge.drivers.ports import RETRY_MAX_S, Frame
from edge.drivers.source_video import to_gray
from qrgate.errors import DriverError

logger = logging.getLogger(__name__)



class WebcamSource:
    """A webcam on a USB port, by index (``0``) or device path (``/dev/video0``).

    Wiring: any UVC webcam in a USB port; the service user must be in group ``video``.
    Prefer a stable path such as ``/dev/v4l/by-id/usb-...-video-index0`` so the station
    finds the same camera after a reboot.

    A grabber thread reads the camera at its own pace and keeps only the newest frame
    in a one-slot buffer; ``captures()`` hands out that frame, so a slow decoder always
    sees the present, never a queue of stale frames. If the camera stops delivering
    (unplugged, USB reset), the grabber logs it and reopens it with growing back-off
    while ``captures()`` keeps waiting.
    """

    name = "webcam"

    def __init__(
        self,
        device: int | str = 0,
        *,
        width: int = 640,
        height: int = 480,
        retry_s: float = 0.5,
    ):
        self.device = device
        self.width = width
        self.height = height
        self.retry_s = retry_s
        self._closed = threading.Event()
        self._slot_changed = threading.Condition()
        self._newest: Frame | None = None
        self._capture = self._open()
        if self._capture is None:
            raise DriverError(f"cannot open camera {device} (missing, busy, or no permission?)")
        self._grabber = threading.Thread(
            target=self._grab_forever, name=f"webcam-{device}", daemon=True
        )
        self._grabber.start()

    def _open(self) -> cv2.VideoCapture | None:
        capture = cv2.VideoCapture(self.device)
        if not capture.isOpened():
            capture.release()
            return None
        capture.set(cv2.CAP_PROP_FRAME_WIDTH, self.width)
        capture.set(cv2.CAP_PROP_FRAME_HEIGHT, self.height)
        # Ask the driver not to queue frames either; not every backend honours it.
        capture.set(cv2.CAP_PROP_BUFFERSIZE, 1)
        return capture

    def _grab_forever(self) -> None:
        capture = self._capture
        delay = self.retry_s
        try:
            while not self._closed.is_set():
                ok, image = capture.read() if capture is not None else (False, None)
                if ok:
                    delay = self.retry_s
                    self._offer(Frame(to_gray(image), time.monotonic_ns(), str(self.device)))
                    continue
                if capture is not None:
                    logger.warning("camera %s stopped delivering frames; reopening", self.device)
                    capture.release()
                    capture = None
                    with self._slot_changed:
                        self._newest = None  # taken before the failure: no longer "now"
                if self._closed.wait(delay):
                    return
                delay = min(delay * 2, RETRY_MAX_S)
                capture = self._open()
                if capture is None:
                    logger.warning("camera %s still unavailable; next try in %.1f s",
                                   self.device, delay)
                else:
                    logger.info("camera %s is back", self.device)
        finally:
            # The grabber owns the capture: releasing it from another thread while
            # read() is blocked inside the driver is not safe.
            if capture is not None:
                capture.release()

    def _offer(self, frame: Frame) -> None:
        with self._slot_changed:
            self._newest = frame  # an unread older frame is dropped here, on purpose
            self._slot_changed.notify_all()

    def captures(self) -> Iterator[Frame]:
        """Yield the newest frame each time one is available, until ``close()``."""
        while True:
            with self._slot_changed:
                self._slot_changed.wait_for(
                    lambda: self._newest is not None or self._closed.is_set()
                )
                if self._closed.is_set():
                    return
                frame, self._newest = self._newest, None
            yield frame

    def close(self) -> None:
        """Stop the grabber and release the camera; safe from any thread, twice."""
        self._closed.set()
        with self._slot_changed:
            self._slot_changed.notify_all()
        if self._grabber is not threading.current_thread():
            # A read() stuck in the driver can take a while; the daemon thread then
            # releases the camera itself when it returns.
            self._grabber.join(timeout=2.0)
