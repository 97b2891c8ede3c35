"""The station's frame budget, against raw zxing-cpp on the same frames in the same run.

- a 640x480 frame with no code through the whole pipeline (Station.handle_capture) vs a
  raw ``zxingcpp.read_barcodes`` of that frame;
- a 640x480 frame with a person's code: from the frame to the feedback event (decode,
  parse, policy, seal, sign, durable commit, Outcome handed to the feedback loop);
- a running station process (`qrgate-edge run`, 15 blank frames a second from a folder
  camera): resident memory and CPU use.

    python bench/bench_station.py [--frames N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import segno  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402
from PIL import Image  # noqa: E402

from bench.table import print_ratio_table  # noqa: E402
from qrgate.samples import cccd  # noqa: E402
from qrgate.sealing import x25519_public_to_text  # noqa: E402

SIZE = (640, 480)


def scene(seed: int = 1) -> np.ndarray:
    """A gate seen by the camera with nobody in front: gradient, a few edges, sensor noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:SIZE[1], 0:SIZE[0]]
    img = 90 + 60 * (x / SIZE[0]) + 30 * np.sin(y / 37.0)
    img[200:260, 100:540] += 50  # a door frame
    img += rng.normal(0, 6, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def with_code(text: str, seed: int) -> np.ndarray:
    """The scene with a phone-sized code held up in the middle."""
    qr = segno.make_qr(text, error="m")
    buf = Path(tempfile.mkstemp(suffix=".png")[1])
    qr.save(str(buf), scale=3, border=2)
    code = np.array(Image.open(buf).convert("L"))
    buf.unlink()
    frame = scene(seed)
    h, w = code.shape
    top, left = (SIZE[1] - h) // 2, (SIZE[0] - w) // 2
    frame[top:top + h, left:left + w] = code
    return frame


def station_config(workdir: Path, source: str) -> Path:
    server_key = x25519_public_to_text(X25519PrivateKey.generate().public_key())
    cfg = workdir / "station.toml"
    cfg.write_text(f"""
[station]
id = "bench-station"
server_key = "{server_key}"
[mqtt]
port = 9
tls = false
[feedback]
indicators = "gpio"
pin_factory = "mock"
panel = "dummy"
[source]
{source}
""")
    return cfg


def bench_pipeline(workdir: Path, frames: int) -> dict:
    import zxingcpp

    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource
    from edge.drivers.ports import Frame

    empty = scene()
    coded = [with_code(cccd(f"0792{i:08d}", "", f"Đỗ Minh Khôi {i}", "01011990", "Nam", "Huế", "01012022"), i)
             for i in range(frames)]
    station = Station(load_station_config(station_config(workdir, 'kind = "list"')), source=ListSource([]))
    station.open_drivers()
    station.feedback.start()
    events: list[float] = []
    station.listeners.insert(0, lambda e: events.append(time.perf_counter()) if hasattr(e, "result") else None)

    def timed(fn, n):
        out = []
        for _ in range(n):
            t = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t)
        return out

    raw_empty = timed(lambda: zxingcpp.read_barcodes(empty), frames)
    ours_empty = timed(lambda: station.handle_capture(Frame(empty, 0)), frames)
    raw_coded = timed(lambda: zxingcpp.read_barcodes(coded[0]), frames)
    to_feedback = []
    for frame in coded:
        station.new_presentation()
        events.clear()
        t = time.perf_counter()
        outcomes = station.handle_capture(Frame(frame, 0))
        assert outcomes and events, "the code in the benchmark frame was not read"
        to_feedback.append(events[0] - t)
    station.feedback.close()
    station.outbox.close()
    med = statistics.median
    return {
        "frames": frames,
        "raw_no_code_ms": med(raw_empty) * 1000,
        "pipeline_no_code_ms": med(ours_empty) * 1000,
        "no_code_ratio": med(ours_empty) / med(raw_empty),
        "pipeline_fps_no_code": 1 / med(ours_empty),
        "raw_decodable_ms": med(raw_coded) * 1000,
        "frame_to_feedback_ms": med(to_feedback) * 1000,
        "frame_to_feedback_p95_ms": sorted(to_feedback)[int(0.95 * (len(to_feedback) - 1))] * 1000,
    }


def bench_process(workdir: Path, seconds: float = 10.0) -> dict:
    """RSS and CPU of a real station process watching an empty gate at 15 frames/s."""
    images = workdir / "camera"
    images.mkdir()
    Image.fromarray(scene()).save(images / "empty.png")
    # The same picture held for the whole run: decoded from PNG once, as a camera hands
    # over a ready Y plane; what is measured is the station's own work per frame.
    cfg = station_config(workdir, f'kind = "folder"\npath = "{images}"\nloop = true\n'
                                  f'frames_per_image = 100000\ninterval_s = {1 / 15:.4f}')
    proc = subprocess.Popen([str(Path(sys.executable).parent / "qrgate-edge"), "run", "--config", str(cfg)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        time.sleep(3.0)  # let it start before measuring (benchmark, not a test)
        ticks = os.sysconf("SC_CLK_TCK")

        def cpu_s():
            fields = Path(f"/proc/{proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / ticks

        c0, t0 = cpu_s(), time.monotonic()
        time.sleep(seconds)
        c1, t1 = cpu_s(), time.monotonic()
        rss_kb = next(int(line.split()[1]) for line in Path(f"/proc/{proc.pid}/status").read_text().splitlines()
                      if line.startswith("VmRSS:"))
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    return {"rss_mb": rss_kb / 1024, "cpu_percent_of_one_core": 100 * (c1 - c0) / (t1 - t0), "fps": 15}


def run(frames: int = 200) -> dict:
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-station-") as tmp:
        work = Path(tmp)
        (work / "p").mkdir()
        (work / "q").mkdir()
        return {"pipeline": bench_pipeline(work / "p", frames), "process": bench_process(work / "q")}


def print_table(results: dict) -> None:
    p, q = results["pipeline"], results["process"]
    rows = [
        ("640x480 frame, no code: whole pipeline", f"{p['pipeline_no_code_ms']:.2f} ms ({p['pipeline_fps_no_code']:.0f} frames/s)",
         f"raw zxing-cpp {p['raw_no_code_ms']:.2f} ms", f"{p['no_code_ratio']:.2f}"),
        ("640x480 frame with a code -> feedback event", f"{p['frame_to_feedback_ms']:.2f} ms (p95 {p['frame_to_feedback_p95_ms']:.2f})",
         f"raw zxing-cpp decode {p['raw_decodable_ms']:.2f} ms", ""),
        ("station process at 15 frames/s, empty gate", f"{q['cpu_percent_of_one_core']:.1f} % of one core",
         "", ""),
        ("station process resident memory", f"{q['rss_mb']:.0f} MB", "", ""),
    ]
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=200)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.frames)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
