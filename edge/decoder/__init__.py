"""QR decoding port: turns a grayscale frame into the texts of the QR codes it shows.

Two backends sit behind one ``Decoder`` protocol, chosen by name and imported lazily
so the station starts even when one library is missing:

- ``"zxing"``: zxing-cpp (``edge.decoder.zxing``),
- ``"zbar"``: pyzbar over libzbar (``edge.decoder.zbar``),
- ``"default"``: zxing-cpp.

Why zxing-cpp is the default (measured with ``python bench/bench_decode.py``, figures in
docs/performance.md): on the 179 photographed zxing-java samples it reads more codes
than pyzbar (168 against 148, no wrong text) and a 640x480 frame without a code, the
common case at a gate, costs about 3 ms against 15-21 ms for pyzbar.
"""

from __future__ import annotations

import importlib
import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from qrgate.errors import DriverUnavailable, UserError

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class Decoded:
    """One code read from a frame.

    ``text`` is the content as text (UTF-8 payloads come out with correct diacritics);
    ``raw`` is the content's bytes; ``symbology`` is "QRCode", "MicroQRCode", ...
    """

    text: str
    raw: bytes = field(repr=False)
    symbology: str


@runtime_checkable
class Decoder(Protocol):
    """Contract for every decoder backend.

    Must:
      - ``name``: the registry name ("zxing", "zbar").
      - ``decode(gray)``: return the QR-family codes read from ``gray`` (a 2-D uint8
        array, H x W), only those whose error correction succeeded; an empty list when
        nothing was read. It never raises on a bad frame: an array of another dtype or
        with colour channels is converted, anything unusable gives ``[]``.
    A decoder keeps no state between frames, so one instance may serve the whole run.
    """

    name: str

    def decode(self, gray: np.ndarray) -> list[Decoded]: ...


# name -> (module, class, how to install the library it needs)
_BACKENDS: dict[str, tuple[str, str, str]] = {
    "zxing": ("edge.decoder.zxing", "ZxingDecoder", "pip install zxing-cpp"),
    "zbar": (
        "edge.decoder.zbar",
        "ZbarDecoder",
        "pip install pyzbar, and the zbar library: apt install libzbar0",
    ),
}
# Chosen by measurement, see the module docstring and docs/performance.md.
DEFAULT_DECODER = "zxing"


def decoder_names() -> list[str]:
    """Names accepted by ``get_decoder``."""
    return ["default", *_BACKENDS]


def get_decoder(name: str = "default") -> Decoder:
    """Return a decoder by registry name, importing its library only now.

    Raises ``UserError`` for an unknown name (the message lists the known ones) and
    ``DriverUnavailable`` when the backend's library is not installed.
    """
    backend = DEFAULT_DECODER if name == "default" else name
    if backend not in _BACKENDS:
        raise UserError(
            f"unknown decoder {name!r}; known decoders: {', '.join(decoder_names())}"
        )
    module_name, class_name, install_hint = _BACKENDS[backend]
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise DriverUnavailable(
            f"decoder {backend!r} is not available ({exc}); install it with: {install_hint}"
        ) from exc
    decoder = getattr(module, class_name)()
    logger.debug("decoder %r selected (asked for %r)", decoder.name, name)
    return decoder


def load_gray(path: str | Path) -> np.ndarray:
    """Read an image file (PNG, JPEG, WebP, ...) as a 2-D uint8 grayscale array.

    Raises ``UserError`` naming the path when the file is missing or not an image.
    """
    from PIL import Image

    try:
        with Image.open(path) as image:
            return np.array(image.convert("L"), dtype=np.uint8)
    except (OSError, ValueError, Image.DecompressionBombError) as exc:
        raise UserError(f"cannot read image {str(path)!r}: {exc}") from exc


def as_gray_frame(image: object) -> np.ndarray | None:
    """Coerce anything array-like into a C-contiguous 2-D uint8 array, or ``None``.

    Decoders call this first so that a frame in an unexpected form (float, colour,
    bool, a strided view) is read rather than crashing the pipeline; ``None`` means
    there is nothing a decoder could read.
    """
    try:
        array = np.asarray(image)
    except (TypeError, ValueError):
        return None
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    elif array.ndim == 3 and array.shape[2] in (3, 4):
        # Channel order (RGB or BGR) is unknown here; equal weights read a printed
        # code either way, which is all that matters for decoding.
        luminance = array[:, :, :3].astype(np.float32).mean(axis=2)
        array = np.rint(luminance).astype(np.uint8) if array.dtype == np.uint8 else luminance
    if array.ndim != 2 or array.shape[0] < 1 or array.shape[1] < 1:
        return None
    if array.dtype != np.uint8:
        array = _to_uint8(array)
        if array is None:
            return None
    return np.ascontiguousarray(array)


def _to_uint8(array: np.ndarray) -> np.ndarray | None:
    if array.dtype == np.bool_:
        return array.astype(np.uint8) * 255
    if not (np.issubdtype(array.dtype, np.number)) or np.iscomplexobj(array):
        return None
    values = np.nan_to_num(array.astype(np.float64), nan=0.0, posinf=255.0, neginf=0.0)
    if np.issubdtype(array.dtype, np.floating) and values.size and values.max() <= 1.0:
        # Floats in 0..1 are the usual convention of image libraries.
        values = values * 255.0
    return np.clip(np.rint(values), 0, 255).astype(np.uint8)
