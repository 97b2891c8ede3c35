"""The Raspberry Pi camera module through picamera2, reading only the luma plane."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator

from edge.drivers.ports import Frame
from qrgate.errors import DriverError, DriverUnavailable

logger = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 not installed (apt install python3-picamera2; "
    "venv needs --system-site-packages)"
)

# Lens position in dioptres (1 / distance in metres) for cameras with a focus motor
# when autofocus is off: 5 dioptres = 20 cm, where people hold a card or phone.
FIXED_LENS_POSITION = 5.0


class Picamera2Source:
    """A Raspberry Pi camera (Camera Module 2/3, HQ, or compatible) on the CSI connector.

    Wiring: the ribbon cable goes into the CAMERA (or CAM0/CAM1) connector with the
    contacts facing the connector's contacts; the camera is found by libcamera at boot,
    no ``config.txt`` change is needed for official modules. The service user must be
    in group ``video``.

    The camera runs a small YUV420 "lores" stream of ``size`` at ``fps`` beside a main
    stream of the same size; frames are the stream's Y (luma) plane only, which is the
    grayscale image the decoders want, without any colour conversion. Cameras with
    autofocus (Camera Module 3) focus continuously in the macro range, since codes are
    held close; ``autofocus=False`` fixes the lens at about 20 cm. Each capture waits
    for the next completed frame, so frames are always the newest.
    """

    name = "picamera2"

    def __init__(
        self,
        *,
        size: tuple[int, int] = (640, 480),
        fps: int = 15,
        autofocus: bool = True,
    ):
        try:
            from picamera2 import Picamera2
        except ImportError as exc:
            raise DriverUnavailable(PICAMERA2_MISSING) from exc
        self.width, self.height = (int(size[0]), int(size[1]))
        self.fps = fps
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._reading = False
        try:
            self._camera = Picamera2()
        except (IndexError, RuntimeError, OSError) as exc:
            # picamera2 raises IndexError when libcamera lists no camera at all.
            raise DriverError(f"no Raspberry Pi camera found by libcamera: {exc}") from exc
        try:
            self._configure(autofocus)
        except Exception:
            self._camera.close()
            raise

    def _configure(self, autofocus: bool) -> None:
        camera = self._camera
        frame_us = int(1_000_000 / self.fps)
        config = camera.create_video_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            lores={"size": (self.width, self.height), "format": "YUV420"},
            controls={"FrameDurationLimits": (frame_us, frame_us)},
            # Few buffers: more only add latency between a card appearing and a decode.
            buffer_count=2,
        )
        camera.configure(config)
        camera.set_controls(self._focus_controls(autofocus))
        camera.start()
        logger.info("picamera2 started: %dx%d Y plane at %d fps", self.width, self.height,
                    self.fps)

    def _focus_controls(self, autofocus: bool) -> dict:
        if "AfMode" not in self._camera.camera_controls:
            logger.info("camera has a fixed-focus lens; no focus control")
            return {}
        from libcamera import controls

        if autofocus:
            return {
                "AfMode": controls.AfModeEnum.Continuous,
                "AfRange": controls.AfRangeEnum.Macro,
            }
        return {"AfMode": controls.AfModeEnum.Manual, "LensPosition": FIXED_LENS_POSITION}

    def captures(self) -> Iterator[Frame]:
        """Yield the Y plane of each new frame until ``close()`` is called."""
        with self._lock:
            if self._closed.is_set() or self._camera is None:
                return
            self._reading = True
        try:
            while not self._closed.is_set():
                yuv = self._camera.capture_array("lores")
                # Rows past `height` hold U and V; columns past `width` are stride padding.
                yield Frame(yuv[: self.height, : self.width], time.monotonic_ns(), "picamera2")
        finally:
            with self._lock:
                self._reading = False
                self._release()

    def _release(self) -> None:
        camera, self._camera = self._camera, None
        if camera is not None:
            camera.stop()
            camera.close()

    def close(self) -> None:
        """Stop the camera; the capture loop ends after the frame in flight."""
        self._closed.set()
        with self._lock:
            if not self._reading:
                self._release()
