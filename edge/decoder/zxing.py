"""QR decoder backed by zxing-cpp (the station's default decoder)."""

from __future__ import annotations

import logging

import numpy as np
import zxingcpp

from edge.decoder import Decoded, as_gray_frame

logger = logging.getLogger(__name__)

# Only the QR family: with zxing-cpp's default (all formats) a 640x480 frame without a
# code costs about 20 times more, spent looking for 1-D barcodes a gate never shows.
QR_FAMILY = zxingcpp.barcode_formats_from_str("QRCode,MicroQRCode,RMQRCode")

# Tried in order only when the first pass *saw* a code but could not correct its errors
# (zxing-cpp reports it as an invalid result). The global-histogram binarizer reads
# low-resolution photos with uneven light that the default local-average one misses;
# a frame without a code never pays for this.
_RETRY_BINARIZERS = (zxingcpp.Binarizer.GlobalHistogram,)


class ZxingDecoder:
    """Reads QR, Micro QR and rMQR codes with zxing-cpp.

    Rotated codes and light-on-dark codes (phones in dark mode) are searched for;
    text is taken as encoded in the symbol (``TextMode.Plain``), so control
    characters in a payload are kept rather than rendered as ``<SOH>``.
    """

    name = "zxing"

    def decode(self, gray: np.ndarray) -> list[Decoded]:
        frame = as_gray_frame(gray)
        if frame is None:
            return []
        try:
            results = self._read(frame, zxingcpp.Binarizer.LocalAverage)
            for binarizer in _RETRY_BINARIZERS:
                if any(result.valid for result in results) or not results:
                    break
                logger.debug("code seen but not read; retrying with %s", binarizer)
                results = self._read(frame, binarizer)
        except (RuntimeError, ValueError, TypeError) as exc:
            # A bad frame must never stop the gate; the next frame gets its chance.
            logger.warning("zxing-cpp failed on a %sx%s frame: %s", *frame.shape[::-1], exc)
            return []
        return _unique_valid(results)

    @staticmethod
    def _read(frame: np.ndarray, binarizer: zxingcpp.Binarizer) -> list:
        return zxingcpp.read_barcodes(
            frame,
            formats=QR_FAMILY,
            try_rotate=True,
            try_invert=True,
            try_downscale=True,
            text_mode=zxingcpp.TextMode.Plain,
            binarizer=binarizer,
            return_errors=True,
        )


def _unique_valid(results: list) -> list[Decoded]:
    decoded: list[Decoded] = []
    for result in results:
        if not result.valid:
            continue
        item = Decoded(text=result.text, raw=bytes(result.bytes), symbology=result.format.name)
        if item not in decoded:
            decoded.append(item)
    return decoded
