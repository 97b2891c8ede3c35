"""The demo a newcomer runs: `qrgate-demo --once --json` end to end on real parts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

pytestmark = pytest.mark.timeout(180)


def test_demo_once_stores_every_accepted_scan_and_says_so(tmp_path):
    data = tmp_path / "demo"
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--data", str(data), "--web-port", "0"],
        capture_output=True, text=True, timeout=170,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    summary = json.loads(out.stdout)
    assert summary == {
        "images": 10,
        "accepted": 6,
        "refused": {"unknown_format": 2, "bad_encoding": 1, "too_long": 1},
        "stored_at_server": 6,
    }
    screen = Image.open(data / "station" / "screen.png")
    assert screen.size == (128, 64)


def test_demo_refuses_to_wipe_a_folder_it_did_not_make(tmp_path):
    (tmp_path / "precious.txt").write_text("keep me")
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--data", str(tmp_path)],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 1
    assert "is not a demo folder" in out.stderr
    assert (tmp_path / "precious.txt").read_text() == "keep me"


def test_demo_counts_every_image_even_the_same_card_twice(tmp_path):
    from qrgate.samples import demo_samples, write_qr_png

    images = tmp_path / "images"
    images.mkdir()
    person = demo_samples()[0].text
    write_qr_png(person, images / "a.png")
    write_qr_png(person, images / "b.png")  # the same person shows the card again at once
    (images / "c.png").write_bytes((images / "a.png").read_bytes())
    out = subprocess.run(
        [str(Path(sys.executable).parent / "qrgate-demo"), "--once", "--json", "--images", str(images),
         "--data", str(tmp_path / "demo"), "--web-port", "0"],
        capture_output=True, text=True, timeout=170,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    assert json.loads(out.stdout) == {
        "images": 3, "accepted": 1, "refused": {"already_counted": 2}, "stored_at_server": 1,
    }
