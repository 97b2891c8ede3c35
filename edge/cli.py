"""qrgate-edge: the gate station.

  qrgate-edge run --config station.toml     scan, decide, record and send until stopped
  qrgate-edge decode [--json] PATH...       read QR images with the station's own decoder
  qrgate-edge selftest --config station.toml  check every part and say what is wrong
  qrgate-edge enroll --config station.toml    show "scan setup code", read it, enrol
  qrgate-edge pubkey --config station.toml  print the station's public key (made if absent)
"""

from __future__ import annotations

import json
import signal
import time
from pathlib import Path

from qrgate.cli import App, arg
from qrgate.errors import UserError

app = App("qrgate-edge", __doc__)


@app.command("run", arg("--config", "-c", required=True, help="path to station.toml"))
def run(config: str) -> int:
    """Run the station until the source ends, SIGTERM or Ctrl-C."""
    from edge.app import Station
    from edge.config import load_station_config

    from edge.service import ServiceNotifier

    station = Station(load_station_config(config))
    signal.signal(signal.SIGTERM, lambda *a: station.stop())
    station.start()
    service = ServiceNotifier(station)
    service.start()
    try:
        station.run()
    finally:
        service.stop()
        station.close()  # blanks the screen and switches the lights off
    return 0


@app.command("decode", arg("paths", nargs="+", metavar="PATH", help="image files"),
             arg("--json", action="store_true", help="one JSON object per line"),
             arg("--decoder", default="default", help="zxing, zbar or default"))
def decode(paths: list[str], json: bool, decoder: str) -> int:
    """Decode images with the station's decoder and payload parser.

    Prints, per image: whether the payload would be accepted, the text read (even when
    the payload is refused), its kind, the refusal reason and the decode time in ms.
    Exit status 1 if a path is not a readable image.
    """
    from edge.decoder import get_decoder, load_gray
    from edge.payloads import PayloadRefused, parse_payload

    dec = get_decoder(decoder)
    failed = False
    for path in paths:
        line = {"path": path, "ok": False, "text": None, "kind": None, "error": None, "ms": None}
        try:
            gray = load_gray(Path(path))
        except UserError as exc:
            line["error"] = f"unreadable: {exc}"
            failed = True
            _print_line(line, json)
            continue
        started = time.perf_counter()
        found = dec.decode(gray)
        line["ms"] = round((time.perf_counter() - started) * 1000, 3)
        if not found:
            line["error"] = "no_code"
        else:
            line["text"] = found[0].text
            try:
                person = parse_payload(found[0].text)
                line.update(ok=True, kind=person.kind)
            except PayloadRefused as exc:
                line["error"] = exc.reason
        _print_line(line, json)
    return 1 if failed else 0


def _print_line(line: dict, as_json: bool) -> None:
    if as_json:
        print(json.dumps(line, ensure_ascii=False), flush=True)
    else:
        status = "OK " if line["ok"] else "NO "
        detail = line["kind"] or line["error"]
        print(f"{status} {line['path']}: {detail} {line['ms']} ms  {line['text']!r}", flush=True)


@app.command("selftest", arg("--config", "-c", required=True, help="path to station.toml"),
             arg("--json", action="store_true", help="one JSON object per check"))
def selftest(config: str, json: bool) -> int:
    """Check storage, clock, camera or scanner, lights, screen and broker; say what is wrong.

    While the station runs, its camera or scanner, lights and screen are not opened (they
    are busy): its own view of them is reported, from the health file it keeps in
    /run/qrgate. Exit status 0 when nothing failed (warnings allowed), 1 otherwise.
    """
    import json as json_module

    from edge.config import load_station_config
    from edge.selftest import run_selftest

    checks = run_selftest(load_station_config(config))
    for check in checks:
        if json:
            print(json_module.dumps({"part": check.part, "status": check.status, "message": check.message},
                                    ensure_ascii=False))
        else:
            print(check.line())
    return 1 if any(c.status == "fail" for c in checks) else 0


@app.command("enroll", arg("--config", "-c", required=True,
                            help="station.toml with at least [source] and [feedback]; rewritten when enrolled"),
             arg("--timeout", type=float, default=600.0, help="give up after this many seconds (default 600)"))
def enroll(config: str, timeout: float) -> int:
    """Show "scan setup code" on the screen, read the enrolment QR, enrol, write station.toml."""
    from edge.enrolment import enrol_from_code

    path = enrol_from_code(Path(config), timeout=timeout)
    print(path)
    return 0


@app.command("rotate-key", arg("--config", "-c", required=True, help="path to station.toml"),
             arg("--server", default="", help="server address (default: [station] server_url)"))
def rotate_key(config: str, server: str) -> int:
    """Replace the station's signing key (stop the station first); nothing queued is lost."""
    from edge.config import load_station_config
    from edge.key_rotation import rotate_key as rotate

    cfg = load_station_config(config)
    url = server or cfg.station.server_url
    if not url:
        raise UserError("no server address: give --server or set [station] server_url")
    print(f"new key signs from record {rotate(cfg, url)}")
    return 0


@app.command("screens", arg("--out", required=True, help="folder for the PNG pictures"),
             arg("--scale", type=int, default=3, help="enlarge each 128x64 screen this many times (default 3)"))
def screens(out: str, scale: int) -> int:
    """Draw every screen a station can show into PNG files (for guides and training)."""
    from edge.display.gallery import export_gallery

    if not 1 <= scale <= 10:
        raise UserError("--scale must be 1-10")
    for path in export_gallery(Path(out), scale=scale):
        print(path)
    return 0


@app.command("pubkey", arg("--config", "-c", required=True, help="path to station.toml"))
def pubkey(config: str) -> int:
    """Print the station's public key (base64), generating the key pair if there is none."""
    from edge.app import STATION_KEY_FILE
    from edge.config import load_station_config
    from qrgate import protocol
    from qrgate.keyfiles import load_or_create_key

    cfg = load_station_config(config)
    print(protocol.public_key_to_text(load_or_create_key(cfg.state_dir / STATION_KEY_FILE).public_key()))
    return 0


def main(argv=None) -> int:
    return app.main(argv)
