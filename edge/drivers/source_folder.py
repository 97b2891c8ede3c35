"""A folder of images played as a camera: the demo's simulated gate and the decode tool."""

from __future__ import annotations

import functools
import logging
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from edge.drivers.ports import Frame
from qrgate.errors import DriverError, UserError

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp"})
# What a looping folder with no images shows: a white VGA frame, no code on it.
BLANK_SHAPE = (480, 640)
# A blank frame at most this often, so an empty folder never spins the CPU.
BLANK_MIN_INTERVAL_S = 0.1


class FolderSource:
    """Plays the images of a folder as camera frames, sorted by file name.

    Each image becomes ``frames_per_image`` identical grayscale frames (a person holds a
    card in front of a real camera for a few seconds, so the pipeline sees one code many
    times), ``interval_s`` apart. Files that are not images are ignored; images that do
    not load are logged and skipped. With ``loop`` the folder is listed again and
    replayed from the start, so images dropped in while it runs are picked up; while it
    holds no readable image it behaves like a camera looking at nothing, yielding a blank
    white frame every ``max(interval_s, 0.1)`` s (a test rig drops a code in and takes
    it out again; ending would restart the service and replay the folder).

    A folder that does not exist (yet) is a device that is not there: ``DriverError``,
    which the station shows as the camera fault and retries.
    """

    name = "folder"

    def __init__(
        self,
        path: str | Path,
        *,
        frames_per_image: int = 1,
        interval_s: float = 0.0,
        loop: bool = False,
    ):
        self.path = Path(path)
        if not self.path.exists():
            raise DriverError(f"image folder {self.path} does not exist")
        if not self.path.is_dir():
            raise UserError(f"image folder {self.path} is not a folder")
        if frames_per_image < 1:
            raise UserError(f"frames_per_image must be at least 1, got {frames_per_image}")
        if interval_s < 0:
            raise UserError(f"interval_s must not be negative, got {interval_s}")
        self.frames_per_image = frames_per_image
        self.interval_s = interval_s
        self.loop = loop
        self._closed = threading.Event()
        # Unreadable files already logged, by (name, mtime, size): a looping pass every
        # 0.1 s must not log the same broken file ten times a second.
        self._logged_unreadable: set[tuple[str, int, int]] = set()

    def image_paths(self) -> list[Path]:
        """The images the next pass will play, in play order."""
        try:
            return sorted(
                (p for p in self.path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                key=lambda p: p.name,
            )
        except OSError as exc:  # the folder went away: a camera that vanished
            raise DriverError(f"image folder {self.path} cannot be read: {exc.strerror or exc}") from None

    def _load_gray(self, image_path: Path) -> np.ndarray | None:
        try:
            with Image.open(image_path) as image:
                gray = np.array(image.convert("L"), dtype=np.uint8)
        except (UnidentifiedImageError, OSError, ValueError) as exc:
            try:
                stat = image_path.stat()
                seen = (image_path.name, stat.st_mtime_ns, stat.st_size)
            except OSError:  # removed meanwhile
                return None
            if seen not in self._logged_unreadable:
                self._logged_unreadable.add(seen)
                logger.warning("skipping unreadable image %s: %s", image_path, exc)
            return None
        # Every frame of one image shares this array; nobody downstream may change it.
        gray.flags.writeable = False
        return gray

    def _paced(self, first: bool) -> bool:
        """Wait out the interval before a frame; False when closed meanwhile."""
        if first or self.interval_s == 0:
            return not self._closed.is_set()
        return not self._closed.wait(self.interval_s)

    def captures(self) -> Iterator[Frame]:
        """Yield the frames of every image; forever when looping, until ``close()``."""
        first = True
        empty_logged = False
        while not self._closed.is_set():
            played = 0
            for image_path in self.image_paths():
                gray = self._load_gray(image_path)
                if gray is None:
                    continue
                played += 1
                for _ in range(self.frames_per_image):
                    if not self._paced(first):
                        return
                    first = False
                    yield Frame(gray, time.monotonic_ns(), str(image_path))
            if not self.loop:
                return
            if played:
                empty_logged = False
                continue
            if not empty_logged:
                logger.warning("no readable images in %s; showing a blank view until some appear", self.path)
                empty_logged = True
            if self._closed.wait(max(self.interval_s, BLANK_MIN_INTERVAL_S)):
                return
            first = False
            yield Frame(_blank(), time.monotonic_ns(), str(self.path))

    def close(self) -> None:
        """End ``captures()`` at once, even mid-interval; safe from any thread, twice."""
        self._closed.set()


@functools.cache
def _blank() -> np.ndarray:
    gray = np.full(BLANK_SHAPE, 255, dtype=np.uint8)
    gray.flags.writeable = False  # shared by every blank frame
    return gray
