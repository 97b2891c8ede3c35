"""qrgate-server: the server that stores check-ins from stations and serves the web UI.

Typical use: `qrgate-server run --config server.toml`. Stations are registered with
`qrgate-provision station` (or `qrgate-server station-add` with a public key).
To share the ingest over several processes: `qrgate-server run --no-bridge` for the web
UI and `qrgate-server bridge --worker-id N` for each bridge worker (docs/scaling.md).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import signal
import socket
import threading
from pathlib import Path

from qrgate.cli import App, arg
from qrgate.errors import UserError
from server.config import load_server_config, resolve

logger = logging.getLogger(__name__)
app = App("qrgate-server", __doc__)

CONFIG = arg("--config", "-c", required=True, help="path to server.toml")


@contextlib.contextmanager
def startup_lock(config_path: str):
    """Let one server process at a time open the database and create its tables.

    The web process and the bridge workers start together under systemd; SQLite refuses
    ("database is locked", without waiting) a connection whose read turns into a write
    while another process is creating the same tables, so their start-ups take turns.
    """
    config = load_server_config(config_path)
    lock_path = Path(f"{config.database}.startup-lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


_held_locks: list = []  # open for the life of the process


def hold_bridge_lock(cfg) -> None:
    """One `run` with its bridge per host: a second would log in to the broker under the
    same client id and the two would take the session from each other. (Web processes
    share the port on purpose, so the port no longer tells.)"""
    path = Path(f"{cfg.database}.bridge-lock")
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = open(path, "a")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        lock.close()
        raise UserError(f"another `qrgate-server run` with its bridge is running here ({path} is held):"
                        " start further web processes with --no-bridge") from None
    _held_locks.append(lock)


def open_storage(config_path: str):
    """The configuration and the storage it names: SQLite by default, PostgreSQL when
    ``[server] database`` is a postgresql:// URL (docs/postgresql.md)."""
    from server.storage.postgres import open_configured

    config = load_server_config(config_path)
    return config, open_configured(config)


@app.command("venue-add", CONFIG, arg("--name", required=True), arg("--kind", default=""),
             arg("--address", default=""))
def venue_add(config: str, name: str, kind: str, address: str) -> int:
    """Register a venue (a gate, a building, a vehicle) and print its id."""
    _, storage = open_storage(config)
    print(storage.add_venue(name, kind, address))
    return 0


@app.command("station-add", CONFIG, arg("--id", dest="station_id", required=True),
             arg("--public-key", required=True, help="base64 Ed25519 public key printed by `qrgate-edge pubkey`"),
             arg("--venue", type=int, required=True, help="venue id"))
def station_add(config: str, station_id: str, public_key: str, venue: int) -> int:
    """Register a station's public key and bind it to a venue."""
    _, storage = open_storage(config)
    try:
        storage.add_station(station_id, public_key, venue)
    except ValueError as exc:
        raise UserError(str(exc)) from None
    return 0


@app.command("operator-add", CONFIG, arg("--phone", required=True))
def operator_add(config: str, phone: str) -> int:
    """Make the account of this phone number a server operator (it sees /operator/sms)."""
    from server.accounts.accounts import Accounts
    from server.accounts.sms import create_sender

    cfg, storage = open_storage(config)
    account = Accounts(storage, create_sender(cfg.auth.sms_sender)).set_operator(phone)
    print(f"{account.phone} is a server operator (account {account.id}): after logging in it sees the fleet"
          f" (/fleet), the dashboards and the SMS outbox. First login without SMS:"
          f" qrgate-server login-link --config {config} --phone {account.phone}")
    return 0


def load_areas(cfg):
    """The 2025 map, with the old codes of [web] areas_file (else the bundled legacy sample)."""
    from server.areas.areas import AreaDirectory

    return AreaDirectory.load(resolve(cfg.base, cfg.web.areas_file) if cfg.web.areas_file else None)


def _officer_change(config: str, phone: str, area: str, grant: bool) -> int:
    from server.accounts.accounts import Accounts
    from server.audit import AuditLog
    from server.areas.officers import Officers
    from server.accounts.sms import create_sender

    cfg, storage = open_storage(config)
    accounts = Accounts(storage, create_sender(cfg.auth.sms_sender))
    officers = Officers(storage, load_areas(cfg))
    audit = AuditLog(storage)
    if grant:
        granted = officers.grant(accounts, phone, area, audit)
        level = "province" if granted.level == "province" else "commune/ward"
        print(f"{accounts.account_for_phone(phone).phone} is a health officer for {granted.name} ({level})")
    elif not officers.revoke(accounts, phone, area, audit):
        raise UserError(f"{phone} was not a health officer for area {area}")
    return 0


@app.command("officer-add", CONFIG, arg("--phone", required=True),
             arg("--area", required=True, help="a province (2 digits) or commune/ward (5 digits) of the 2025 map"))
def officer_add(config: str, phone: str, area: str) -> int:
    """Make the account of this phone number a health officer for an area: it sees
    check-ins of the area's venues in full (audited), traces contacts and reads dashboards."""
    return _officer_change(config, phone, area, True)


@app.command("officer-remove", CONFIG, arg("--phone", required=True), arg("--area", required=True))
def officer_remove(config: str, phone: str, area: str) -> int:
    """Withdraw a health officer's role for an area."""
    return _officer_change(config, phone, area, False)


@app.command("areas-migrate", CONFIG,
             arg("--mapping", default="", help="CSV of old_code,new_code (default: the bundled sample's, docs/web.md)"),
             arg("--apply", action="store_true", help="make the changes (without it: a dry run that only lists them)"))
def areas_migrate(config: str, mapping: str, apply: bool = False) -> int:
    """Move venues and health officers from old three-level area codes to the 2025 map.

    Lists every venue and officer grant it moves and every one it cannot (no line in the
    mapping file, or a district); changes nothing unless --apply. Audited; running it
    again changes nothing more. Returns 1 while anything is left without a mapping.
    """
    from server.accounts.accounts import Accounts
    from server.accounts.sms import create_sender
    from server.areas.migrate import DEFAULT_MAPPING_FILE, apply_migration, plan_migration, read_mapping, report_lines
    from server.areas.officers import Officers
    from server.audit import AuditLog
    from server.venues.venues import VenueDirectory

    cfg, storage = open_storage(config)
    areas = load_areas(cfg)
    accounts = Accounts(storage, create_sender(cfg.auth.sms_sender))
    VenueDirectory(storage, accounts, areas)  # the venues' and officers' columns, marked on an upgrade
    Officers(storage, areas)
    table = read_mapping(mapping or DEFAULT_MAPPING_FILE, areas)
    plan = plan_migration(storage, areas, table)
    changed = apply_migration(storage, plan, AuditLog(storage)) if apply else 0
    for line in report_lines(plan, apply):
        print(line)
    print(f"{'moved' if apply else 'dry run: would move'} {changed if apply else len(plan.moves)},"
          f" without a mapping {len(plan.unmapped)} (map: {areas.source}; mapping: {table.path})")
    return 1 if plan.unmapped else 0


@app.command("login-link", CONFIG, arg("--phone", required=True),
             arg("--base-url", default="", help="the server's address (default: [web] public_url, else host:port)"))
def login_link(config: str, phone: str, base_url: str) -> int:
    """Print a single-use link (15 minutes) that logs this phone number in: an operator's
    first login, before any SMS gateway is set up."""
    from server.accounts.accounts import Accounts
    from server.accounts.sms import create_sender

    cfg, storage = open_storage(config)
    token = Accounts(storage, create_sender(cfg.auth.sms_sender)).issue_login_link(phone)
    base = (base_url or cfg.web.public_url or f"http://{cfg.web.host}:{cfg.web.port}").rstrip("/")
    print(f"{base}/login/link?token={token}")
    return 0


def _day_ms(text: str, option: str) -> int:
    import datetime as dt

    try:
        day = dt.date.fromisoformat(text)
    except ValueError:
        raise UserError(f"{option} must be a date like 2026-11-22, got {text!r}") from None
    return int(dt.datetime(day.year, day.month, day.day, tzinfo=dt.timezone.utc).timestamp() * 1000)


@app.command("trace", CONFIG, arg("--person", required=True, help="person key, e.g. cccd:024083123451"),
             arg("--from", dest="start", required=True, help="first day, YYYY-MM-DD (UTC)"),
             arg("--to", dest="end", required=True, help="last day, YYYY-MM-DD (UTC), included"),
             arg("--margin-min", type=int, default=15, help="widen each visit by this much (default 15)"),
             arg("--stay-min", type=int, default=60, help="a visit with one scan lasts this long (default 60)"))
def trace(config: str, person: str, start: str, end: str, margin_min: int, stay_min: int) -> int:
    """Contact tracing: the person's visits and everyone who overlapped them, as JSON.

    The trace reads personal data in full; it is written to the audit trail.
    """
    from server.audit import AuditLog
    from server.checkins.tracing import tracer_for

    if not 0 <= margin_min <= 24 * 60 or not 1 <= stay_min <= 24 * 60:
        raise UserError("--margin-min must be 0-1440 and --stay-min 1-1440")
    start_ms, end_ms = _day_ms(start, "--from"), _day_ms(end, "--to") + 86_400_000
    if end_ms <= start_ms:
        raise UserError("--to must not be before --from")
    _, storage = open_storage(config)
    result = tracer_for(storage).trace(person, start_ms, end_ms, margin_s=margin_min * 60, default_stay_s=stay_min * 60)
    AuditLog(storage).record("qrgate.trace.run", ip="cli", person=person, contacts=len(result["contacts"]))
    print(json.dumps(result, ensure_ascii=False))
    return 0


@app.command("retention", CONFIG, arg("--days", type=int, required=True, help="keep this many days"))
def retention(config: str, days: int) -> int:
    """Delete check-ins older than --days days (run it daily, e.g. from a systemd timer)."""
    from server.audit import AuditLog
    from server.checkins.tracing import delete_older_than

    if days < 1:
        raise UserError("--days must be at least 1")
    _, storage = open_storage(config)
    deleted = delete_older_than(storage, days)
    AuditLog(storage).record("qrgate.retention.deleted", ip="cli", rows=deleted, days=days)
    print(deleted)
    return 0


@app.command("stats", CONFIG)
def stats(config: str) -> int:
    """Print check-in and refusal counts as JSON."""
    _, storage = open_storage(config)
    print(json.dumps({"checkins": storage.count_checkins(), "refused": storage.refusal_counts()}))
    return 0


@app.command("run", CONFIG,
             arg("--no-bridge", action="store_true",
                 help="web UI only: the records are stored by `qrgate-server bridge` workers"))
def run(config: str, no_bridge: bool = False) -> int:
    """Run the MQTT bridge and the web UI until SIGTERM or Ctrl-C."""
    from server.ingest.bridge import Bridge
    from server.scheduler import ServerScheduler
    from server.storage import IngestWindow

    with startup_lock(config):
        cfg, storage = open_storage(config)
        if no_bridge and not cfg.web.enabled:
            raise UserError(f"{cfg.path}: [web] is disabled and --no-bridge leaves nothing to run")
        if not no_bridge:
            hold_bridge_lock(cfg)
        bridge = None if no_bridge else Bridge(storage, cfg.mqtt, cfg.base, opener=open_sealing(cfg),
                                               ingest=IngestWindow.from_config(cfg.ingest))
        # Build the web app (which creates its tables) before the bridge starts writing:
        # a schema change racing the bridge's first commits would be refused by SQLite.
        app = web_app(cfg, storage, bridge) if cfg.web.enabled else None
        ensure_dashboard_rollup(cfg, storage)
        scheduler = ServerScheduler.from_config(
            cfg, storage, officers=app.state.services.officers if app is not None else None)
    if bridge is not None:
        bridge.start()
    scheduler.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        if app is not None:
            serve_web(app, cfg.web.host, cfg.web.port, stop, bridge)
        else:
            stop.wait()
    finally:
        scheduler.shutdown()
        if bridge is not None:
            bridge.close()
    return 0


def ensure_dashboard_rollup(cfg, storage) -> None:
    """The dashboards' per-day counts are kept by triggers on the check-ins table: they
    must be in place before the first check-in is stored."""
    from zoneinfo import ZoneInfo

    from server.reports.dashboard import ensure_rollup

    ensure_rollup(storage, ZoneInfo(cfg.web.timezone))


WORKER_ID = arg("--worker-id", type=int, required=True, help="1, 2, 3 ...: stable and unique per worker")


@app.command("bridge", CONFIG, WORKER_ID,
             arg("--metrics-port", type=int, default=0, help="serve this worker's /metrics on 127.0.0.1:PORT"))
def bridge_worker(config: str, worker_id: int, metrics_port: int = 0) -> int:
    """Run one bridge worker (no web UI) until SIGTERM or Ctrl-C.

    Workers share the stations' records through an MQTT v5 shared subscription; each
    keeps its own broker session under its id, so restart a worker with the same id.
    Worker 1 also records the stations' status. Pair with `run --no-bridge`.
    """
    from server.storage import IngestWindow
    from server.ingest.workers import make_worker, run_worker, worker_client_id

    worker_client_id(worker_id)  # refuse a bad id before opening anything
    if not 0 <= metrics_port <= 65535:
        raise UserError(f"--metrics-port must be 1-65535 (0: none), got {metrics_port}")
    with startup_lock(config):
        cfg, storage = open_storage(config)
        bridge = make_worker(storage, cfg.mqtt, cfg.base, worker_id, opener=open_sealing(cfg),
                             ingest=IngestWindow.from_config(cfg.ingest))
        ensure_dashboard_rollup(cfg, storage)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    signal.signal(signal.SIGINT, lambda *a: stop.set())
    bridge.start()
    logger.info("bridge worker %d started", worker_id)
    try:
        run_worker(bridge, stop, metrics_port=metrics_port or None, storage=storage)
    finally:
        bridge.close()
    return 0


@app.command("bridge-retire", CONFIG, WORKER_ID)
def bridge_retire(config: str, worker_id: int) -> int:
    """End a stopped worker's broker session for good (a worker that will not come back).

    The broker keeps handing a share of the records to a worker whose session exists,
    even while it is down; retiring it stops that. Stations send again what it held.
    """
    from server.ingest.workers import retire_worker, worker_client_id

    worker_client_id(worker_id)
    cfg = load_server_config(config)
    retire_worker(cfg.mqtt, cfg.base, worker_id)
    print(f"{worker_client_id(worker_id)}: session ended")
    return 0


def open_sealing(cfg):
    """The opener for personal fields sealed by stations (key made on first start)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from qrgate.keyfiles import load_or_create_key
    from qrgate.sealing import PersonOpener

    return PersonOpener(load_or_create_key(cfg.sealing_key_file, X25519PrivateKey))


def web_app(cfg, storage, bridge=None):
    """The web app as the configuration describes it (``bridge`` feeds /metrics)."""
    from server.accounts.sms import create_sender
    from server.ingest.enrol import enrolment_for
    from server.web.app import create_app

    enrolment = enrolment_for(cfg, storage)
    areas = load_areas(cfg)
    app = create_app(storage, cfg.web.timezone, auth=cfg.auth, sender=create_sender(cfg.auth.sms_sender),
                     areas=areas, public_url=cfg.web.public_url, public_feed=cfg.web.public_feed,
                     enrolment=enrolment, bridge=bridge, broker_files=enrolment.broker,
                     trusted_proxies=cfg.web.trusted_proxies, retention_days=cfg.retention.days)
    from server.reports.service import configure_mail

    configure_mail(app, cfg.mail)
    # Station releases (docs/updates.md): the signed repository `qrgate-release publish` copies here.
    from server.releases.service import attach as attach_releases

    attach_releases(app, cfg.data_dir / "releases", storage)
    from qrgate.updates import announce

    # A wave started or widened on the releases page tells every station to look now.
    app.state.release_announcer = lambda version: announce(version, cfg.mqtt, cfg.base)
    # Personal passes are signed with the key stations get at enrolment; a revocation is
    # pushed to the venue's stations at once (server/roster/passes.py).
    from qrgate.keyfiles import load_or_create_key
    from server.roster.passes import PassOffice
    from server.ingest.stationconfig import ConfigPublisher, StationConfigStore

    pass_key = load_or_create_key(cfg.pass_key_file)
    # Phones scanning as stations (docs/phone.md) seal and sign with the keys stations get.
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
    from server.phone.service import attach as attach_phones
    from server.storage import IngestWindow

    attach_phones(app, sealing_key=load_or_create_key(cfg.sealing_key_file, X25519PrivateKey), pass_key=pass_key,
                  ingest=IngestWindow.from_config(cfg.ingest))
    app.state.pass_office = PassOffice(storage, pass_key, ConfigPublisher(StationConfigStore(storage), pass_key,
                                                                          cfg.mqtt, cfg.base))
    return app


def uvicorn_config(app, host: str, port: int):
    """How the web UI is served: httptools' C parser for HTTP; the standard asyncio loop,
    not uvloop, which under 50 busy connections left one request in a hundred waiting
    over a second while the others were answered in 80 ms (docs/performance.md).

    uvicorn's own X-Forwarded-For handling is off: by default it believes the header from
    127.0.0.1 (or whatever FORWARDED_ALLOW_IPS says), the very address the server listens
    on, so anyone reaching the port could choose the address every per-address limit and
    audit entry goes by. The app believes it only from ``[web] trusted_proxies``
    (server.web.middleware.ForwardedClient)."""
    import uvicorn

    return uvicorn.Config(app, host=host, port=port, log_level="warning", http="httptools", loop="asyncio",
                          proxy_headers=False, forwarded_allow_ips="")


def web_socket(host: str, port: int) -> socket.socket:
    """The web UI's listening socket, with SO_REUSEPORT: further `qrgate-server run
    --no-bridge` processes on the same host and port share its connections (the kernel
    spreads them), so the web uses every core without a proxy (docs/scaling.md)."""
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                             flags=socket.AI_PASSIVE)[0]
    except OSError as exc:
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError as exc:
        sock.close()
        raise UserError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock


def serve_web(app, host: str, port: int, stop: threading.Event, bridge=None) -> None:
    import uvicorn

    sock = web_socket(host, port)
    server = uvicorn.Server(uvicorn_config(app, host, port))
    watcher = threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True)
    watcher.start()
    threading.Thread(target=notify_systemd, args=(server, bridge, stop), name="watchdog", daemon=True).start()
    logger.info("web UI on http://%s:%d/", host, port)
    server.run(sockets=[sock])


def notify_systemd(server, bridge, stop: threading.Event) -> None:
    """READY once the web UI listens; the watchdog fed only while the bridge's network
    loop (if this process has the bridge) and the web server both live (Type=notify,
    WatchdogSec in the unit)."""
    import os

    import sdnotify

    notifier = sdnotify.SystemdNotifier()
    while not server.started and not stop.wait(0.1):
        pass
    notifier.notify("READY=1\nSTATUS=serving")
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return
    while not stop.wait(int(usec) / 2_000_000):
        if (bridge is None or bridge.alive()) and server.started and not server.should_exit:
            status = "serving (records stored by bridge workers)" if bridge is None else f"stored {bridge.counters['stored']}"
            notifier.notify(f"WATCHDOG=1\nSTATUS={status}")
        else:
            logger.error("not feeding the watchdog: the bridge or the web server stopped")


def main(argv=None) -> int:
    import server.releases.cli  # noqa: F401  (registers the release commands on this app)

    return app.main(argv)
