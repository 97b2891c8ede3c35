"""The venue poster: A4 landscape with the venue's self check-in QR, its name and address
and instructions in Vietnamese, as PNG or PDF (drawn with Pillow, the QR by segno)."""

from __future__ import annotations

import functools
import io
import logging
import os
from pathlib import Path

import segno
from PIL import Image, ImageDraw, ImageFont

from qrgate.errors import DriverError

logger = logging.getLogger(__name__)

DPI = 150
A4_LANDSCAPE = (round(297 / 25.4 * DPI), round(210 / 25.4 * DPI))  # 1754 x 1240 pixels
FONT_DIRS = (Path("/usr/share/fonts/truetype/dejavu"),)  # Debian's fonts-dejavu-core: every Vietnamese letter

INSTRUCTIONS = (
    "Mở camera của điện thoại (hoặc ứng dụng quét mã QR) và hướng vào mã bên cạnh.",
    "Bấm vào đường dẫn hiện ra để mở trang khai báo ra/vào.",
    "Lần đầu: nhập số CCCD (hoặc thẻ BHYT) và họ tên. Các lần sau điện thoại tự nhớ.",
    "Bấm VÀO khi đến, RA khi rời đi, và đưa màn hình xác nhận cho người kiểm soát nếu được hỏi.",
)


@functools.lru_cache(maxsize=16)
def _font(size: int, bold: bool = False) -> ImageFont.FreeTypeFont:
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    folders = [Path(os.environ["QRGATE_FONT_DIR"])] if os.environ.get("QRGATE_FONT_DIR") else []
    for folder in [*folders, *FONT_DIRS]:
        if (folder / name).is_file():
            return ImageFont.truetype(str(folder / name), size, layout_engine=ImageFont.Layout.BASIC)
    raise DriverError(f"font not found: {name} in {', '.join(map(str, [*folders, *FONT_DIRS]))}"
                      " (apt install fonts-dejavu-core)")


def _wrap(draw: ImageDraw.ImageDraw, text: str, font, width: int, max_lines: int) -> list[str]:
    lines: list[str] = []
    current = ""
    for word in text.split():
        # A word wider than the column (a 600-letter name) is cut, not allowed to overflow.
        while draw.textlength(word, font=font) > width:
            cut = len(word)
            while cut > 1 and draw.textlength(word[:cut], font=font) > width:
                cut -= 1
            if current:
                lines.append(current)
            lines.append(word[:cut])
            current, word = "", word[cut:]
        trial = f"{current} {word}".strip()
        if draw.textlength(trial, font=font) <= width:
            current = trial
        else:
            lines.append(current)
            current = word
    if current:
        lines.append(current)
    if len(lines) > max_lines:
        lines = lines[:max_lines]
        lines[-1] = lines[-1].rstrip()[:-1] + "…"
    return lines


def render_poster(url: str, name: str, address: str, area: str = "") -> Image.Image:
    """The poster as an RGB image, A4 landscape at 150 dpi."""
    width, height = A4_LANDSCAPE
    image = Image.new("RGB", (width, height), "white")
    draw = ImageDraw.Draw(image)
    margin = 70
    draw.rectangle((0, 0, width, 150), fill=(11, 94, 64))
    draw.text((margin, 40), "QUÉT MÃ QR ĐỂ KHAI BÁO RA / VÀO", font=_font(60, True), fill="white")

    qr = segno.make(url, error="m")
    buffer = io.BytesIO()
    qr_side = 820
    scale = max(1, qr_side // qr.symbol_size(border=4)[0])
    qr.save(buffer, kind="png", scale=scale, border=4)
    code = Image.open(io.BytesIO(buffer.getvalue())).convert("RGB")
    qr_top = 190
    image.paste(code, (margin, qr_top))
    draw.rectangle((margin - 4, qr_top - 4, margin + code.width + 4, qr_top + code.height + 4), outline=(11, 94, 64),
                   width=4)
    url_font = _font(22)
    for i, line in enumerate(_wrap(draw, url, url_font, code.width, 2)):
        draw.text((margin, qr_top + code.height + 20 + i * 28), line, font=url_font, fill=(80, 80, 80))

    left = margin + code.width + 70
    column = width - left - margin
    y = 200
    for line in _wrap(draw, name, _font(54, True), column, 3):
        draw.text((left, y), line, font=_font(54, True), fill=(20, 20, 20))
        y += 66
    for text in (address, area):
        for line in _wrap(draw, text, _font(30), column, 2):
            draw.text((left, y + 8), line, font=_font(30), fill=(60, 60, 60))
            y += 40
    y += 40
    draw.text((left, y), "Hướng dẫn:", font=_font(36, True), fill=(11, 94, 64))
    y += 58
    step_font = _font(30)
    for number, step in enumerate(INSTRUCTIONS, start=1):
        lines = _wrap(draw, step, step_font, column - 60, 3)
        draw.ellipse((left, y, left + 44, y + 44), fill=(11, 94, 64))
        draw.text((left + 22, y + 22), str(number), font=_font(28, True), fill="white", anchor="mm")
        for line in lines:
            draw.text((left + 60, y + 4), line, font=step_font, fill=(20, 20, 20))
            y += 40
        y += 18
    footer = ("Thông tin cá nhân chỉ dùng để truy vết khi có yêu cầu của cơ quan y tế, "
              "được che bớt khi hiển thị cho địa điểm.")
    for i, line in enumerate(_wrap(draw, footer, _font(24), width - 2 * margin, 2)):
        draw.text((margin, height - 90 + i * 32), line, font=_font(24), fill=(90, 90, 90))
    return image


def poster_png(url: str, name: str, address: str, area: str = "") -> bytes:
    out = io.BytesIO()
    render_poster(url, name, address, area).save(out, "PNG", dpi=(DPI, DPI))
    return out.getvalue()


def poster_pdf(url: str, name: str, address: str, area: str = "") -> bytes:
    """One A4 landscape page (297 x 210 mm at 150 dpi)."""
    out = io.BytesIO()
    render_poster(url, name, address, area).save(out, "PDF", resolution=DPI, title=f"QR {name[:80]}")
    return out.getvalue()
