"""qrgate-demo: a broker, the server and one simulated station, on this machine.

Starts Mosquitto with the project's own configuration (TLS, passwords, ACL) on a free
local port, the server with an SQLite file under the data folder, and one station that
reads a folder of QR images as its camera. Open the printed URL to watch check-ins
arrive; the station's screen is written to a PNG beside it.

With --once, every image is shown once; the demo waits until the server has stored
every accepted scan, prints one JSON summary and exits (1 if anything accepted was not
stored).
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import sys
import threading
import time
from pathlib import Path

from qrgate.errors import QrgateError, UserError

logger = logging.getLogger("qrgate.demo")
MARKER = ".qrgate-demo"


def _parser() -> argparse.ArgumentParser:
    from qrgate.cli import _Parser

    p = _Parser(prog="qrgate-demo", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", default="demo-data", help="folder for the demo's state (wiped at start; default demo-data)")
    p.add_argument("--images", help="folder of QR images to show the station (default: generated sample people)")
    p.add_argument("--once", action="store_true", help="show every image once, wait for the server, then exit")
    p.add_argument("--json", action="store_true", help="print only one JSON summary on stdout")
    p.add_argument("--web-port", type=int, default=8080, help="web UI port (0 = any free port; default 8080)")
    p.add_argument("--hold", type=float, default=1.5, help="seconds each image stays in front of the camera")
    p.add_argument("--timeout", type=float, default=120.0, help="--once: seconds to wait for the server")
    p.add_argument("-v", "--verbose", action="count", default=0)
    return p


def _prepare_data_dir(path: Path) -> Path:
    path = path.resolve()
    if path.exists():
        if not (path / MARKER).exists() and any(path.iterdir()):
            raise UserError(f"{path} exists and is not a demo folder; choose another --data")
        shutil.rmtree(path)
    path.mkdir(parents=True)
    (path / MARKER).write_text("made by qrgate-demo; wiped at each start\n")
    return path


def main(argv=None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.WARNING - 10 * min(args.verbose + (0 if args.json else 1), 2),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if not 0 <= args.web_port <= 65535:
        parser.error(f"--web-port must be 0-65535, got {args.web_port}")
    if args.images and not Path(args.images).is_dir():
        parser.error(f"--images {args.images}: not a folder")
    try:
        return Demo(args).run()
    except UserError as exc:
        parser.error(str(exc))
    except QrgateError as exc:
        print(f"qrgate-demo: {exc}", file=sys.stderr)
        return 2
    return 1


class Demo:
    def __init__(self, args: argparse.Namespace):
        self.args = args
        self.say = (lambda *a: None) if args.json else (lambda *a: print(*a, flush=True))

    def run(self) -> int:
        from edge.app import Station
        from edge.config import load_station_config
        from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
        from provisioning.station import enroll_local, server_public_keys, write_server_config
        from qrgate import protocol
        from qrgate.keyfiles import load_or_create_key
        from qrgate.samples import write_sample_images
        from server.bridge import Bridge
        from server.cli import open_sealing
        from server.config import load_server_config
        from server.storage import SqliteStorage

        args = self.args
        data = _prepare_data_dir(Path(args.data))
        broker_files = BrokerFiles.create(data / "broker", port=free_port())
        server_password = broker_files.add_user(SERVER_USER)
        web_port = args.web_port or free_port()
        server_cfg = load_server_config(
            write_server_config(data / "server" / "server.toml", broker=broker_files,
                                password=server_password, web_port=web_port)
        )
        storage = SqliteStorage(server_cfg.database)
        pass_key = load_or_create_key(server_cfg.pass_key_file)
        venue_id = storage.add_venue("Nhà máy Demo - Cổng 1", "factory gate", "KCN Tân Bình, TP Hồ Chí Minh")

        images = Path(args.images).resolve() if args.images else data / "images"
        if not args.images:
            write_sample_images(images, pass_key)
        image_count = sum(1 for p in images.iterdir() if p.suffix.lower() in (".png", ".jpg", ".jpeg", ".webp", ".bmp"))
        frames_per_image = 1 if args.once else max(1, int(args.hold / 0.2))
        source = {"kind": "folder", "path": str(images), "frames_per_image": frames_per_image,
                  "interval_s": 0.0 if args.once else 0.2, "loop": not args.once}
        setup = enroll_local(
            storage=storage, broker=broker_files, station_id="demo-gate-1", venue_id=venue_id,
            station_dir=data / "station", venue_name="Nhà máy Demo - Cổng 1",
            pass_keys=(protocol.public_key_to_text(pass_key.public_key()),), source=source,
            server_key=server_public_keys(server_cfg)[1],
        )

        broker = BrokerProcess(broker_files)
        broker.start()
        bridge = Bridge(storage, server_cfg.mqtt, server_cfg.base, opener=open_sealing(server_cfg))
        bridge.start()
        stop_web = threading.Event()
        web_thread = self._start_web(storage, web_port, stop_web)
        station = Station(load_station_config(setup.config_path))
        try:
            station.start()
            self.say(f"Web UI:        http://127.0.0.1:{web_port}/")
            self.say(f"Venue page:    {self._venue_login_link(storage, venue_id, web_port)}"
                     " (logs in the demo owner 0900 000 001; single use, 15 minutes)")
            self.say(f"Station screen: {data / 'station' / 'screen.png'} (updated after every scan)")
            self.say(f"Broker:        mqtts://127.0.0.1:{broker_files.port} (config {broker_files.conf})")
            if not args.once:
                self.say("Scanning the sample images in a loop; Ctrl-C to stop.")
                station.run()
                return 0
            for capture in station.source.captures():
                station.handle_capture(capture)
                station.new_presentation()  # every image is shown once, as its own scan
            drained = station.publisher.wait_drained(args.timeout)
            summary = self._summary(station, storage, image_count)
            if args.json:
                print(json.dumps(summary, ensure_ascii=False), flush=True)
            else:
                self.say(json.dumps(summary, ensure_ascii=False, indent=2))
            ok = drained and summary["stored_at_server"] == summary["accepted"]
            if not ok:
                print("qrgate-demo: not every accepted scan was stored by the server", file=sys.stderr)
            return 0 if ok else 1
        except KeyboardInterrupt:
            return 0
        finally:
            station.close()
            bridge.close()
            stop_web.set()
            web_thread.join(timeout=5)
            broker.stop()

    @staticmethod
    def _venue_login_link(storage, venue_id: int, port: int) -> str:
        """Make the demo venue's owner account and a one-click login link for it."""
        from server.accounts import Accounts
        from server.areas import AreaDirectory
        from server.sms import DevSmsSender
        from server.venues import VenueDirectory

        accounts = Accounts(storage, DevSmsSender())
        owner = accounts.set_operator("0900000001")
        VenueDirectory(storage, accounts, AreaDirectory.load()).add_member(venue_id, owner, "owner")
        token = accounts.issue_login_link(owner.phone)
        return f"http://127.0.0.1:{port}/login/link?token={token}&next=/venues/{venue_id}"

    def _start_web(self, storage, port: int, stop: threading.Event) -> threading.Thread:
        import uvicorn

        from server.web import create_app

        server = uvicorn.Server(uvicorn.Config(create_app(storage, public_feed=True), host="127.0.0.1", port=port, log_level="warning"))

        def serve():
            server.run()

        thread = threading.Thread(target=serve, name="web", daemon=True)
        thread.start()
        threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True).start()
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise UserError(f"the web UI could not listen on port {port} (in use? try --web-port 0)")
            time.sleep(0.02)  # waiting for uvicorn's startup flag, bounded by the deadline
        return thread

    @staticmethod
    def _summary(station, storage, images: int) -> dict:
        counts = station.counts
        refused: dict[str, int] = {}
        for key, n in counts.items():
            if key.startswith("refused.") or key.startswith("fault."):
                refused[key.split(".", 1)[1]] = refused.get(key.split(".", 1)[1], 0) + n
        if counts.get("already_counted"):
            refused["already_counted"] = counts["already_counted"]
        if counts.get("no_code"):
            refused["no_code"] = counts["no_code"]
        return {
            "images": images,
            "accepted": counts.get("accepted", 0) + counts.get("accepted_offline", 0),
            "refused": refused,
            "stored_at_server": storage.count_checkins(station.config.station.id),
        }
