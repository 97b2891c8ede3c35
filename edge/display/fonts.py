"""Finding and caching the DejaVu Sans fonts the screens are drawn with."""

from __future__ import annotations

import functools
import logging
import os
from pathlib import Path

from PIL import ImageFont

from qrgate.errors import DriverError

logger = logging.getLogger(__name__)

# Debian's fonts-dejavu-core puts them here; DejaVu Sans has every Vietnamese letter
# (precomposed, Latin Extended Additional), which the small bitmap fonts lack.
SYSTEM_FONT_DIR = Path("/usr/share/fonts/truetype/dejavu")
FONT_FILES = {False: "DejaVuSans.ttf", True: "DejaVuSans-Bold.ttf"}


def find_font(bold: bool = False) -> Path:
    """Return the path of DejaVu Sans (or its bold face).

    Looks first in the folder named by the environment variable ``QRGATE_FONT_DIR``
    (for systems that keep fonts elsewhere), then in Debian's folder.
    Raises ``DriverError`` naming the file and the package when neither has it.
    """
    name = FONT_FILES[bool(bold)]
    folders = []
    override = os.environ.get("QRGATE_FONT_DIR")
    if override:
        folders.append(Path(override))
    folders.append(SYSTEM_FONT_DIR)
    for folder in folders:
        candidate = folder / name
        if candidate.is_file():
            return candidate
    searched = ", ".join(str(folder) for folder in folders)
    raise DriverError(f"font not found: {name} in {searched} (apt install fonts-dejavu-core)")


@functools.lru_cache(maxsize=64)
def load_font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    """Return DejaVu Sans at ``size`` pixels, loaded once per (size, face)."""
    path = find_font(bold)
    logger.debug("loading font %s at %d px", path, size)
    # The basic layout engine renders the same pixels whether or not libraqm is
    # installed, so reference screens match on every machine; NFC text needs no shaping.
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)
