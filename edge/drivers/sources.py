"""Registry of the station's input sources: pick one by name, import its library lazily.

Only the chosen driver's module is imported, so a laptop without picamera2 or evdev can
still run the folder or video source, and a Pi without OpenCV can run its camera.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from dataclasses import dataclass

from edge.drivers.ports import Source
from qrgate.errors import DriverUnavailable, UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class _SourceEntry:
    module: str
    class_name: str
    # Top-level packages the driver needs, and how to get them when they are missing.
    needs: tuple[str, ...]
    install_hint: str


_REGISTRY: dict[str, _SourceEntry] = {
    "folder": _SourceEntry("edge.drivers.source_folder", "FolderSource", ("PIL",),
                           "pillow not installed (pip install pillow)"),
    "video": _SourceEntry("edge.drivers.source_video", "VideoSource", ("cv2",),
                          "OpenCV not installed (pip install opencv-python-headless)"),
    "webcam": _SourceEntry("edge.drivers.source_webcam", "WebcamSource", ("cv2",),
                           "OpenCV not installed (on a station: sudo apt install python3-opencv, "
                           "built for apt's numpy; elsewhere: pip install opencv-python-headless)"),
    "picamera2": _SourceEntry("edge.drivers.camera_picamera2", "Picamera2Source",
                              ("picamera2", "libcamera"),
                              "picamera2 not installed (apt install python3-picamera2; "
                              "venv needs --system-site-packages)"),
    "hid": _SourceEntry("edge.drivers.scanner_hid", "HidScannerSource", ("evdev",),
                        "evdev not installed (apt install python3-evdev, or pip install evdev)"),
    "serial": _SourceEntry("edge.drivers.scanner_serial", "SerialScannerSource", ("serial",),
                           "pyserial not installed (apt install python3-serial, "
                           "or pip install pyserial)"),
    "list": _SourceEntry("edge.drivers.fake", "ListSource", (), ""),
}

SOURCE_KINDS: tuple[str, ...] = tuple(_REGISTRY)


def _import_driver(kind: str, entry: _SourceEntry) -> type:
    try:
        module = importlib.import_module(entry.module)
    except ImportError as exc:
        missing = (exc.name or "").split(".")[0]
        if missing in entry.needs:
            raise DriverUnavailable(f"source '{kind}': {entry.install_hint}") from exc
        raise
    return getattr(module, entry.class_name)


def open_source(kind: str, **options) -> Source:
    """Create the input source called ``kind`` with its keyword ``options``.

    Raises ``UserError`` for an unknown kind or option, ``DriverUnavailable`` when the
    driver's library is not installed, ``DriverError`` when the device cannot be opened.
    """
    entry = _REGISTRY.get(kind)
    if entry is None:
        raise UserError(
            f"unknown source kind {kind!r}; choose one of: {', '.join(SOURCE_KINDS)}"
        )
    source_class = _import_driver(kind, entry)
    try:
        inspect.signature(source_class).bind(**options)
    except TypeError as exc:
        raise UserError(f"source '{kind}': {exc}") from None
    # Option names only: the list source's options hold whole images.
    logger.info("opening %s source (options: %s)", kind, ", ".join(sorted(options)) or "none")
    return source_class(**options)
