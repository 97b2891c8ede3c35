"""Made-up people and the QR images they would show a station (for the demo and tests).

Every person here is invented; ids follow the real layouts (docs/payloads.md) so the
parsers see real-shaped input. Images are real QR codes rendered with segno.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path

import segno
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


def hexutf8(text: str) -> str:
    return text.encode("utf-8").hex()


@dataclass(frozen=True)
class Sample:
    name: str  # file stem
    text: str
    expect: str  # "accepted" or the refusal reason the station must give


def cccd(id12: str, old: str, name: str, birth: str, sex: str, address: str, issued: str) -> str:
    return "|".join([id12, old, name, birth, sex, address, issued])


def bhyt_old(code: str, name: str, birth: str, sex: int, address: str) -> str:
    return "|".join([
        code, hexutf8(name), birth, str(sex), hexutf8(address), "79 - 024", "01/01/2026", "31/12/2026",
        "15/12/2025", "79-9-24-001", "-", "4", " 01/01/2024", "1f3a5c7e9b2d4f60-8a1c", "$",
    ])


def bhyt_new(code10: str, name: str, birth: str, sex: int) -> str:
    return "|".join([
        code10, hexutf8(name), birth, str(sex), "-", "79 - 024", "01/01/2026", "31/12/2026",
        "15/12/2025", "79-9-24-002", "-", "4", " 01/01/2025", "0d2e4c6a8b1f3e57-2b4d", "4",
        hexutf8("BHXH quận Tân Bình"), "$",
    ])


def demo_samples(pass_key: Ed25519PrivateKey | None = None, today: dt.date | None = None) -> list[Sample]:
    """The demo's queue at the gate: six accepted people, then codes a station must refuse."""
    today = today or dt.date.today()
    samples = [
        Sample("01-cccd-nguyen-gia-manh", cccd(
            "024083123451", "3099789364", "Nguyễn Gia Mạnh", "21031983", "Nam",
            "165/7 Nguyễn Thị Minh Khai, Phường Bàn Cờ, TP Hồ Chí Minh", "06042021"), "accepted"),
        Sample("02-cccd-dang-thi-uyen", cccd(
            "001196004321", "", "Đặng Thị Ưng Uyên", "05111996", "Nữ",
            "Số 12 ngõ 34 Phố Huế, Phường Hai Bà Trưng, Hà Nội", "12082022"), "accepted"),
        Sample("03-bhyt-le-viet-hung", bhyt_old(
            "DN4797912345678", "Lê Việt Hưng", "14/02/1990", 1, "Khu phố 3, Phường Linh Trung, TP Thủ Đức"), "accepted"),
        Sample("04-bhyt-new-tran-thu-ha", bhyt_new("7912345670", "Trần Thu Hà", "1988", 2), "accepted"),
        Sample("05-national-pham-quoc-bao", "******012345|PHAM QUOC BAO|1992-**-**|0|8f1c2d3e|", "accepted"),
    ]
    if pass_key is not None:
        from qrgate.personal_pass import issue_pass

        samples.append(Sample("06-pass-vo-thi-hoa", issue_pass(
            pass_key, pid="W-0042", name="Võ Thị Hoa", issued=today, expires=today + dt.timedelta(days=365),
            birth="1979"), "accepted"))
    samples += [
        Sample("07-url", "https://example.com/khai-bao", "unknown_format"),
        Sample("08-wifi", "WIFI:T:WPA;S:CongTy;P:matkhau123;;", "unknown_format"),
        Sample("09-bhyt-bad-hex", bhyt_old("DN4797912345679", "x", "1990", 1, "y").replace(hexutf8("x"), "zz", 1),
               "bad_encoding"),
        Sample("10-too-long", "A" * 1500, "too_long"),
    ]
    return samples


def write_qr_png(text: str, path: Path, *, scale: int = 6) -> Path:
    segno.make_qr(text, error="m").save(str(path), scale=scale, border=4)
    return path


def write_sample_images(directory: Path, pass_key: Ed25519PrivateKey | None = None) -> list[tuple[Path, Sample]]:
    directory.mkdir(parents=True, exist_ok=True)
    return [(write_qr_png(s.text, directory / f"{s.name}.png"), s) for s in demo_samples(pass_key)]
