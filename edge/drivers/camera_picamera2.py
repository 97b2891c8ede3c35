"""The Raspberry Pi camera module through picamera2, reading only the luma plane."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from concurrent.futures import CancelledError

import numpy as np

from edge.drivers.ports import Frame
from qrgate.errors import DriverError, DriverUnavailable, UserError

logger = logging.getLogger(__name__)

PICAMERA2_MISSING = (
    "picamera2 not installed (apt install python3-picamera2; "
    "venv needs --system-site-packages)"
)
NUMPY_NOT_APTS = "numpy {version} in the venv is not apt's (reinstall with provisioning/install.sh)"
# apt's python3-numpy, which apt's picamera2, simplejpeg and libcamera are built against.
APT_SITE_PACKAGES = "/usr/lib/python3/dist-packages/"

# Lens position in dioptres (1 / distance in metres) for cameras with a focus motor
# when autofocus is off: 5 dioptres = 20 cm, where people hold a card or phone.
FIXED_LENS_POSITION = 5.0

# A capture that waits longer than this means the camera stopped sending frames (a
# loose ribbon cable): picamera2 would otherwise wait for ever.
CAPTURE_TIMEOUT_S = 3.0

FPS_RANGE = (10, 120)
WIDTH_RANGE = (160, 2048)
HEIGHT_RANGE = (120, 1536)


def _load_picamera2():
    """Import picamera2 and libcamera's controls; every way this fails becomes ours.

    Only the package itself being absent is ``DriverUnavailable``: everything else
    (numpy from pip shadowing apt's, a broken libcamera) is a camera fault the station
    shows and tries again.
    """
    try:
        from picamera2 import Picamera2
        from libcamera import controls
    except ModuleNotFoundError as exc:
        if exc.name in ("picamera2", "libcamera"):
            raise DriverUnavailable(PICAMERA2_MISSING) from exc
        raise DriverError(_cannot_load(exc)) from exc
    except Exception as exc:  # an import runs third-party code: any error means "broken"
        raise DriverError(_cannot_load(exc)) from exc
    # Captures wait with a timeout and a stuck capture is cancelled (picamera2 0.3.20,
    # "Improve handling of timeouts and cameras that stop responding").
    if not hasattr(Picamera2, "cancel_all_and_flush"):
        raise DriverError("picamera2 is older than 0.3.20 (apt upgrade python3-picamera2)")
    return Picamera2, controls


def _cannot_load(exc: Exception) -> str:
    # simplejpeg and libcamera's bindings are built against apt's numpy 1.x; a numpy 2
    # from pip that shadows it fails their import with "numpy.dtype size changed"
    # (ValueError) or "numpy.core.multiarray failed to import" (ImportError).
    if "numpy" in str(exc) and not isinstance(exc, ModuleNotFoundError):
        numpy_file = getattr(np, "__file__", "") or ""
        if not numpy_file.startswith(APT_SITE_PACKAGES):
            return "picamera2 cannot load: " + NUMPY_NOT_APTS.format(version=np.__version__)
    return (f"picamera2 cannot load: {type(exc).__name__}: {exc} "
            "(apt install --reinstall python3-picamera2 python3-libcamera)")


def _check_range(what: str, value: int, bounds: tuple[int, int]) -> None:
    low, high = bounds
    if not low <= value <= high:
        raise UserError(f"picamera2 {what} must be between {low} and {high}, not {value}")


class Picamera2Source:
    """A Raspberry Pi camera (Camera Module 2/3, HQ, or compatible) on the CSI connector.

    Wiring: the ribbon cable goes into the CAMERA (or CAM0/CAM1) connector with the
    contacts facing the connector's contacts; the camera is found by libcamera at boot,
    no ``config.txt`` change is needed for official modules. The service user must be
    in group ``video``.

    The camera runs one YUV420 stream of about ``size`` at a fixed ``fps``; frames are its
    Y (luma) plane, the grayscale image the decoders want, without colour conversion.
    picamera2 may align the size (``width``/``height`` hold what it chose). Exposure is
    kept short so a moving phone stays sharp: it never exceeds one frame time (33 ms at
    30 fps), and the exposure mode raises gain before lengthening it. Cameras with
    autofocus (Camera Module 3) focus continuously in the macro range, since codes are
    held close; ``autofocus=False`` fixes the lens at about 20 cm.

    Errors: ``UserError`` for an option out of range; ``DriverUnavailable`` when picamera2
    is not installed; ``DriverError`` for everything else (picamera2 cannot load, no
    camera, camera busy, configuration refused, no frame for ``CAPTURE_TIMEOUT_S``).
    """

    name = "picamera2"

    def __init__(
        self,
        *,
        size: tuple[int, int] = (640, 480),
        fps: int = 30,
        autofocus: bool = True,
    ):
        width, height = (int(size[0]), int(size[1]))
        _check_range("width", width, WIDTH_RANGE)
        _check_range("height", height, HEIGHT_RANGE)
        _check_range("fps", int(fps), FPS_RANGE)
        Picamera2, self._libcamera_controls = _load_picamera2()
        self.width, self.height = width, height
        self.stride = width
        self.fps = int(fps)
        self._closed = threading.Event()
        self._lock = threading.Lock()
        self._in_capture = False
        try:
            self._camera = Picamera2()
        except IndexError as exc:
            # Picamera2() indexes libcamera's camera list: an empty list is an IndexError.
            raise DriverError(
                "no Raspberry Pi camera found by libcamera: check the ribbon cable "
                "(rpicam-hello --list-cameras lists what the Pi sees)"
            ) from exc
        except (RuntimeError, OSError) as exc:
            raise DriverError(
                f"Raspberry Pi camera cannot be opened: {exc} (in use by another "
                "program, or cable loose? rpicam-hello --list-cameras)"
            ) from exc
        try:
            self._configure(autofocus)
        except (RuntimeError, OSError) as exc:
            self._release()
            raise DriverError(f"Raspberry Pi camera refused {width}x{height} YUV420 at "
                              f"{self.fps} fps: {exc}") from exc
        except BaseException:
            self._release()
            raise
        try:
            self._camera.start()
        except (RuntimeError, OSError) as exc:
            self._release()
            raise DriverError(f"Raspberry Pi camera did not start: {exc} (in use by another "
                              "program? rpicam-hello --list-cameras)") from exc
        logger.info("picamera2 started: %dx%d Y plane (stride %d) at %d fps", self.width,
                    self.height, self.stride, self.fps)

    def _configure(self, autofocus: bool) -> None:
        camera = self._camera
        # One YUV420 main stream, no lores: the Y plane is the grayscale picture, and a
        # lores stream of the same size would only make the ISP write a second copy.
        # The preview configuration (picamera2's live view) rather than the video one:
        # full-range YUV (sYCC), so Y spans 0-255 rather than 16-235, and 4 buffers.
        # Of those picamera2 keeps at most one finished frame (queue=True) and hands the
        # rest back to libcamera, so more buffers add no latency while fewer starve
        # libcamera and it drops frames. The kept frame is replaced by each newer one,
        # so a capture returns the newest frame without waiting for the next.
        config = camera.create_preview_configuration(
            main={"size": (self.width, self.height), "format": "YUV420"},
            controls=self._controls(autofocus),
            buffer_count=4,
            queue=True,
        )
        # Widths whose planes are a multiple of the ISP's 32/64-byte alignment avoid
        # row padding; picamera2 rounds the width down to one.
        camera.align_configuration(config)
        camera.configure(config)
        # libcamera may have adjusted the size, and rows may be padded to a stride:
        # crop by what was configured, not by what was asked for.
        main = camera.stream_configuration("main")
        self.width, self.height = (int(main["size"][0]), int(main["size"][1]))
        self.stride = int(main["stride"])

    def _controls(self, autofocus: bool) -> dict:
        # picamera2 refuses a control the camera does not list (a USB camera lists few).
        available = self._camera.camera_controls
        controls = self._libcamera_controls
        wanted: dict = {}
        if "FrameDurationLimits" in available:
            # A fixed frame time; it is also the longest exposure libcamera will use.
            frame_us = int(1_000_000 / self.fps)
            wanted["FrameDurationLimits"] = (frame_us, frame_us)
        if "AeExposureMode" in available:
            # "Short": the AGC raises gain before lengthening the exposure (Camera Module
            # 3's tuning, imx708.json: 20 ms at gain 6, where "normal" uses 60 ms at gain 4).
            wanted["AeExposureMode"] = controls.AeExposureModeEnum.Short
        if "AfMode" not in available:
            logger.info("camera has a fixed-focus lens; no focus control")
        elif autofocus:
            wanted["AfMode"] = controls.AfModeEnum.Continuous
            wanted["AfRange"] = controls.AfRangeEnum.Macro
        else:
            wanted["AfMode"] = controls.AfModeEnum.Manual
            wanted["LensPosition"] = FIXED_LENS_POSITION
        return wanted

    def captures(self) -> Iterator[Frame]:
        """Yield the Y plane of each new frame until ``close()`` is called.

        Raises ``DriverError`` when no frame comes for ``CAPTURE_TIMEOUT_S``.
        """
        with self._lock:
            camera = self._camera
            if self._closed.is_set() or camera is None:
                return
        height, width, stride = self.height, self.width, self.stride
        try:
            while (yuv := self._next_buffer(camera)) is not None:
                # picamera2 returns YUV420 as (height * 3/2) rows of `stride` bytes: the Y
                # plane, then U and V. Anything else and the crop below would be garbage.
                if yuv.shape != (height * 3 // 2, stride):
                    raise DriverError(
                        f"picamera2 returned a {yuv.shape[1]}x{yuv.shape[0]} buffer for a "
                        f"{width}x{height} YUV420 stream with stride {stride}")
                yield Frame(np.ascontiguousarray(yuv[:height, :width]), time.monotonic_ns(),
                            "picamera2")
        finally:
            with self._lock:
                self._release()

    def _next_buffer(self, camera) -> np.ndarray | None:
        """The next finished YUV420 buffer, or None once ``close()`` was called."""
        with self._lock:
            if self._closed.is_set():
                return None
            self._in_capture = True  # close() now cancels the capture instead of releasing
        try:
            yuv = camera.capture_array("main", wait=CAPTURE_TIMEOUT_S)
        except CancelledError:
            return None  # close() cancelled the capture in flight
        except TimeoutError as exc:
            if self._closed.is_set():
                return None
            # picamera2's advice after a timeout: cancel the stuck job so stop() works.
            camera.cancel_all_and_flush()
            raise DriverError(f"no picture from the Raspberry Pi camera for "
                              f"{CAPTURE_TIMEOUT_S:.0f} s: check the ribbon cable") from exc
        except (RuntimeError, OSError) as exc:
            raise DriverError(f"Raspberry Pi camera capture failed: {exc}") from exc
        finally:
            with self._lock:
                self._in_capture = False
                closed = self._closed.is_set()
        return None if closed else yuv

    def _release(self) -> None:
        camera, self._camera = self._camera, None
        if camera is None:
            return
        try:
            camera.stop()
            camera.close()
        except (RuntimeError, OSError):
            # Closing runs after a fault or at shutdown: the fault already said what is wrong.
            logger.exception("closing the Raspberry Pi camera")

    def close(self) -> None:
        """Stop and free the camera; a capture waiting for a frame ends at once."""
        self._closed.set()
        with self._lock:
            if self._in_capture:
                # Wakes the capture; the capture loop then frees the camera.
                self._camera.cancel_all_and_flush()
            else:
                self._release()
