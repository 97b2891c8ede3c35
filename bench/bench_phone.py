"""The phone scanner in Chromium beside the station, on the same 640x480 frames.

- decoding: frames with a person's code and frames of an empty gate (bench_station's
  frames, seed for seed), read by zxing-wasm in the page (camera.js, the station's
  settings) and by the station's decoder (edge/decoder/zxing.py); the page's cost of
  taking a frame from the camera (drawImage + getImageData) beside it;
- a code entering the camera's view to the green screen: the scanner page, enrolled,
  with Chromium reading a video of those frames as its camera (a blank view, then a
  person's code, for each of ``--people``); "entered" is the first frame the page is
  shown with the code in it, "green" the moment the result screen is up; beside it the
  station's frame-to-feedback-event time on the same frames (bench_station).

    python -m bench.bench_phone [--frames N] [--people K] [--json PATH]

Needs Chromium (/usr/bin/chromium), Playwright and the page's npm files
(python -m server.phone.assets).
"""

from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402

from bench.bench_station import SIZE, bench_pipeline, scene, with_code  # noqa: E402
from bench.table import print_ratio_table  # noqa: E402
from qrgate.samples import cccd  # noqa: E402

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
PHONE = "0912486419"
CAMERA_FPS = 15
BLANK_S, CODE_S = 0.5, 1.0


def coded_frames(n: int) -> list[tuple[str, np.ndarray]]:
    """bench_station's frames with a code: the same text and the same picture for seed i."""
    out = []
    for i in range(n):
        text = cccd(f"0792{i:08d}", "", f"Đỗ Minh Khôi {i}", "01011990", "Nam", "Huế", "01012022")
        out.append((text, with_code(text, i)))
    return out


def station_decoding(coded: list[tuple[str, np.ndarray]], empty: np.ndarray, repeat: int) -> dict:
    from edge.decoder.zxing import ZxingDecoder

    decoder = ZxingDecoder()
    decoder.decode(empty)

    def timed(gray):
        best, texts = float("inf"), []
        for _ in range(repeat):
            start = time.perf_counter()
            texts = [d.text for d in decoder.decode(gray)]
            best = min(best, time.perf_counter() - start)
        return best * 1000, texts

    coded_runs = [timed(gray) for _, gray in coded]
    empty_runs = [timed(empty)[0] for _ in range(len(coded))]
    return {"coded_ms": statistics.median(t for t, _ in coded_runs),
            "read": sum(text in texts for (text, _), (_, texts) in zip(coded, coded_runs)),
            "no_code_ms": statistics.median(empty_runs)}


PAGE_DECODE = """async ([frames, width, height, repeat]) => {
    const { Decoder } = await import('/static/phone/camera.js');
    const decoder = await Decoder.create();
    const canvas = new OffscreenCanvas(width, height);
    const context = canvas.getContext('2d', { willReadFrequently: true });
    const images = frames.map((b64) => {
        const gray = Uint8Array.from(atob(b64), (c) => c.charCodeAt(0));
        const image = new ImageData(width, height);
        for (let i = 0; i < gray.length; i++) image.data.set([gray[i], gray[i], gray[i], 255], 4 * i);
        return image;
    });
    await decoder.decode(images[0]);
    const out = [];
    for (const image of images) {
        let best = Infinity, texts = [], capture = Infinity;
        const bitmap = await createImageBitmap(image);
        for (let r = 0; r < repeat; r++) {
            let t = performance.now();
            context.drawImage(bitmap, 0, 0);
            context.getImageData(0, 0, width, height);
            capture = Math.min(capture, performance.now() - t);
            t = performance.now();
            texts = await decoder.decode(image);
            best = Math.min(best, performance.now() - t);
        }
        out.push({ ms: best, capture, texts });
    }
    return { decoder: decoder.name, frames: out };
}"""


def page_decoding(page, coded: list[tuple[str, np.ndarray]], empty: np.ndarray, repeat: int) -> dict:
    frames = [gray for _, gray in coded] + [empty] * len(coded)
    encoded = [base64.b64encode(np.ascontiguousarray(f).tobytes()).decode("ascii") for f in frames]
    answer = page.evaluate(PAGE_DECODE, [encoded, SIZE[0], SIZE[1], repeat])
    runs = answer["frames"]
    with_codes, without = runs[:len(coded)], runs[len(coded):]
    return {"decoder": answer["decoder"], "coded_ms": statistics.median(r["ms"] for r in with_codes),
            "read": sum(text in r["texts"] for (text, _), r in zip(coded, with_codes)),
            "no_code_ms": statistics.median(r["ms"] for r in without),
            "capture_ms": statistics.median(r["capture"] for r in runs)}


def write_y4m(path: Path, frames: list[np.ndarray], fps: int) -> None:
    """Grey frames as a YUV 4:2:0 video (the Y plane is the frame, chroma neutral)."""
    height, width = frames[0].shape
    chroma = bytes([128]) * ((width // 2) * (height // 2) * 2)
    with path.open("wb") as out:
        out.write(f"YUV4MPEG2 W{width} H{height} F{fps}:1 Ip A1:1 C420jpeg\n".encode("ascii"))
        for frame in frames:
            out.write(b"FRAME\n" + np.ascontiguousarray(frame).tobytes() + chroma)


WATCH_ENTERING = """() => {
    // For each camera frame: the empty gate, or a code in view? The first frame with a
    // code after one without is when the code "entered": its capture time (the camera's
    // clock in the page's timeline), else the time it was presented.
    const video = document.getElementById('camera');
    const canvas = new OffscreenCanvas(160, 120);
    const context = canvas.getContext('2d', { willReadFrequently: true });
    context.imageSmoothingEnabled = false;
    window.benchEntered = [];
    let blank = true;
    const watch = (now, frame) => {
        context.drawImage(video, 0, 0, 160, 120);
        const data = context.getImageData(0, 0, 160, 120).data;
        let dark = 0;
        for (let i = 0; i < data.length; i += 4) if (data[i] < 40) dark++;
        const holdsCode = dark > 50;  // the empty gate never goes below 60 (bench_station.scene)
        if (holdsCode && blank) window.benchEntered.push(frame.captureTime || frame.presentationTime || now);
        blank = !holdsCode;
        video.requestVideoFrameCallback(watch);
    };
    video.requestVideoFrameCallback(watch);
}"""


def serve(storage_dir: Path):
    import uvicorn
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from provisioning.broker import free_port
    from server.accounts.sms import DevSmsSender
    from server.cli import uvicorn_config
    from server.phone.service import attach
    from server.storage import SqliteStorage
    from server.web.app import create_app

    sender = DevSmsSender()
    app = create_app(SqliteStorage(storage_dir / "server.sqlite3"), sender=sender)
    attach(app, sealing_key=X25519PrivateKey.generate(), pass_key=Ed25519PrivateKey.generate())
    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
    threading.Thread(target=server.run, daemon=True).start()
    deadline = time.monotonic() + 15
    while not server.started:
        if time.monotonic() > deadline:
            raise RuntimeError("the web server did not start")
        time.sleep(0.05)
    return app, sender, server, f"http://127.0.0.1:{port}"


def log_in(page, base: str, sender) -> None:
    from server.accounts.accounts import normalise_phone

    csrf = page.request.get(f"{base}/api/session").json()["csrf_token"]
    page.request.post(f"{base}/api/login/code", data={"phone": PHONE}, headers={"x-csrf-token": csrf})
    code = re.search(r"(\d{6})\. Mã hết hạn", sender.last_text_to(normalise_phone(PHONE))).group(1)
    answer = page.request.post(f"{base}/api/login", data={"phone": PHONE, "code": code},
                               headers={"x-csrf-token": csrf})
    if answer.status != 200:
        raise RuntimeError(f"login failed: {answer.status} {answer.text()}")


def entering_to_green(people: int, workdir: Path) -> dict:
    from playwright.sync_api import sync_playwright

    from server.ingest.enrol import enrol_code_text

    empty = scene()
    frames: list[np.ndarray] = []
    for _, gray in coded_frames(people):
        frames += [empty] * round(BLANK_S * CAMERA_FPS) + [gray] * round(CODE_S * CAMERA_FPS)
    frames += [empty] * round(2 * CAMERA_FPS)
    video = workdir / "camera.y4m"
    write_y4m(video, frames, CAMERA_FPS)
    app, sender, server, base = serve(workdir)
    services = app.state.services
    venue_id = services.storage.add_venue("Cổng bench")
    services.venues.add_member(venue_id, services.accounts.account_for_phone(PHONE), "owner")
    try:
        with sync_playwright() as p:
            context = p.chromium.launch_persistent_context(
                str(workdir / "profile"), executable_path=CHROMIUM, viewport={"width": 390, "height": 844},
                is_mobile=True, has_touch=True,
                args=[*ARGS, "--use-fake-device-for-media-stream", "--use-fake-ui-for-media-stream",
                      f"--use-file-for-fake-video-capture={video}"])
            context.grant_permissions(["camera"], origin=base)
            page = context.new_page()
            log_in(page, base, sender)
            page.goto(f"{base}/phone/venues/{venue_id}")
            page.fill("#enrol-code", enrol_code_text(base, services.enrolment.create_token(venue_id)))
            page.click("#enrol-submit")
            page.wait_for_selector("#scanner:not([hidden])", timeout=30_000)
            page.click("#start")
            page.wait_for_selector("body.camera-on", timeout=30_000)
            page.evaluate(WATCH_ENTERING)
            started = time.monotonic()
            deadline = started + 120
            while True:
                log = page.evaluate("window.qrgatePhone.log")
                green = [o for o in log if o["result"] == "accepted"]
                if len(green) >= people or time.monotonic() > deadline:
                    break
                page.wait_for_timeout(200)  # the page's clock runs on; this only paces the polling
            entered = page.evaluate("window.benchEntered")
            frames_read = page.evaluate("window.qrgatePhone.camera ? window.qrgatePhone.camera.frames : 0")
            seconds = time.monotonic() - started
            context.close()
    finally:
        server.should_exit = True
    latencies = []
    for outcome in green:
        before = [t for t in entered if t <= outcome["shownAt"]]
        if before:
            latencies.append(outcome["shownAt"] - before[-1])
    if not latencies:
        raise RuntimeError(f"no code was shown green: is the camera video readable? (page: {log[-5:]}, "
                           f"{len(entered)} codes entered, {frames_read} frames decoded)")
    return {"people": people, "green": len(green), "median_ms": statistics.median(latencies),
            "max_ms": max(latencies), "camera_fps": CAMERA_FPS, "frames_decoded": frames_read,
            "frames_decoded_per_s": frames_read / seconds}


def run(frames: int = 20, people: int = 8, repeat: int = 3) -> dict:
    from playwright.sync_api import sync_playwright

    coded = coded_frames(frames)
    empty = scene()
    results = {"station_decoding": station_decoding(coded, empty, repeat)}
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-phone-") as tmp:
        work = Path(tmp)
        app, _, server, base = serve(work)
        try:
            with sync_playwright() as p:
                browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
                # Any page of the site: the decoder alone is timed, apart from the scanner's
                # own page (whose policy allows WebAssembly: a plain page's does not).
                page = browser.new_page(bypass_csp=True)
                page.goto(f"{base}/login")
                results["page_decoding"] = page_decoding(page, coded, empty, repeat)
                browser.close()
        finally:
            server.should_exit = True
        (work / "station").mkdir()
        results["station_pipeline"] = bench_pipeline(work / "station", people)
        (work / "green").mkdir()
        results["entering_to_green"] = entering_to_green(people, work / "green")
    return results


def print_table(results: dict) -> None:
    page, station = results["page_decoding"], results["station_decoding"]
    green, pipeline = results["entering_to_green"], results["station_pipeline"]
    rows = [
        (f"640x480 frame with a code: decode ({page['decoder']}, read {page['read']})",
         f"{page['coded_ms']:.1f} ms ({1000 / page['coded_ms']:.0f} frames/s)",
         f"station zxing-cpp {station['coded_ms']:.1f} ms (read {station['read']})",
         f"{page['coded_ms'] / station['coded_ms']:.2f}"),
        ("640x480 frame, empty gate: decode", f"{page['no_code_ms']:.1f} ms ({1000 / page['no_code_ms']:.0f} frames/s)",
         f"station zxing-cpp {station['no_code_ms']:.1f} ms", f"{page['no_code_ms'] / station['no_code_ms']:.2f}"),
        ("taking a 640x480 frame from the camera (draw + read pixels)", f"{page['capture_ms']:.1f} ms", "", ""),
        ("frames decoded while scanning, live camera", f"{green['frames_decoded_per_s']:.1f} frames/s",
         f"camera {green['camera_fps']} frames/s", ""),
        (f"code enters the view -> green screen ({green['green']} of {green['people']}, camera {green['camera_fps']} fps)",
         f"{green['median_ms']:.0f} ms (max {green['max_ms']:.0f})",
         f"station frame -> feedback event {pipeline['frame_to_feedback_ms']:.1f} ms", ""),
    ]
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=20, help="frames with a code to decode on each side")
    parser.add_argument("--people", type=int, default=8, help="codes shown to the page's camera")
    parser.add_argument("--repeat", type=int, default=3, help="decodes of each frame (the fastest counts)")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.frames, args.people, args.repeat)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
