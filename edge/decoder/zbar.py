"""QR decoder backed by pyzbar (libzbar), with repair of ZBar's charset guesses."""

from __future__ import annotations

import logging

import numpy as np
from pyzbar import pyzbar

from edge.decoder import Decoded, as_gray_frame

logger = logging.getLogger(__name__)

# When a byte-mode QR segment carries no ECI marker, ZBar guesses its charset with
# iconv and hands back the text re-encoded as UTF-8. Measured with libzbar0 0.23.92 on
# UTF-8 Vietnamese payloads made with segno, it picked Shift-JIS ("Trần" -> "Tr蘯ｧn"),
# ISO-8859-1 ("Hà" -> "HÃ\xa0") and Big5 ("Tây" -> "T璽y"). Encoding the text back with
# the guessed charset gives the symbol's bytes again; the first guess whose bytes are
# valid UTF-8 (with some non-ASCII in it) is taken as the original.
# (iconv name, Python codecs that invert it); checked byte for byte against glibc's
# iconv over every 1- and 2-byte sequence, apart from the cases handled below.
_ZBAR_CHARSET_GUESSES = (
    ("SJIS", ("shift_jis", "cp932")),
    ("ISO8859-1", ("latin-1",)),
    ("BIG-5", ("big5", "cp950")),
)
# glibc's BIG-5 maps the user-defined rows 0xC6A1-0xC8FE to U+F6B1-U+F848 (rows of 157
# cells, 0x40-0x7E then 0xA1-0xFE) and byte 0x80 to U+0080; Python's codecs know neither.
# "ư" (UTF-8 C6 B0) lands there, so most Vietnamese names need it.
_BIG5_PRIVATE_FIRST = 0xF6B1
_BIG5_PRIVATE_LAST = 0xF848


class ZbarDecoder:
    """Reads QR codes with ZBar through pyzbar (needs the libzbar0 system package).

    ZBar does not report the symbol's raw bytes: ``raw`` is the recovered original
    bytes when a wrong charset guess was undone, otherwise ZBar's text as UTF-8.
    """

    name = "zbar"

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        frame = as_gray_frame(gray)
        if frame is None:
            return []
        try:
            symbols = pyzbar.decode(frame, symbols=[pyzbar.ZBarSymbol.QRCODE])
        except (pyzbar.PyZbarError, ValueError, TypeError) as exc:
            # A bad frame must never stop the gate; the next frame gets its chance.
            logger.warning("pyzbar failed on a %sx%s frame: %s", *frame.shape[::-1], exc)
            return []
        decoded: list[Decoded] = []
        for symbol in symbols:
            text, raw = recover_zbar_text(symbol.data)
            item = Decoded(text=text, raw=raw, symbology="QRCode")
            if item not in decoded:
                decoded.append(item)
        return decoded


def recover_zbar_text(data: bytes) -> tuple[str, bytes]:
    """Undo ZBar's charset guess on a symbol's data; returns (text, original bytes).

    ``data`` is what pyzbar returns: ZBar's decoded text encoded as UTF-8 (or the raw
    bytes when ZBar ran in binary mode and they are not UTF-8).
    """
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        # Not text at all: keep every byte visible instead of guessing again.
        return data.decode("latin-1"), data
    if text.isascii():
        return text, data
    for charset, codecs in _ZBAR_CHARSET_GUESSES:
        original = _encode_back(text, codecs)
        if original is None or original == data or original.isascii():
            continue
        try:
            recovered = original.decode("utf-8")
        except UnicodeDecodeError:
            continue
        logger.debug("undid ZBar's %s guess on a %d-byte payload", charset, len(original))
        return recovered, original
    return text, data


def _encode_back(text: str, codecs: tuple[str, ...]) -> bytes | None:
    """Encode ``text`` the way iconv decoded it, or ``None`` if it cannot have been."""
    out = bytearray()
    for char in text:
        encoded = _encode_char(char, codecs)
        if encoded is None:
            return None
        out += encoded
    return bytes(out)


def _encode_char(char: str, codecs: tuple[str, ...]) -> bytes | None:
    for codec in codecs:
        try:
            return char.encode(codec)
        except UnicodeEncodeError:
            continue
    if "big5" in codecs:
        code = ord(char)
        if code == 0x80:
            return b"\x80"
        if _BIG5_PRIVATE_FIRST <= code <= _BIG5_PRIVATE_LAST:
            row, cell = divmod(code - _BIG5_PRIVATE_FIRST + 63, 157)
            trail = 0x40 + cell if cell < 63 else 0xA1 + cell - 63
            return bytes((0xC6 + row, trail))
    return None
