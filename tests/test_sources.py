"""Tests of the camera-like input sources and the source registry."""

from __future__ import annotations

import logging
import queue
import threading
from pathlib import Path

import cv2
import numpy as np
import pytest
import segno
import zxingcpp
from PIL import Image

from edge.drivers import source_webcam
from edge.drivers.fake import ListSource
from edge.drivers.ports import Frame, ScannedText, Source
from edge.drivers.source_folder import FolderSource
from edge.drivers.source_video import VideoSource
from edge.drivers.source_webcam import WebcamSource
from edge.drivers.sources import SOURCE_KINDS, open_source
from qrgate.errors import DriverError, UserError
from conftest import require_qr_photos

JAVA_SET_1 = "zxing-java-qrcode-1"

pytestmark = pytest.mark.timeout(30)


def qr_gray(text: str, scale: int = 4) -> np.ndarray:
    """A real QR code of ``text`` as a grayscale array, rendered by segno."""
    qr = segno.make(text, error="m")
    rows = np.array(list(qr.matrix_iter(scale=scale, border=4)), dtype=np.uint8)
    return np.where(rows == 1, 0, 255).astype(np.uint8)


def decoded_text(gray: np.ndarray) -> str:
    results = zxingcpp.read_barcodes(gray)
    return results[0].text if results else ""


def run_in_thread(function) -> tuple[threading.Thread, queue.Queue]:
    """Run ``function`` on a daemon thread; its return value or exception lands in a queue."""
    outcome: queue.Queue = queue.Queue()

    def target():
        try:
            outcome.put(function())
        except BaseException as exc:  # handed to the test thread to re-raise
            outcome.put(exc)

    thread = threading.Thread(target=target, daemon=True)
    thread.start()
    return thread, outcome


# --- folder ------------------------------------------------------------------------


@pytest.fixture
def qr_folder(tmp_path: Path) -> Path:
    """Three QR images written as PNG and JPEG, plus files that are not images."""
    for name, text in [("b.png", "second"), ("a.png", "first"), ("c.jpg", "third")]:
        Image.fromarray(qr_gray(text, scale=5)).save(tmp_path / name)
    (tmp_path / "notes.txt").write_text("not an image")
    (tmp_path / "thumbs.db").write_bytes(b"\x00\x01")
    return tmp_path


def test_folder_yields_gray_frames_of_each_image_in_name_order(qr_folder):
    frames = list(FolderSource(qr_folder).captures())

    assert [Path(f.origin).name for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert all(f.gray.ndim == 2 and f.gray.dtype == np.uint8 for f in frames)
    assert [decoded_text(f.gray) for f in frames] == ["first", "second", "third"]


def test_folder_repeats_each_image_as_a_card_held_in_front_of_the_camera(qr_folder):
    frames = list(FolderSource(qr_folder, frames_per_image=3).captures())

    assert [Path(f.origin).name for f in frames] == ["a.png"] * 3 + ["b.png"] * 3 + ["c.jpg"] * 3
    assert [f.mono_ns for f in frames] == sorted(f.mono_ns for f in frames)


def test_folder_skips_an_unreadable_image_and_logs_it(qr_folder, caplog):
    (qr_folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")

    with caplog.at_level(logging.WARNING):
        frames = list(FolderSource(qr_folder).captures())

    assert [Path(f.origin).name for f in frames] == ["a.png", "b.png", "c.jpg"]
    assert "broken.png" in caplog.text


def test_folder_with_loop_starts_again_after_the_last_image(qr_folder):
    source = FolderSource(qr_folder, loop=True)
    names = []
    for frame in source.captures():
        names.append(Path(frame.origin).name)
        if len(names) == 7:
            source.close()

    assert names == ["a.png", "b.png", "c.jpg", "a.png", "b.png", "c.jpg", "a.png"]


def test_folder_close_from_another_thread_interrupts_the_interval(qr_folder):
    source = FolderSource(qr_folder, interval_s=60.0, loop=True)
    first_frame_seen = threading.Event()

    def consume():
        count = 0
        for _ in source.captures():
            count += 1
            first_frame_seen.set()
        return count

    thread, outcome = run_in_thread(consume)
    assert first_frame_seen.wait(5)
    source.close()
    thread.join(timeout=2)

    assert not thread.is_alive(), "captures() still waiting after close()"
    assert outcome.get_nowait() == 1


def test_folder_close_twice_is_harmless(qr_folder):
    source = FolderSource(qr_folder)
    source.close()
    source.close()

    assert list(source.captures()) == []


def test_missing_folder_is_a_device_not_there_yet_naming_the_path(tmp_path):
    # A DriverError, not a config mistake: the station shows the camera fault and retries.
    missing = tmp_path / "no-such-folder"

    with pytest.raises(DriverError, match="no-such-folder does not exist"):
        FolderSource(missing)


def test_a_file_where_the_folder_should_be_is_a_user_error(tmp_path):
    (tmp_path / "rig").write_text("not a folder")

    with pytest.raises(UserError, match="rig is not a folder"):
        FolderSource(tmp_path / "rig")


def test_a_looping_empty_folder_is_a_camera_looking_at_nothing(tmp_path, caplog):
    # The test rig: a person "holds up" a code by dropping an image in, then takes it away.
    source = FolderSource(tmp_path, loop=True)
    captures = source.captures()

    with caplog.at_level(logging.WARNING):
        blank = next(captures)
    assert blank.gray.shape == (480, 640) and blank.gray.min() == 255  # white: nothing to read
    assert decoded_text(blank.gray) == ""
    assert "no readable images" in caplog.text

    Image.fromarray(qr_gray("held up")).save(tmp_path / "a.png")
    frame = next(f for f in captures if f.origin.endswith("a.png"))
    assert decoded_text(frame.gray) == "held up"

    (tmp_path / "a.png").unlink()
    assert next(captures).gray.min() == 255  # blank again, and the source has not ended
    source.close()
    assert list(captures) == []


def test_blank_frames_come_at_most_every_interval_and_close_interrupts_the_wait(tmp_path):
    source = FolderSource(tmp_path, loop=True, interval_s=60.0)
    waiting = threading.Event()

    def consume():
        waiting.set()
        return list(source.captures())

    thread, outcome = run_in_thread(consume)
    assert waiting.wait(5)
    source.close()
    thread.join(timeout=5)

    assert not thread.is_alive(), "captures() still waiting after close()"
    assert outcome.get_nowait() == []  # no blank frame before its 60 s were up


def test_a_folder_removed_while_looping_is_a_device_that_vanished(tmp_path):
    rig = tmp_path / "rig"
    rig.mkdir()
    captures = FolderSource(rig, loop=True).captures()
    next(captures)
    rig.rmdir()

    with pytest.raises(DriverError, match="rig cannot be read"):
        next(captures)


def test_folder_plays_every_photo_of_the_shared_sample_set():
    folder = require_qr_photos() / JAVA_SET_1
    photos = sorted(p.name for p in folder.iterdir() if p.suffix in {".jpg", ".png", ".webp"})

    frames = list(FolderSource(folder).captures())

    assert [Path(f.origin).name for f in frames] == photos
    assert all(f.gray.ndim == 2 and f.gray.size > 0 for f in frames)


# --- video -------------------------------------------------------------------------

VIDEO_SIZE = (240, 240)  # width, height


@pytest.fixture
def qr_video(tmp_path: Path) -> Path:
    """A real 12-frame MJPG video at 10 fps; frame i shows the QR code "frame-i"."""
    path = tmp_path / "gate.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 10.0, VIDEO_SIZE)
    assert writer.isOpened()
    for index in range(12):
        gray = cv2.resize(qr_gray(f"frame-{index}"), VIDEO_SIZE, interpolation=cv2.INTER_NEAREST)
        writer.write(cv2.cvtColor(gray, cv2.COLOR_GRAY2BGR))
    writer.release()
    return path


def frame_index(frame: Frame) -> int:
    return int(frame.origin.rsplit("#", 1)[1])


def test_video_yields_every_frame_in_order_as_gray(qr_video):
    frames = list(VideoSource(qr_video).captures())

    assert [frame_index(f) for f in frames] == list(range(12))
    assert all(f.gray.shape == (240, 240) and f.gray.dtype == np.uint8 for f in frames)
    assert decoded_text(frames[0].gray) == "frame-0"
    assert decoded_text(frames[-1].gray) == "frame-11"


class SteppedClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self):
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_realtime_video_skips_frames_the_pipeline_was_too_slow_for(qr_video):
    clock = SteppedClock()
    source = VideoSource(qr_video, realtime=True, clock=clock)

    seen = []
    for frame in source.captures():
        seen.append(frame_index(frame))
        clock.now += 0.5  # each decode "takes" five frame periods at 10 fps

    assert seen == [0, 5, 10]
    assert decoded_text(VideoSource(qr_video).captures().__next__().gray) == "frame-0"


def test_realtime_video_close_interrupts_the_wait_for_the_next_frame(qr_video):
    clock = SteppedClock()  # never moves, so each next frame is due in the future
    source = VideoSource(qr_video, realtime=True, clock=clock)
    captures = source.captures()
    next(captures)
    clock.now -= 30.0  # the next frame is now 30 s away

    thread, outcome = run_in_thread(lambda: list(captures))
    source.close()
    thread.join(timeout=2)

    assert not thread.is_alive(), "captures() still waiting after close()"
    assert outcome.get_nowait() == []


def test_missing_video_is_a_user_error_naming_the_path(tmp_path):
    with pytest.raises(UserError, match="nothing.avi"):
        VideoSource(tmp_path / "nothing.avi")


def test_a_file_that_is_not_a_video_is_a_driver_error_naming_it(tmp_path):
    bogus = tmp_path / "bogus.avi"
    bogus.write_bytes(b"this is not a video container at all" * 10)

    with pytest.raises(DriverError, match="bogus.avi"):
        VideoSource(bogus)


# --- webcam (OpenCV capture replaced at the third-party boundary) ------------------

UNPLUG = object()


class FakeCameraFeed:
    """What the fake cv2.VideoCapture delivers; the test pushes frames or an unplug."""

    def __init__(self):
        self.frames: queue.Queue = queue.Queue()
        self.plugged = True
        self.shut_down = False
        self.changed = threading.Condition()
        self.reads_started = 0
        self.failed_opens = 0

    def wait_until(self, predicate, timeout=5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(predicate, timeout)

    def bump(self, counter: str) -> None:
        with self.changed:
            setattr(self, counter, getattr(self, counter) + 1)
            self.changed.notify_all()


@pytest.fixture
def camera_feed(monkeypatch) -> FakeCameraFeed:
    feed = FakeCameraFeed()

    class FakeVideoCapture:
        def __init__(self, device, *args):
            self.opened = feed.plugged
            self.last = None
            if not self.opened:
                feed.bump("failed_opens")

        def isOpened(self):
            return self.opened

        def set(self, prop, value):
            return True

        def read(self):
            feed.bump("reads_started")
            while True:
                try:
                    item = feed.frames.get(timeout=0.01)
                except queue.Empty:
                    if feed.shut_down:
                        return False, None
                    if self.last is not None:
                        return True, self.last  # a real camera keeps filming a still scene
                    continue
                if item is UNPLUG:
                    return False, None
                self.last = item
                return True, item

        def release(self):
            self.opened = False

    monkeypatch.setattr(source_webcam.cv2, "VideoCapture", FakeVideoCapture)
    yield feed
    feed.shut_down = True


def solid_bgr(value: int) -> np.ndarray:
    return np.full((48, 64, 3), value, dtype=np.uint8)


@pytest.fixture
def webcam(camera_feed):
    source = WebcamSource("/dev/video0", retry_s=0.01)
    yield source
    camera_feed.shut_down = True
    source.close()


def test_webcam_hands_out_only_the_newest_frame(webcam, camera_feed):
    for value in (10, 20, 30):
        camera_feed.frames.put(solid_bgr(value))
    # The grabber asking for a fourth frame means the third is already in the slot.
    assert camera_feed.wait_until(lambda: camera_feed.reads_started >= 4)

    frame = next(webcam.captures())

    assert frame.gray.shape == (48, 64) and frame.gray.dtype == np.uint8
    assert int(frame.gray[0, 0]) == 30
    assert frame.origin == "/dev/video0"


def test_webcam_that_vanishes_is_reopened_and_captures_keep_waiting(webcam, camera_feed, caplog):
    captures = webcam.captures()
    camera_feed.frames.put(solid_bgr(50))
    assert int(next(captures).gray[0, 0]) == 50

    with caplog.at_level(logging.WARNING, logger="edge.drivers.source_webcam"):
        camera_feed.plugged = False
        camera_feed.frames.put(UNPLUG)
        assert camera_feed.wait_until(lambda: camera_feed.failed_opens >= 2)
        camera_feed.plugged = True
        camera_feed.frames.put(solid_bgr(90))
        thread, outcome = run_in_thread(lambda: next(captures))
        thread.join(timeout=5)

    assert int(outcome.get_nowait().gray[0, 0]) == 90
    assert "stopped delivering frames" in caplog.text


def test_webcam_close_from_another_thread_ends_captures(webcam, camera_feed):
    camera_feed.frames.put(solid_bgr(70))
    first_frame_seen = threading.Event()

    def consume():
        frames = []
        for frame in webcam.captures():
            frames.append(frame)
            first_frame_seen.set()
        return frames

    thread, outcome = run_in_thread(consume)
    assert first_frame_seen.wait(5)
    webcam.close()
    thread.join(timeout=3)

    assert not thread.is_alive(), "captures() still waiting after close()"
    assert int(outcome.get_nowait()[0].gray[0, 0]) == 70


def test_webcam_that_cannot_be_opened_is_a_driver_error_naming_the_device():
    # Real OpenCV, a device number no machine here has.
    with pytest.raises(DriverError, match="/dev/video97"):
        WebcamSource("/dev/video97")


# --- registry and the list source ---------------------------------------------------


def test_unknown_source_kind_lists_the_known_ones():
    with pytest.raises(UserError) as error:
        open_source("scanner3000")

    message = str(error.value)
    assert "scanner3000" in message
    for kind in ("folder", "video", "webcam", "picamera2", "hid", "serial", "list"):
        assert kind in message
    assert set(SOURCE_KINDS) == {"folder", "video", "webcam", "picamera2", "hid", "serial", "list"}


def test_unknown_option_for_a_source_is_a_user_error(qr_folder):
    with pytest.raises(UserError, match="frames_per_second"):
        open_source("folder", path=qr_folder, frames_per_second=3)


def test_open_source_builds_a_working_folder_source(qr_folder):
    source = open_source("folder", path=str(qr_folder), frames_per_image=2)

    assert isinstance(source, Source)
    assert len(list(source.captures())) == 6


def test_list_source_turns_text_bytes_and_arrays_into_captures():
    image = qr_gray("hello")
    source = open_source("list", items=["Nguyễn Văn A", b"\xff\xfeX", image], origin="test")

    text, raw, frame = list(source.captures())

    assert text == ScannedText("Nguyễn Văn A", text.mono_ns, "test", "Nguyễn Văn A".encode())
    assert raw.raw == b"\xff\xfeX" and "\ufffd" in raw.text
    assert isinstance(frame, Frame) and decoded_text(frame.gray) == "hello"
    assert list(source.captures()) != []  # a list source can be replayed
    source.close()
    assert list(source.captures()) == []


def test_list_source_refuses_a_colour_array():
    with pytest.raises(TypeError, match="2-D uint8"):
        ListSource([np.zeros((4, 4, 3), dtype=np.uint8)])
