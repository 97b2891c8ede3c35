"""qrgate-provision: set up a broker, a server and stations, and issue personal passes.

  qrgate-provision broker  --dir broker --port 8883
  qrgate-provision server  --broker-dir broker --config server/server.toml
  qrgate-provision station --server-config server/server.toml --broker-dir broker \\
                           --id gate-1 --venue 1 --dir station
  qrgate-provision pass    --server-config server/server.toml --pid W0042 --name "Lê Thị Hoa" --png pass.png
"""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

from qrgate.cli import App, arg
from qrgate.errors import UserError

app = App("qrgate-provision", __doc__)


@app.command("broker", arg("--dir", required=True, help="folder for the broker's files"),
             arg("--port", type=int, default=8883),
             arg("--host", default="127.0.0.1", help="the name stations and the server connect to (in the certificate)"),
             arg("--listen", default=None, help="address to listen on (default: --host; 0.0.0.0 for all)"))
def broker(dir: str, port: int, host: str, listen: str | None) -> int:
    """Write a Mosquitto configuration: CA, TLS certificate, and the accounts (each bound to its client ids)."""
    from provisioning.broker import BrokerFiles

    if not 1 <= port <= 65535:
        raise UserError(f"--port must be 1-65535, got {port}")
    files = BrokerFiles.create(dir, port=port, host=host, listen=listen)
    print(files.conf)
    return 0


@app.command("server", arg("--broker-dir", required=True), arg("--config", required=True, help="server.toml to write"),
             arg("--web-port", type=int, default=8080),
             arg("--data-dir", default="data",
                 help="database and keys, relative to the config's folder (default: data; installed: /var/lib/qrgate)"))
def server(broker_dir: str, config: str, web_port: int, data_dir: str) -> int:
    """Give the server a broker account and write its server.toml."""
    from provisioning.broker import SERVER_USER, BrokerFiles
    from provisioning.station import write_server_config

    if not 1 <= web_port <= 65535:
        raise UserError(f"--web-port must be 1-65535, got {web_port}")
    files = BrokerFiles.open(broker_dir)
    password = files.add_user(SERVER_USER)
    print(write_server_config(Path(config), broker=files, password=password, web_port=web_port, data_dir=data_dir))
    return 0


@app.command("station", arg("--server-config", required=True), arg("--broker-dir", required=True),
             arg("--id", dest="station_id", required=True), arg("--venue", type=int, required=True),
             arg("--dir", required=True, help="the station's folder (its key is made there)"),
             arg("--mode", default="toggle", choices=("entry", "exit", "toggle")))
def station(server_config: str, broker_dir: str, station_id: str, venue: int, dir: str, mode: str) -> int:
    """Make a station's key in its folder, register it with the server and the broker."""
    from provisioning.broker import BrokerFiles
    from provisioning.broker_accounts import RESERVED_PREFIX, is_reserved_username
    from provisioning.station import enroll_local, server_public_keys
    from server.config import load_server_config
    from server.storage.postgres import open_configured

    if is_reserved_username(station_id):
        raise UserError(f"--id {station_id}: ids starting with '{RESERVED_PREFIX}' are the server's own broker accounts")
    cfg = load_server_config(server_config)
    storage = open_configured(cfg)
    pass_key, sealing_key = server_public_keys(cfg)
    setup = enroll_local(
        storage=storage, broker=BrokerFiles.open(broker_dir), station_id=station_id, venue_id=venue,
        station_dir=Path(dir), pass_keys=(pass_key,), server_key=sealing_key, mode=mode,
    )
    print(json.dumps({"station": setup.station_id, "config": str(setup.config_path), "public_key": setup.public_key}))
    return 0


@app.command("pass", arg("--server-config", required=True), arg("--pid", required=True),
             arg("--name", required=True), arg("--birth", default=""),
             arg("--days", type=int, default=365), arg("--png", help="also save the QR as this PNG"))
def issue(server_config: str, pid: str, name: str, birth: str, days: int, png: str | None) -> int:
    """Issue a signed personal pass (for a worker without a phone) and print its text."""
    from qrgate.keyfiles import load_or_create_key
    from qrgate.personal_pass import issue_pass
    from server.config import load_server_config

    if days < 1:
        raise UserError("--days must be at least 1")
    cfg = load_server_config(server_config)
    key = load_or_create_key(cfg.pass_key_file)
    today = dt.date.today()
    text = issue_pass(key, pid=pid, name=name, issued=today, expires=today + dt.timedelta(days=days), birth=birth)
    if png:
        import segno

        segno.make_qr(text, error="m").save(png, scale=8, border=4)
    print(text)
    return 0


def _push(server_config: str, stations: list[str] | None) -> int:
    from qrgate.keyfiles import load_or_create_key
    from server.config import load_server_config
    from server.ingest.stationconfig import StationConfigStore, publish_configs
    from server.storage.postgres import open_configured

    cfg = load_server_config(server_config)
    store = StationConfigStore(open_configured(cfg))
    return publish_configs(store, load_or_create_key(cfg.pass_key_file), cfg.mqtt, cfg.base, stations)


@app.command("configure", arg("--server-config", required=True), arg("--station", required=True),
             arg("--mode", choices=("entry", "exit", "toggle"), default="toggle"),
             arg("--repeat-window", type=float, default=30.0, help="seconds (default 30)"),
             arg("--anti-passback", action="store_true", help="refuse a second entry without an exit"),
             arg("--auto-checkout-hours", type=float, default=14.0,
                 help="an entry older than this counts as checked out (default 14)"))
def configure(server_config: str, station: str, mode: str, repeat_window: float, anti_passback: bool,
              auto_checkout_hours: float) -> int:
    """Change a station's settings and push them to it (applied at once, kept offline)."""
    from server.config import load_server_config
    from server.ingest.stationconfig import StationConfigStore, StationSettings
    from server.storage.postgres import open_configured

    store = StationConfigStore(open_configured(load_server_config(server_config)))
    version = store.set_settings(station, StationSettings(mode, repeat_window, anti_passback, auto_checkout_hours * 3600))
    _push(server_config, [station])
    print(f"{station}: settings version {version} pushed")
    return 0


@app.command("block", arg("--server-config", required=True),
             arg("--person", required=True, help="person key, e.g. cccd:024083123451 or bhxh:7912345670"),
             arg("--reason", default=""), arg("--remove", action="store_true", help="take the person off the list"))
def block(server_config: str, person: str, reason: str, remove: bool) -> int:
    """Add a person to (or remove from) the block list every station applies offline."""
    from server.config import load_server_config
    from server.ingest.stationconfig import StationConfigStore
    from server.storage.postgres import open_configured

    store = StationConfigStore(open_configured(load_server_config(server_config)))
    if remove:
        if not store.unblock(person):
            raise UserError(f"{person} is not on the block list")
    else:
        store.block(person, reason)
    print(f"block list: {len(store.blocked_keys())} person(s); pushed to {_push(server_config, None)} station(s)")
    return 0


def _fleet(server_config: str):
    from server.config import load_server_config
    from server.ingest.fleet import Fleet
    from server.storage.postgres import open_configured

    return Fleet(open_configured(load_server_config(server_config)))


@app.command("fleet", arg("--server-config", required=True), arg("--json", action="store_true"))
def fleet(server_config: str, json: bool) -> int:
    """List stations: venue, online, backlog, clock, firmware, last seen."""
    import datetime as dt
    import json as json_module

    rows = _fleet(server_config).rows()
    if json:
        print(json_module.dumps(rows, ensure_ascii=False))
        return 0
    for r in rows:
        seen = dt.datetime.fromtimestamp(r["last_seen_ms"] / 1000).strftime("%d/%m %H:%M") if r["last_seen_ms"] else "never"
        state = "retired" if r["status"] != "active" else ("online" if r["online"] else "offline")
        print(f"{r['station_id']:<24} {state:<8} backlog {r['backlog'] if r['backlog'] is not None else '-':<6} "
              f"clock {'ok' if r['clock_synced'] else '??':<3} fw {r['fw'] or '-':<8} seen {seen:<12} {r['venue']}")
    return 0


@app.command("retire", arg("--server-config", required=True), arg("--broker-dir", required=True),
             arg("--station", required=True))
def retire(server_config: str, broker_dir: str, station: str) -> int:
    """Retire a station: its records are refused from now on, its broker account is
    deleted and its open connection closed at once.

    Drain a station you are replacing first (its backlog on the fleet list is 0); a stolen
    one is cut off at once. Run it again if the broker could not be reached: a retired
    station's account is deleted then.
    """
    from provisioning.broker import BrokerFiles

    files = BrokerFiles.open(broker_dir)
    fleet = _fleet(server_config)
    info = fleet.storage.station(station)
    if info is None:
        raise UserError(f"no station {station!r}")
    if info.status != "retired":
        fleet.retire(station)
    files.remove_user(station)
    state = "was already retired" if info.status == "retired" else "retired"
    print(f"{station} {state}: its records are refused and it has no broker account (connection closed)")
    return 0


@app.command("reassign", arg("--server-config", required=True), arg("--station", required=True),
             arg("--venue", type=int, required=True))
def reassign(server_config: str, station: str, venue: int) -> int:
    """Bind a station to another venue (its next check-ins count there) and push its config."""
    _fleet(server_config).reassign(station, venue)
    _push(server_config, [station])
    print(f"{station} now at venue {venue}")
    return 0


@app.command("enrol-code", arg("--server-config", required=True), arg("--venue", type=int, required=True),
             arg("--minutes", type=float, default=10.0, help="how long the code works (default 10)"),
             arg("--url", default="", help="server address as stations reach it (default: the [web] address)"),
             arg("--png", help="also save the code as a QR image"))
def enrol_code(server_config: str, venue: int, minutes: float, url: str, png: str | None) -> int:
    """Make a single-use enrolment code for a venue; show it to a new station."""
    from server.config import load_server_config
    from server.ingest.enrol import Enrolment, enrol_code_text
    from server.storage.postgres import open_configured

    cfg = load_server_config(server_config)
    token = Enrolment(open_configured(cfg)).create_token(venue, minutes=minutes, created_by="cli")
    text = enrol_code_text(url or f"http://{cfg.web.host}:{cfg.web.port}", token)
    if png:
        import segno

        segno.make_qr(text, error="m").save(png, scale=8, border=4)
    print(text)
    return 0


@app.command("enroll", arg("--token", required=True), arg("--server", required=True, help="e.g. https://qr.example.vn"),
             arg("--dir", required=True, help="the station's folder (its key is made there)"),
             arg("--name", default="", help="a station id to ask for (default: the server picks one)"),
             arg("--state-dir", default="state",
                 help="key and outbox folder, relative to --dir (default: state; installed stations: /var/lib/qrgate)"))
def enroll(token: str, server: str, dir: str, name: str, state_dir: str) -> int:
    """Enrol this machine as a station, from a shell (the code's token and server address)."""
    from provisioning.enrol_client import enrol

    print(enrol(server, token, Path(dir), name=name, state_dir=state_dir))
    return 0


def main(argv=None) -> int:
    return app.main(argv)
