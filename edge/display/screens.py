"""What the 128x64 screen shows: pure rendering of outcomes and idle state, no device.

Every screen is a mode "1" (one bit per pixel) Pillow image. Text is NFC-normalised and
drawn in DejaVu Sans; a line that does not fit is first drawn smaller, then cut at a
letter boundary with an ellipsis, so no glyph or Vietnamese tone mark is ever clipped.
"""

from __future__ import annotations

import unicodedata
from dataclasses import dataclass

from PIL import Image, ImageDraw, ImageFont

from edge.display.fonts import find_font, load_font
from edge.outcome import Outcome, Result, StationState

__all__ = [
    "HEIGHT",
    "WIDTH",
    "find_font",
    "headline_for",
    "reason_line_for",
    "render_idle",
    "render_result",
]

WIDTH, HEIGHT = 128, 64
# The idle screen moves by up to this many pixels against burn-in; its content keeps
# this margin so a shifted screen still shows every pixel of it.
MARGIN = 2
ELLIPSIS = "…"

MODE_TEXT = {"entry": "Cổng vào", "exit": "Cổng ra", "toggle": "Vào/Ra"}
HEADLINE_IN = "MỜI VÀO"
HEADLINE_OUT = "TẠM BIỆT"
HEADLINE_COUNTED = "ĐÃ GHI NHẬN"  # counted scan with no direction: should not happen
HEADLINE = {
    Result.ALREADY_COUNTED: "ĐÃ GHI RỒI",
    Result.REFUSED: "KHÔNG HỢP LỆ",
    Result.FAULT: "LỖI THIẾT BỊ",
}

# Refusal codes of edge.payloads (REFUSAL_CODES), in words a person at the gate reads
# in a second. Codes not listed here get REFUSAL_GENERIC.
REFUSAL_TEXT = {
    "empty": "Mã trống",
    "too_long": "Mã quá dài",
    "bad_encoding": "Mã lỗi ký tự",
    "control_chars": "Mã có ký tự lạ",
    "unknown_format": "Mã không hỗ trợ",
    "bad_field": "Mã sai thông tin",
    "bad_signature": "Chữ ký sai",
    "expired": "Thẻ hết hạn",
    "not_yet_valid": "Thẻ chưa hiệu lực",
    "unknown_issuer": "Thẻ không rõ nguồn",
    # Policy refusals: never announce to the queue *why* a person is blocked.
    "blocked": "Xin gặp bảo vệ",
    "passback": "Chưa ghi lượt ra",
}
REFUSAL_GENERIC = "Xin gặp bảo vệ"
# Station fault codes (StationState.fault) for the idle screen.
FAULT_TEXT = {"storage": "bộ nhớ", "camera": "camera", "scanner": "đầu đọc", "clock": "đồng hồ"}
FAULT_GENERIC = "Báo kỹ thuật viên"

ONLINE_TEXT = "Trực tuyến"
OFFLINE_TEXT = "Mất mạng"
IDLE_PROMPT = "Mời quét mã"


@dataclass(frozen=True, slots=True)
class Box:
    """A rectangle of the screen a line of text must stay inside (right/bottom excluded)."""

    left: int
    top: int
    right: int
    bottom: int

    def moved(self, dx: int, dy: int) -> Box:
        return Box(self.left + dx, self.top + dy, self.right + dx, self.bottom + dy)


def headline_for(outcome: Outcome) -> str:
    """The big word of a result screen."""
    if outcome.result in (Result.ACCEPTED, Result.ACCEPTED_OFFLINE):
        if outcome.direction == "in":
            return HEADLINE_IN
        if outcome.direction == "out":
            return HEADLINE_OUT
        return HEADLINE_COUNTED
    return HEADLINE[outcome.result]


def reason_line_for(outcome: Outcome) -> str:
    """The short Vietnamese line under a refusal or fault headline ("" otherwise)."""
    if outcome.result is Result.REFUSED:
        return REFUSAL_TEXT.get(outcome.reason, REFUSAL_GENERIC)
    if outcome.result is Result.FAULT:
        return FAULT_GENERIC
    return ""


def render_result(outcome: Outcome, state: StationState) -> Image.Image:
    """Draw the screen shown for a couple of seconds after a scan."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    # Refusals and faults are drawn dark on a lit banner: different at a glance, even
    # for someone who cannot read the word.
    inverted = outcome.result in (Result.REFUSED, Result.FAULT)
    banner = Box(0, 0, WIDTH, 27)
    if inverted:
        draw.rectangle((banner.left, banner.top, banner.right - 1, banner.bottom - 1), fill=1)
    _draw_line(draw, headline_for(outcome), Box(1, 1, WIDTH - 1, 26), bold=True,
               sizes=(20, 10), fill=0 if inverted else 1)
    second = reason_line_for(outcome) or outcome.masked_name
    if second:
        _draw_line(draw, second, Box(MARGIN, 29, WIDTH - MARGIN, 47),
                   bold=not inverted, sizes=(14, 9))
    _draw_status(draw, state, Box(MARGIN, 50, WIDTH - MARGIN, HEIGHT))
    return image


def render_message(headline: str, line: str = "", detail: str = "") -> Image.Image:
    """A screen for a technician (setup, enrolment): a headline and up to two lines."""
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    _draw_line(draw, headline, Box(1, 1, WIDTH - 1, 24), bold=True, sizes=(16, 9))
    if line:
        _draw_line(draw, line, Box(MARGIN, 27, WIDTH - MARGIN, 45), bold=False, sizes=(12, 8))
    if detail:
        _draw_line(draw, detail, Box(MARGIN, 47, WIDTH - MARGIN, HEIGHT), bold=False, sizes=(10, 8))
    return image


def render_idle(state: StationState, shift: tuple[int, int] = (0, 0)) -> Image.Image:
    """Draw the screen shown between scans, moved by ``shift`` (dx, dy) pixels.

    ``shift`` stays within +/-``MARGIN`` on each axis; the caller changes it now and then
    so no pixel of an OLED stays lit for days.
    """
    dx, dy = (max(-MARGIN, min(MARGIN, value)) for value in shift)
    image = Image.new("1", (WIDTH, HEIGHT), 0)
    draw = ImageDraw.Draw(image)
    inner = WIDTH - MARGIN
    _draw_line(draw, state.venue or "—", Box(MARGIN, MARGIN, inner, 17).moved(dx, dy),
               bold=True, sizes=(13, 9))
    mode = MODE_TEXT.get(state.mode, state.mode)
    _draw_line(draw, mode, Box(MARGIN, 18, inner, 32).moved(dx, dy), bold=False, sizes=(12, 9))
    middle = Box(MARGIN, 33, inner, 49).moved(dx, dy)
    if state.fault:
        draw.rectangle((middle.left, middle.top, middle.right - 1, middle.bottom - 1), fill=1)
        _draw_line(draw, f"LỖI: {FAULT_TEXT.get(state.fault, state.fault)}", Box(middle.left + 1, middle.top + 1,
                   middle.right - 1, middle.bottom - 1), bold=True, sizes=(11, 8), fill=0)
    else:
        _draw_line(draw, IDLE_PROMPT, middle, bold=False, sizes=(12, 9))
    _draw_status(draw, state, Box(MARGIN, 50, inner, HEIGHT - MARGIN).moved(dx, dy))
    return image


def _draw_status(draw: ImageDraw.ImageDraw, state: StationState, box: Box) -> None:
    """Bottom line: a dot and the network state on the left, the unsent count on the right."""
    dot = 7
    top = box.top + (box.bottom - box.top - dot) // 2
    ellipse = (box.left, top, box.left + dot - 1, top + dot - 1)
    if state.online:
        draw.ellipse(ellipse, fill=1)
    else:
        draw.ellipse(ellipse, outline=1)
    split = box.left + (box.right - box.left) // 2
    text_left = box.left + dot + 3
    if state.backlog > 0:
        _draw_line(draw, f"Chờ gửi: {state.backlog}", Box(split, box.top, box.right, box.bottom),
                   bold=False, sizes=(10, 8), align="right")
        network_right = split - 2
    else:
        network_right = box.right
    _draw_line(draw, ONLINE_TEXT if state.online else OFFLINE_TEXT,
               Box(text_left, box.top, network_right, box.bottom),
               bold=False, sizes=(10, 8), align="left")


def clean_text(text: str) -> str:
    """NFC-normalise, drop control and format characters, squeeze whitespace."""
    text = unicodedata.normalize("NFC", text)
    kept = []
    for char in text:
        category = unicodedata.category(char)
        if category in ("Cc", "Cf", "Zl", "Zp") or char.isspace():
            kept.append(" ")
        elif category in ("Cs", "Co", "Cn"):
            kept.append("?")
        else:
            kept.append(char)
    return " ".join("".join(kept).split())


def _clusters(text: str) -> list[str]:
    """Split text into letters with their combining marks, so a cut never strands a mark."""
    clusters: list[str] = []
    for char in text:
        if clusters and unicodedata.combining(char):
            clusters[-1] += char
        else:
            clusters.append(char)
    return clusters


def _ink(font: ImageFont.FreeTypeFont, text: str) -> tuple[int, int, int, int]:
    """Ink box of ``text`` drawn with its baseline at y=0 and its origin at x=0."""
    return font.getbbox(text, anchor="ls")


def _fits(font: ImageFont.FreeTypeFont, text: str, box: Box, baseline: int) -> bool:
    left, top, right, bottom = _ink(font, text)
    width = right - min(left, 0)
    return width <= box.right - box.left and baseline + top >= box.top and baseline + bottom <= box.bottom


def _baseline(font: ImageFont.FreeTypeFont, text: str, box: Box) -> int:
    """Baseline that centres a typical capital-with-mark line in the box.

    Using a fixed reference (not the text's own ink) keeps lines of different text on
    the same baseline; text with taller stacked marks than the reference is pushed down.
    """
    _, ref_top, _, ref_bottom = _ink(font, "ẤÝg")
    baseline = box.top + (box.bottom - box.top - (ref_bottom - ref_top)) // 2 - ref_top
    _, top, _, _ = _ink(font, text)
    return max(baseline, box.top - top)


def _ellipsised(font: ImageFont.FreeTypeFont, text: str, box: Box, baseline: int) -> str:
    clusters = _clusters(text)
    low, high = 0, len(clusters)  # longest prefix that fits, by bisection
    while low < high:
        middle = (low + high + 1) // 2
        candidate = "".join(clusters[:middle]).rstrip() + ELLIPSIS
        if _fits(font, candidate, box, baseline):
            low = middle
        else:
            high = middle - 1
    return "".join(clusters[:low]).rstrip() + ELLIPSIS


def _draw_line(draw: ImageDraw.ImageDraw, text: str, box: Box, *, bold: bool,
               sizes: tuple[int, int], fill: int = 1, align: str = "center") -> None:
    """Draw one line inside ``box``: the largest size in ``sizes`` (max, min) that fits,
    else the smallest size cut with an ellipsis."""
    text = clean_text(text)
    if not text:
        return
    largest, smallest = sizes
    for size in range(largest, smallest - 1, -1):
        font = load_font(size, bold)
        baseline = _baseline(font, text, box)
        if _fits(font, text, box, baseline):
            break
    else:
        text = _ellipsised(font, text, box, baseline)
        baseline = _baseline(font, text, box)
    left, _, right, _ = _ink(font, text)
    width = right - min(left, 0)
    if align == "left":
        x = box.left
    elif align == "right":
        x = box.right - width
    else:
        x = box.left + (box.right - box.left - width) // 2
    draw.text((x - min(left, 0), baseline), text, font=font, fill=fill, anchor="ls")
