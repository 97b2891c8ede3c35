"""Tests of the picamera2 camera driver: its faults, its stream and its frames.

picamera2 runs only on a Raspberry Pi, so these tests put a fake ``picamera2`` and
``libcamera`` in ``sys.modules`` (or a broken package on ``sys.path``): that is the
third-party boundary. The fake returns YUV420 buffers laid out as picamera2 lays them
out (picamera2/request.py, ``Helpers._make_array_shared``). One test, marked ``pi``,
talks to the real camera.
"""

from __future__ import annotations

import enum
import sys
import threading
import types
from concurrent.futures import CancelledError
from pathlib import Path

import numpy as np
import pytest

from edge.drivers.camera_picamera2 import CAPTURE_TIMEOUT_S, PICAMERA2_MISSING, Picamera2Source
from edge.drivers.sources import open_source
from qrgate.errors import DriverError, DriverUnavailable, UserError

pytestmark = pytest.mark.timeout(30)

NUMPY_ABI_ERROR = ("numpy.dtype size changed, may indicate binary incompatibility. "
                   "Expected 96 from C header, got 88 from PyObject")
PIP_NUMPY = "/opt/qrgate/venv/lib/python3.11/site-packages/numpy/__init__.py"
APT_NUMPY = "/usr/lib/python3/dist-packages/numpy/__init__.py"


# --- the fake camera ----------------------------------------------------------------


class FakeLibcameraControls:
    """libcamera.controls: the enums the driver uses, named as libcamera's Python bindings
    name them (control_ids_core.yaml values without their common prefix)."""

    class AeExposureModeEnum(enum.Enum):
        Normal = 0
        Short = 1
        Long = 2
        Custom = 3

    class AfModeEnum(enum.Enum):
        Manual = 0
        Auto = 1
        Continuous = 2

    class AfRangeEnum(enum.Enum):
        Normal = 0
        Macro = 1
        Full = 2


CAMERA_MODULE_3_CONTROLS = {
    "FrameDurationLimits": (8_000, 1_000_000_000, 33_333),
    "AeExposureMode": (0, 3, 0),
    "AfMode": (0, 2, 0),
    "AfRange": (0, 2, 0),
    "LensPosition": (0.0, 15.0, 1.0),
}


def luma_pattern(width: int, height: int) -> np.ndarray:
    rows, columns = np.indices((height, width))
    return ((rows * 3 + columns) % 200 + 20).astype(np.uint8)


def yuv420_buffer(width: int, height: int, stride: int) -> np.ndarray:
    """A YUV420 frame as picamera2's capture_array returns it: (height * 3/2) rows of
    ``stride`` bytes, Y first, then U and V; bytes past ``width`` are padding."""
    buffer = np.full((height * 3 // 2, stride), 0xEE, dtype=np.uint8)
    buffer[:height, :width] = luma_pattern(width, height)
    buffer[height:, :] = 0x80  # U and V of a grey picture
    return buffer


class FakeCameraRig:
    """What the fake picamera2 will do, and what the driver asked of it."""

    def __init__(self):
        self.cameras: list[FakePicamera2] = []
        self.camera_controls = dict(CAMERA_MODULE_3_CONTROLS)
        self.open_error: BaseException | None = None
        self.configure_error: BaseException | None = None
        self.start_error: BaseException | None = None
        self.capture_error: BaseException | None = None
        self.row_padding = 0  # libcamera's stride beyond the width, in bytes
        self.capture_waiting = threading.Event()
        self.block_captures = False

    @property
    def camera(self) -> FakePicamera2:
        (camera,) = self.cameras
        return camera


class FakePicamera2:
    """Stands in for picamera2.Picamera2 with the methods the driver calls.

    ``align_configuration`` and the default buffer layout follow picamera2 on a Pi 5:
    YUV420 widths are rounded down to a multiple of 128 (picamera2.py ``align_stream``).
    """

    rig: FakeCameraRig

    def __init__(self, camera_num: int = 0):
        if self.rig.open_error is not None:
            raise self.rig.open_error
        self.rig.cameras.append(self)
        self.camera_controls = dict(self.rig.camera_controls)
        self.camera_config: dict = {}
        self.started = False
        self.stop_calls = 0
        self.close_calls = 0
        self.cancel_calls = 0
        self._cancelled = threading.Event()

    def create_preview_configuration(self, main={}, lores=None, buffer_count=4, controls={},
                                     queue=True, **others):
        return {"main": {"format": "XBGR8888", "size": (640, 480), "preserve_ar": True, **main},
                "lores": lores, "buffer_count": buffer_count, "queue": queue,
                "controls": dict(controls), **others}

    @staticmethod
    def align_configuration(config, optimal=True):
        width, height = config["main"]["size"]
        config["main"]["size"] = (width - width % 128, height - height % 2)

    def configure(self, config):
        if self.rig.configure_error is not None:
            raise self.rig.configure_error
        width, _ = config["main"]["size"]
        config["main"]["stride"] = width + self.rig.row_padding
        self.camera_config = config

    def stream_configuration(self, name="main"):
        return self.camera_config[name]

    def start(self):
        if self.rig.start_error is not None:
            raise self.rig.start_error
        self.started = True

    def capture_array(self, name="main", wait=None):
        if self.rig.block_captures:
            self.rig.capture_waiting.set()
            self._cancelled.wait(10)
            raise CancelledError()
        if self.rig.capture_error is not None:
            raise self.rig.capture_error
        main = self.camera_config[name]
        width, height = main["size"]
        return yuv420_buffer(width, height, main["stride"])

    def cancel_all_and_flush(self):
        self.cancel_calls += 1
        self._cancelled.set()

    def stop(self):
        self.stop_calls += 1
        self.started = False

    def close(self):
        self.close_calls += 1


@pytest.fixture
def camera_rig(monkeypatch) -> FakeCameraRig:
    """A fake picamera2 and libcamera in sys.modules; the real ones come back afterwards."""
    rig = FakeCameraRig()
    fake_picamera2 = types.ModuleType("picamera2")
    fake_picamera2.Picamera2 = type("Picamera2", (FakePicamera2,), {"rig": rig})
    fake_libcamera = types.ModuleType("libcamera")
    fake_libcamera.controls = FakeLibcameraControls
    monkeypatch.setitem(sys.modules, "picamera2", fake_picamera2)
    monkeypatch.setitem(sys.modules, "libcamera", fake_libcamera)
    return rig


@pytest.fixture
def broken_picamera2(tmp_path, monkeypatch):
    """Returns a function that installs a ``picamera2`` package whose import runs
    ``source``, found first on sys.path, as a broken apt package would be."""

    def install(source: str) -> None:
        package = tmp_path / "picamera2"
        package.mkdir()
        (package / "__init__.py").write_text(source)
        monkeypatch.delitem(sys.modules, "picamera2", raising=False)
        monkeypatch.syspath_prepend(str(tmp_path))

    return install


# --- faults: every one is a DriverError (the station shows "camera" and retries) ----


def test_without_picamera2_the_driver_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "picamera2", None)  # import fails as if absent

    with pytest.raises(DriverUnavailable) as error:
        open_source("picamera2")

    assert str(error.value) == PICAMERA2_MISSING
    assert "apt install python3-picamera2" in str(error.value)


@pytest.mark.parametrize("raised", [
    f"ValueError({NUMPY_ABI_ERROR!r})",  # simplejpeg, a Cython module
    "ImportError('numpy.core.multiarray failed to import')",  # a pybind11 module
])
def test_numpy_from_pip_shadowing_apts_is_a_camera_fault_naming_the_fix(
        raised, broken_picamera2, monkeypatch):
    broken_picamera2(f"raise {raised}\n")
    monkeypatch.setattr(np, "__file__", PIP_NUMPY)

    with pytest.raises(DriverError) as error:
        Picamera2Source()

    assert str(error.value) == (f"picamera2 cannot load: numpy {np.__version__} in the venv "
                                "is not apt's (reinstall with provisioning/install.sh)")


def test_a_numpy_error_with_apts_numpy_is_not_blamed_on_the_venv(broken_picamera2, monkeypatch):
    broken_picamera2(f"raise ValueError({NUMPY_ABI_ERROR!r})\n")
    monkeypatch.setattr(np, "__file__", APT_NUMPY)

    with pytest.raises(DriverError) as error:
        Picamera2Source()

    message = str(error.value)
    assert message.startswith(f"picamera2 cannot load: ValueError: {NUMPY_ABI_ERROR} ")
    assert "apt install --reinstall python3-picamera2 python3-libcamera" in message


@pytest.mark.parametrize("raised, shown", [
    ("RuntimeError('libcamera: failed to load the IPA module')",
     "RuntimeError: libcamera: failed to load the IPA module"),
    ("ModuleNotFoundError(\"No module named 'simplejpeg'\", name='simplejpeg')",
     "ModuleNotFoundError: No module named 'simplejpeg'"),
])
def test_a_picamera2_that_is_installed_but_broken_is_a_camera_fault(raised, shown,
                                                                     broken_picamera2):
    broken_picamera2(f"raise {raised}\n")

    with pytest.raises(DriverError) as error:
        open_source("picamera2")

    assert str(error.value) == (f"picamera2 cannot load: {shown} "
                                "(apt install --reinstall python3-picamera2 python3-libcamera)")


def test_no_camera_on_the_connector_is_a_camera_fault(camera_rig):
    # Picamera2() indexes libcamera's (empty) camera list.
    camera_rig.open_error = IndexError("list index out of range")

    with pytest.raises(DriverError) as error:
        Picamera2Source()

    assert str(error.value) == ("no Raspberry Pi camera found by libcamera: check the ribbon "
                                "cable (rpicam-hello --list-cameras lists what the Pi sees)")


def test_a_camera_that_cannot_be_opened_is_a_camera_fault(camera_rig):
    camera_rig.open_error = RuntimeError("Camera __init__ sequence did not complete.")

    with pytest.raises(DriverError) as error:
        Picamera2Source()

    assert str(error.value) == (
        "Raspberry Pi camera cannot be opened: Camera __init__ sequence did not complete. "
        "(in use by another program, or cable loose? rpicam-hello --list-cameras)")


def test_a_refused_configuration_is_a_camera_fault_and_frees_the_camera(camera_rig):
    # picamera2's DmaAllocator fails so when the CMA pool is exhausted.
    camera_rig.configure_error = OSError(12, "Cannot allocate memory")

    with pytest.raises(DriverError) as error:
        Picamera2Source(size=(640, 480), fps=30)

    assert str(error.value) == ("Raspberry Pi camera refused 640x480 YUV420 at 30 fps: "
                                "[Errno 12] Cannot allocate memory")
    assert camera_rig.camera.close_calls == 1  # so the next attempt can open it


def test_a_camera_that_does_not_start_is_a_camera_fault_and_frees_the_camera(camera_rig):
    camera_rig.start_error = RuntimeError("Failed to start camera: Device or resource busy")

    with pytest.raises(DriverError) as error:
        Picamera2Source()

    assert str(error.value) == (
        "Raspberry Pi camera did not start: Failed to start camera: Device or resource busy "
        "(in use by another program? rpicam-hello --list-cameras)")
    assert camera_rig.camera.close_calls == 1


@pytest.mark.parametrize("raised, message, cancels", [
    # picamera2's capture_array(wait=seconds) when no frame comes: a loose cable.
    (TimeoutError(), f"no picture from the Raspberry Pi camera for {CAPTURE_TIMEOUT_S:.0f} s: "
                     "check the ribbon cable", 1),
    (RuntimeError("Camera frontend has timed out!"),
     "Raspberry Pi camera capture failed: Camera frontend has timed out!", 0),
])
def test_a_camera_that_stops_sending_frames_is_a_camera_fault(camera_rig, raised, message,
                                                              cancels):
    source = Picamera2Source()
    camera_rig.capture_error = raised

    with pytest.raises(DriverError) as error:
        next(source.captures())

    assert str(error.value) == message
    camera = camera_rig.camera
    assert camera.cancel_calls == cancels  # a timed-out capture is cancelled so stop() runs
    assert (camera.stop_calls, camera.close_calls) == (1, 1)


def test_a_buffer_not_laid_out_as_configured_is_a_camera_fault_not_a_garbled_frame(camera_rig):
    source = Picamera2Source(size=(640, 480))
    # From now on the buffers differ from the configuration the driver read.
    camera_rig.camera.camera_config["main"]["stride"] = 704

    with pytest.raises(DriverError) as error:
        next(source.captures())

    assert str(error.value) == ("picamera2 returned a 704x720 buffer for a 640x480 YUV420 "
                                "stream with stride 640")


def test_options_out_of_range_are_refused_before_the_camera_is_touched(camera_rig):
    with pytest.raises(UserError, match=r"^picamera2 fps must be between 10 and 120, not 0$"):
        open_source("picamera2", fps=0)
    with pytest.raises(UserError, match=r"^picamera2 width must be between 160 and 2048, not 100$"):
        open_source("picamera2", size=(100, 480))

    assert camera_rig.cameras == []


# --- the stream and the frames ------------------------------------------------------


def test_the_camera_runs_one_yuv420_stream_and_no_second_copy(camera_rig):
    Picamera2Source(size=(640, 480))

    config = camera_rig.camera.camera_config
    assert config["main"]["format"] == "YUV420"
    assert config["main"]["size"] == (640, 480)
    assert config["lores"] is None
    assert (config["buffer_count"], config["queue"]) == (4, True)
    assert camera_rig.camera.started


def test_frames_are_the_luma_plane_cropped_to_the_configured_size_not_the_requested(camera_rig):
    # Asked for 700x490; picamera2 aligns the width to 640 and libcamera pads rows to 768.
    camera_rig.row_padding = 128
    source = open_source("picamera2", size=(700, 490))
    try:
        captures = source.captures()
        frames = [next(captures) for _ in range(2)]
    finally:
        source.close()

    assert (source.width, source.height, source.stride) == (640, 490, 768)
    for frame in frames:
        assert frame.gray.shape == (490, 640)
        assert frame.gray.dtype == np.uint8
        assert frame.gray.flags.c_contiguous
        # Only Y: no padding bytes (0xEE) from the right, no U/V rows (0x80) from below.
        assert np.array_equal(frame.gray, luma_pattern(640, 490))
    assert frames[0].mono_ns < frames[1].mono_ns
    assert camera_rig.camera.close_calls == 1


def test_exposure_is_kept_short_so_a_moving_phone_stays_sharp(camera_rig):
    Picamera2Source(fps=30)

    controls = camera_rig.camera.camera_config["controls"]
    assert controls["AeExposureMode"] is FakeLibcameraControls.AeExposureModeEnum.Short
    # A fixed frame time of 1/30 s: libcamera never exposes longer than the frame.
    assert controls["FrameDurationLimits"] == (33_333, 33_333)


@pytest.mark.parametrize("autofocus, expected", [
    (True, {"AfMode": FakeLibcameraControls.AfModeEnum.Continuous,
            "AfRange": FakeLibcameraControls.AfRangeEnum.Macro}),
    (False, {"AfMode": FakeLibcameraControls.AfModeEnum.Manual, "LensPosition": 5.0}),
])
def test_a_focus_motor_focuses_close_or_stays_at_20_cm(camera_rig, autofocus, expected):
    Picamera2Source(autofocus=autofocus)

    controls = camera_rig.camera.camera_config["controls"]
    assert {name: controls[name] for name in expected} == expected


def test_a_camera_without_these_controls_is_not_sent_them(camera_rig):
    # picamera2 raises "Control X is not advertised by libcamera" for any other control.
    camera_rig.camera_controls = {"FrameDurationLimits": (33_333, 1_000_000, 33_333)}

    source = Picamera2Source(fps=15)

    assert camera_rig.camera.camera_config["controls"] == {"FrameDurationLimits": (66_666, 66_666)}
    assert next(source.captures()).gray.shape == (480, 640)


def test_close_from_another_thread_ends_a_capture_waiting_for_a_frame(camera_rig):
    source = Picamera2Source()
    camera_rig.block_captures = True
    outcome: list = []
    reader = threading.Thread(target=lambda: outcome.extend(source.captures()), daemon=True)
    reader.start()
    assert camera_rig.capture_waiting.wait(10)

    source.close()
    reader.join(10)

    assert not reader.is_alive()
    assert outcome == []
    camera = camera_rig.camera
    assert (camera.cancel_calls, camera.stop_calls, camera.close_calls) == (1, 1, 1)
    source.close()  # a second close is harmless
    assert camera.close_calls == 1


# --- the real camera ----------------------------------------------------------------


def on_a_raspberry_pi() -> bool:
    model = Path("/proc/device-tree/model")
    return model.is_file() and model.read_bytes().startswith(b"Raspberry Pi")


@pytest.mark.pi
@pytest.mark.skipif(not on_a_raspberry_pi(), reason="needs a Raspberry Pi with its camera")
def test_the_real_camera_yields_its_luma_plane_and_can_be_opened_again():
    """With apt's picamera2 and libcamera and a camera on the connector; fails (with the
    driver's fault message) on a Pi where either is missing or broken.

    Checks what the fakes cannot: that picamera2 imports with the venv's numpy; that
    libcamera accepts one 640x480 YUV420 stream with FrameDurationLimits, AeExposureMode
    and the focus controls this sensor lists; that the real buffer is laid out as the
    crop assumes (the shape check in captures() passes); that frames keep coming; and
    that close() frees the camera so the station's retry can open it again at once.
    """
    source = open_source("picamera2", size=(640, 480), fps=30)
    try:
        captures = source.captures()
        frames = [next(captures) for _ in range(5)]
    finally:
        source.close()

    assert all(f.gray.shape == (480, 640) and f.gray.dtype == np.uint8 for f in frames)
    assert all(a.mono_ns < b.mono_ns for a, b in zip(frames, frames[1:]))
    open_source("picamera2", size=(640, 480)).close()
