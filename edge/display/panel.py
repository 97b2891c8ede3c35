"""The OLED panel: luma.oled drivers chosen by name, and the Screen that shows images on it.

Wiring of an SSD1306/SH1106 I2C module (128x64): VCC to 3.3 V (pin 1), GND to pin 6,
SDA to GPIO2 (pin 3), SCL to GPIO3 (pin 5); address 0x3C (some modules 0x3D). Enable I2C
with `sudo raspi-config nonint do_i2c 0`.
"""

from __future__ import annotations

import logging
import os
import tempfile
from pathlib import Path

from PIL import Image

from qrgate.errors import DriverError, DriverUnavailable, UserError

logger = logging.getLogger(__name__)

PANEL_KINDS = ("ssd1306", "sh1106", "dummy")
BRIGHT, DIM = 0xCF, 0x08


def open_panel(kind: str, *, i2c_port: int = 1, address: int = 0x3C, rotate: int = 0):
    """Return a luma device for ``kind``; "dummy" is luma's in-memory stand-in.

    Raises ``DriverError`` naming the bus and address when the panel does not answer,
    ``DriverUnavailable`` when luma is not installed.
    """
    if kind == "dummy":
        from luma.core.device import dummy

        return dummy(width=128, height=64, rotate=rotate, mode="1")
    if kind not in PANEL_KINDS:
        raise UserError(f"unknown panel {kind!r}; choose one of: {', '.join(PANEL_KINDS)}")
    try:
        from luma.core.error import DeviceNotFoundError, DevicePermissionError, Error as LumaError
        from luma.core.interface.serial import i2c
        from luma.oled import device as oled
    except ImportError as exc:
        raise DriverUnavailable(f"{kind} panel: luma.oled is not installed (pip install luma.oled)") from exc

    try:
        serial = i2c(port=i2c_port, address=address)
        return getattr(oled, kind)(serial, width=128, height=64, rotate=rotate)
    except DeviceNotFoundError:
        raise DriverError(f"I2C device not found: /dev/i2c-{i2c_port} (enable I2C: raspi-config)") from None
    except DevicePermissionError:
        raise DriverError(f"no permission for /dev/i2c-{i2c_port} (add the user to group i2c)") from None
    except ImportError as exc:  # luma imports smbus2 only when the bus is opened
        raise DriverUnavailable(f"{kind} panel: {exc} (pip install smbus2)") from exc
    except (OSError, LumaError) as exc:
        raise DriverError(f"no {kind} panel at address 0x{address:02X} on /dev/i2c-{i2c_port}: {exc}") from None


class Screen:
    """Shows images on a luma device; optionally mirrors each one to a PNG file.

    ``mirror_png``: after every ``show`` the image is also written there (atomically),
    so the demo can show the screen on a laptop.
    """

    def __init__(self, device, *, mirror_png: Path | None = None):
        self.device = device
        self.mirror_png = Path(mirror_png) if mirror_png else None
        self.dimmed = False
        self.last: Image.Image | None = None

    def show(self, image: Image.Image) -> None:
        self.device.display(image)
        self.last = image
        if self.mirror_png is not None:
            self.save_png(self.mirror_png)

    def save_png(self, path: Path) -> None:
        """Write the image shown last to ``path`` as PNG, atomically.

        Written to a temporary file in the same folder, then renamed over ``path``:
        someone watching the file never sees half an image.
        """
        if self.last is None:
            return
        path = Path(path)
        handle, temp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            os.fchmod(handle, 0o644)  # mkstemp makes it private; viewers of the demo read it
            with os.fdopen(handle, "wb") as temp_file:
                self.last.save(temp_file, format="PNG")
            os.replace(temp_name, path)
        except BaseException:
            Path(temp_name).unlink(missing_ok=True)
            raise

    def dim(self, dimmed: bool) -> None:
        if dimmed != self.dimmed:
            self.device.contrast(DIM if dimmed else BRIGHT)
            self.dimmed = dimmed

    def close(self) -> None:
        try:
            self.device.clear()
            self.device.cleanup()
        except Exception:  # a panel that vanished must not fail a shutdown
            logger.exception("closing the panel")
