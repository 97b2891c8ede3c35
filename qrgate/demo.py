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
import contextlib
import dataclasses
import json
import logging
import os
import shlex
import shutil
import signal
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
    os.chmod(path, 0o700)  # the made-up people's check-ins, the keys: for this user only
    (path / MARKER).write_text("made by qrgate-demo; wiped at each start\n")
    return path


def _private_database(path: Path) -> None:
    """Make the demo's SQLite file 0600 (in a 0700 folder) before SQLite opens it: SQLite
    gives the -wal and -shm files it makes later the database file's mode. An installed
    server gets this from its unit's UMask; the demo runs under the shell's umask."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.chmod(path.parent, 0o700)
    os.close(os.open(path, os.O_WRONLY | os.O_CREAT, 0o600))
    os.chmod(path, 0o600)


def _console_script(name: str) -> str:
    """How to type one of this installation's commands: its name if the shell finds this
    very one, else its path (the demo usually runs from a venv that is not on PATH)."""
    script = Path(sys.executable).parent / name
    found = shutil.which(name)
    if not script.exists() or (found and Path(found).resolve() == script.resolve()):
        return name
    return shlex.quote(str(script))


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
        """Run the demo; Ctrl-C or SIGTERM (`kill`, a service manager) stops it.

        SIGTERM takes Ctrl-C's path, a KeyboardInterrupt in this thread, so either one
        closes everything started so far, newest first: station, bridge, scheduler, web
        UI and last the broker (started in its own session, it would outlive us).
        """
        previous = signal.signal(signal.SIGTERM, signal.default_int_handler)
        try:
            with contextlib.ExitStack() as started:
                return self._run(started)
        except KeyboardInterrupt:
            return 0
        finally:
            signal.signal(signal.SIGTERM, previous)

    def _run(self, started: contextlib.ExitStack) -> int:
        from edge.app import Station
        from edge.config import load_station_config
        from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
        from provisioning.station import enroll_local, server_public_keys, write_server_config
        from qrgate import protocol
        from qrgate.keyfiles import load_or_create_key
        from qrgate.samples import write_sample_images
        from server.ingest.bridge import Bridge
        from server.storage import IngestWindow
        from server.cli import ensure_dashboard_rollup, hold_bridge_lock, open_sealing, web_app
        from server.config import load_server_config
        from server.scheduler import ServerScheduler
        from server.storage.postgres import open_configured

        args = self.args
        data = _prepare_data_dir(Path(args.data))
        broker_files = BrokerFiles.create(data / "broker", port=free_port())
        server_password = broker_files.add_user(SERVER_USER)
        web_port = args.web_port or free_port()
        server_toml = write_server_config(data / "server" / "server.toml", broker=broker_files,
                                          password=server_password, web_port=web_port)
        server_cfg = load_server_config(server_toml)
        if not server_cfg.server.database:
            _private_database(server_cfg.database)
        # The demo's one venue is public: its latest (masked) check-ins show at /.
        server_cfg = dataclasses.replace(server_cfg, web=dataclasses.replace(server_cfg.web, public_feed=True))
        storage = open_configured(server_cfg)
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
        started.callback(broker.stop)  # registered first, so it is stopped last
        broker.start()
        # The server as `qrgate-server run` assembles it (server/cli.py): its bridge, the
        # web app of its configuration (enrolment through the broker's files, passes,
        # /metrics) and its scheduled jobs.
        hold_bridge_lock(server_cfg)
        bridge = Bridge(storage, server_cfg.mqtt, server_cfg.base, opener=open_sealing(server_cfg),
                        ingest=IngestWindow.from_config(server_cfg.ingest))
        app = web_app(server_cfg, storage, bridge)
        ensure_dashboard_rollup(server_cfg, storage)
        self._start_web(app, web_port, started)
        scheduler = ServerScheduler(storage, server_cfg.web.timezone, reports=server_cfg.reports,
                                    retention=server_cfg.retention)
        started.callback(scheduler.shutdown)
        scheduler.start()
        started.callback(bridge.close)
        bridge.start()
        station = Station(load_station_config(setup.config_path))
        started.callback(station.close)
        station.start()

        self.say(f"Web UI:        http://127.0.0.1:{web_port}/")
        self.say(f"Venue page:    {self._venue_login_link(storage, venue_id, web_port)}"
                 " (logs in the demo owner 0900 000 001; single use, 15 minutes)")
        self.say(f"Station screen: {data / 'station' / 'screen.png'} (updated after every scan)")
        self.say(f"Broker:        mqtts://127.0.0.1:{broker_files.port} (config {broker_files.conf})")
        provision = _console_script("qrgate-provision")
        self.say(f"Second station: {provision} enrol-code --server-config {shlex.quote(str(server_toml))}"
                 f" --venue {venue_id}, then {provision} enroll --token TOKEN"
                 f" --server http://127.0.0.1:{web_port} --dir STATION_DIR")
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

    @staticmethod
    def _venue_login_link(storage, venue_id: int, port: int) -> str:
        """Make the demo venue's owner account and a one-click login link for it."""
        from server.accounts.accounts import Accounts
        from server.areas.areas import AreaDirectory
        from server.accounts.sms import DevSmsSender
        from server.venues.venues import VenueDirectory

        accounts = Accounts(storage, DevSmsSender())
        owner = accounts.set_operator("0900000001")
        VenueDirectory(storage, accounts, AreaDirectory.load()).add_member(venue_id, owner, "owner")
        token = accounts.issue_login_link(owner.phone)
        return f"http://127.0.0.1:{port}/login/link?token={token}&next=/venues/{venue_id}"

    @staticmethod
    def _start_web(app, port: int, started: contextlib.ExitStack) -> None:
        """Serve the web app on 127.0.0.1:``port`` in a thread, stopped when ``started``
        closes. Not on the server's shared (SO_REUSEPORT) socket: a demo must not quietly
        share its port with a real server already on it."""
        import uvicorn

        from server.cli import uvicorn_config

        server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
        thread = threading.Thread(target=server.run, name="web", daemon=True)

        def stop() -> None:
            server.should_exit = True
            thread.join(timeout=5)

        thread.start()
        started.callback(stop)
        deadline = time.monotonic() + 15
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise UserError(f"the web UI could not listen on port {port} (in use? try --web-port 0)")
            time.sleep(0.02)  # waiting for uvicorn's startup flag, bounded by the deadline

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
