"""Tests of the QR decoders (edge.decoder) on real QR images made with segno and on the
photographed black-box sample sets."""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
import segno
from PIL import Image

from edge.decoder import Decoded, get_decoder, load_gray
from edge.decoder.zbar import recover_zbar_text
from qrgate.errors import DriverUnavailable, UserError

from conftest import QR_PHOTOS as SAMPLES
from conftest import require_qr_photos
JAVA_SETS = [f"zxing-java-qrcode-{n}" for n in range(1, 7)]

CCCD = (
    "024083123451|3099789364|Nguyễn Gia Mạnh|21031983|Nam|"
    "165/7 Nguyễn Thị Minh Khai, Quận 3, TP Hồ Chí Minh|06042021"
)
ASCII = "https://example.org/checkin?venue=HN-0042&gate=2"


def _long_payload() -> str:
    text = ""
    while len(text.encode("utf-8")) < 1000:
        text += "Đặng Thị Thu Hương|Phường Bến Nghé|"
    return text.encode("utf-8")[:1000].decode("utf-8", "ignore")


LONG = _long_payload()


def write_qr(tmp_path: Path, text: str, name: str = "code.png", **make_args) -> Path:
    path = tmp_path / name
    segno.make_qr(text, **make_args).save(path, scale=4, border=4)
    return path


@pytest.fixture(params=["zxing", "zbar"])
def decoder(request):
    return get_decoder(request.param)


@pytest.fixture
def default_decoder():
    return get_decoder("default")


@pytest.mark.parametrize("text", [CCCD, ASCII, LONG], ids=["cccd", "ascii", "long-1000-bytes"])
def test_both_decoders_read_the_exact_text_of_a_generated_code(tmp_path, decoder, text):
    gray = load_gray(write_qr(tmp_path, text))

    assert decoder.decode(gray) == [Decoded(text=text, raw=text.encode("utf-8"), symbology="QRCode")]


def test_long_payload_is_really_1000_bytes():
    assert len(LONG.encode("utf-8")) in range(997, 1001)


# Payloads that libzbar0 0.23.92 turns into another script because no ECI marker says
# UTF-8: it guesses Shift-JIS, ISO-8859-1 and Big5 (twice, once with "ư", which glibc's
# Big5 maps to a private-use character) respectively.
ZBAR_MISREAD = {
    "079203001234|Trần Văn Ân": "079203001234|Tr蘯ｧn Vﾄハ ﾃＯ",
    "079203001234|Cà Mau": "079203001234|CÃ\xa0 Mau",
    "079203001234|Tây Ninh": "079203001234|T璽y Ninh",
    "079203001234|Dương": "079203001234|D\uf6c0\uf6b1ng",
}


@pytest.mark.parametrize("text", list(ZBAR_MISREAD))
def test_zbar_returns_vietnamese_text_that_zbar_guessed_as_another_charset(tmp_path, text):
    from pyzbar import pyzbar

    gray = load_gray(write_qr(tmp_path, text, encoding="utf-8", eci=False))
    zbar_alone = [s.data.decode("utf-8") for s in pyzbar.decode(gray, [pyzbar.ZBarSymbol.QRCODE])]
    assert zbar_alone != [text], "libzbar no longer misreads this payload; pick another"

    decoded = get_decoder("zbar").decode(gray)

    assert [(d.text, d.raw) for d in decoded] == [(text, text.encode("utf-8"))]


@pytest.mark.parametrize("text,misread", list(ZBAR_MISREAD.items()))
def test_recover_zbar_text_undoes_each_charset_guess(text, misread):
    assert recover_zbar_text(misread.encode("utf-8")) == (text, text.encode("utf-8"))


def test_recover_zbar_text_keeps_bytes_that_are_not_utf8():
    assert recover_zbar_text(b"\x00\xff\xfe") == ("\x00\xff\xfe", b"\x00\xff\xfe")


@pytest.mark.parametrize("text", ["日本語のテキスト", "Grüße aus Köln", "Lê Việt Hưng"])
def test_zbar_keeps_text_it_decoded_correctly(tmp_path, text):
    # Genuine Japanese (Shift-JIS), Latin-1 and ECI-marked UTF-8 must not be "repaired".
    gray = load_gray(write_qr(tmp_path, text, eci=True))

    assert [d.text for d in get_decoder("zbar").decode(gray)] == [text]


def test_default_decoder_reads_a_white_on_black_code(tmp_path, default_decoder):
    gray = load_gray(write_qr(tmp_path, CCCD))
    inverted = 255 - gray

    assert [d.text for d in default_decoder.decode(inverted)] == [CCCD]


def test_default_decoder_reads_a_rotated_code(tmp_path, default_decoder):
    gray = load_gray(write_qr(tmp_path, ASCII))

    assert [d.text for d in default_decoder.decode(np.rot90(gray))] == [ASCII]


def test_default_decoder_is_zxing_cpp(default_decoder):
    assert default_decoder.name == "zxing"


@pytest.mark.parametrize(
    "frame",
    [
        np.full((480, 640), 255, dtype=np.uint8),
        np.zeros((480, 640), dtype=np.uint8),
        np.random.default_rng(7).integers(0, 256, (480, 640), dtype=np.uint8),
    ],
    ids=["white", "black", "noise"],
)
def test_frame_without_a_code_gives_an_empty_list(decoder, frame):
    assert decoder.decode(frame) == []


@pytest.mark.parametrize(
    "frame",
    [
        np.zeros((0, 0), dtype=np.uint8),
        np.zeros((1, 1), dtype=np.uint8),
        np.zeros(640, dtype=np.uint8),
        np.zeros((2, 3, 4, 5), dtype=np.uint8),
        np.full((48, 64), np.nan),
        np.array([["a", "b"], ["c", "d"]]),
        np.zeros((8, 8), dtype=complex),
        None,
        "not an image",
    ],
    ids=["empty", "one-pixel", "1-d", "4-d", "nan", "strings", "complex", "none", "str"],
)
def test_unusable_frame_gives_an_empty_list_instead_of_raising(decoder, frame):
    assert decoder.decode(frame) == []


def _as_float(gray):
    return gray.astype(np.float64) / 255.0


def _as_rgb(gray):
    return np.dstack([gray, gray, gray])


def _as_bool(gray):
    return gray > 127


def _as_uint16(gray):
    return gray.astype(np.uint16)


def _as_strided_view(gray):
    return np.asfortranarray(gray)


@pytest.mark.parametrize("convert", [_as_float, _as_rgb, _as_bool, _as_uint16, _as_strided_view])
def test_frame_of_another_dtype_or_layout_is_still_read(tmp_path, decoder, convert):
    gray = load_gray(write_qr(tmp_path, ASCII))

    assert [d.text for d in decoder.decode(convert(gray))] == [ASCII]


def test_frame_without_a_code_costs_a_single_zxing_pass(monkeypatch, default_decoder):
    import zxingcpp

    calls = []
    real_read = zxingcpp.read_barcodes

    def counting_read(*args, **kwargs):
        calls.append(kwargs.get("binarizer"))
        return real_read(*args, **kwargs)

    monkeypatch.setattr(zxingcpp, "read_barcodes", counting_read)
    noise = np.random.default_rng(3).integers(0, 256, (480, 640), dtype=np.uint8)

    assert default_decoder.decode(noise) == []
    assert len(calls) == 1


@pytest.mark.parametrize("suffix", [".png", ".jpg", ".webp"])
def test_load_gray_reads_common_formats_as_2d_uint8(tmp_path, suffix):
    path = tmp_path / f"code{suffix}"
    segno.make_qr(ASCII).save(tmp_path / "code.png", scale=6, border=4)
    Image.open(tmp_path / "code.png").convert("RGB").save(path)

    gray = load_gray(path)

    assert gray.ndim == 2 and gray.dtype == np.uint8
    assert [d.text for d in get_decoder().decode(gray)] == [ASCII]


def test_load_gray_names_the_path_of_a_file_that_is_not_an_image(tmp_path):
    path = tmp_path / "notes.png"
    path.write_text("not a picture")

    with pytest.raises(UserError, match="notes.png"):
        load_gray(path)


def test_load_gray_names_the_path_of_a_missing_file(tmp_path):
    with pytest.raises(UserError, match="missing.webp"):
        load_gray(tmp_path / "missing.webp")


def test_unknown_decoder_name_lists_the_known_names():
    with pytest.raises(UserError) as raised:
        get_decoder("quirc")

    message = str(raised.value)
    assert "quirc" in message
    for known in ("default", "zxing", "zbar"):
        assert known in message


def test_missing_zbar_library_names_the_packages_to_install(monkeypatch):
    # A None entry in sys.modules makes the import fail as if pyzbar were absent.
    monkeypatch.setitem(sys.modules, "pyzbar", None)
    monkeypatch.setitem(sys.modules, "pyzbar.pyzbar", None)
    monkeypatch.delitem(sys.modules, "edge.decoder.zbar", raising=False)

    with pytest.raises(DriverUnavailable) as raised:
        get_decoder("zbar")

    assert isinstance(raised.value, ImportError)
    assert "pyzbar" in str(raised.value) and "libzbar0" in str(raised.value)


def test_missing_zxing_library_names_the_package_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "zxingcpp", None)
    monkeypatch.delitem(sys.modules, "edge.decoder.zxing", raising=False)

    with pytest.raises(DriverUnavailable, match="zxing-cpp"):
        get_decoder("zxing")


@pytest.fixture(scope="module")
def java_samples():
    require_qr_photos()
    samples = []
    for set_name in JAVA_SETS:
        for image_path in sorted((SAMPLES / set_name).glob("*")):
            expected_path = image_path.with_suffix(".txt")
            if image_path.suffix in (".png", ".jpg", ".webp") and expected_path.exists():
                expected = expected_path.read_bytes().decode("utf-8")
                samples.append((image_path.name, load_gray(image_path), expected))
    assert samples, f"no zxing-java images with expected texts under {SAMPLES}"
    return samples


def test_default_decoder_reads_at_least_as_many_photos_as_raw_zxing_cpp(java_samples, default_decoder):
    import zxingcpp

    ours = raw = 0
    misreads = []
    for name, gray, expected in java_samples:
        texts = [d.text for d in default_decoder.decode(gray)]
        ours += expected in texts
        if texts and expected not in texts:
            misreads.append(name)
        raw += expected in [result.text for result in zxingcpp.read_barcodes(gray)]

    assert len(java_samples) == 179
    assert ours >= raw
    assert misreads == []


@pytest.mark.parametrize("name", ["09.png", "34.png"])
def test_photo_whose_code_is_seen_but_not_read_at_first_is_read_on_retry(default_decoder, name):
    # Low-resolution photos with uneven light: zxing-cpp's default binarizer finds the
    # code but cannot correct it; zxing-cpp called raw gives up on them.
    path = require_qr_photos() / "zxing-java-qrcode-4" / name
    expected = path.with_suffix(".txt").read_bytes().decode("utf-8")

    assert [d.text for d in default_decoder.decode(load_gray(path))] == [expected]
