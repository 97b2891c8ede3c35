"""qrgate-server: the server that stores check-ins from stations and serves the web UI.

Typical use: `qrgate-server run --config server.toml`. Stations are registered with
`qrgate-provision station` (or `qrgate-server station-add` with a public key).
"""

from __future__ import annotations

import json
import logging
import signal
import threading

from qrgate.cli import App, arg
from qrgate.errors import UserError
from server.config import load_server_config, resolve

logger = logging.getLogger(__name__)
app = App("qrgate-server", __doc__)

CONFIG = arg("--config", "-c", required=True, help="path to server.toml")


def open_storage(config_path: str):
    from server.storage import SqliteStorage

    config = load_server_config(config_path)
    return config, SqliteStorage(config.database)


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
    from server.accounts import Accounts
    from server.sms import create_sender

    cfg, storage = open_storage(config)
    account = Accounts(storage, create_sender(cfg.auth.sms_sender)).set_operator(phone)
    print(account.phone)
    return 0


def _officer_change(config: str, phone: str, area: str, grant: bool) -> int:
    from server.accounts import Accounts
    from server.areas import AreaDirectory
    from server.audit import AuditLog
    from server.officers import Officers
    from server.sms import create_sender

    cfg, storage = open_storage(config)
    accounts = Accounts(storage, create_sender(cfg.auth.sms_sender))
    officers = Officers(storage, AreaDirectory.load(resolve(cfg.base, cfg.web.areas_file)) if cfg.web.areas_file
                        else AreaDirectory.load())
    audit = AuditLog(storage)
    if grant:
        granted = officers.grant(accounts, phone, area, audit)
        print(f"{accounts.account_for_phone(phone).phone} is a health officer for {granted.name} ({granted.level})")
    elif not officers.revoke(accounts, phone, area, audit):
        raise UserError(f"{phone} was not a health officer for area {area}")
    return 0


@app.command("officer-add", CONFIG, arg("--phone", required=True),
             arg("--area", required=True, help="province, district or ward code from the areas file"))
def officer_add(config: str, phone: str, area: str) -> int:
    """Make the account of this phone number a health officer for an area: it sees
    check-ins of the area's venues in full (audited), traces contacts and reads dashboards."""
    return _officer_change(config, phone, area, True)


@app.command("officer-remove", CONFIG, arg("--phone", required=True), arg("--area", required=True))
def officer_remove(config: str, phone: str, area: str) -> int:
    """Withdraw a health officer's role for an area."""
    return _officer_change(config, phone, area, False)


@app.command("login-link", CONFIG, arg("--phone", required=True),
             arg("--base-url", default="", help="the server's address (default: [web] public_url, else host:port)"))
def login_link(config: str, phone: str, base_url: str) -> int:
    """Print a single-use link (15 minutes) that logs this phone number in: an operator's
    first login, before any SMS gateway is set up."""
    from server.accounts import Accounts
    from server.sms import create_sender

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
    from server.tracing import Tracer

    if not 0 <= margin_min <= 24 * 60 or not 1 <= stay_min <= 24 * 60:
        raise UserError("--margin-min must be 0-1440 and --stay-min 1-1440")
    start_ms, end_ms = _day_ms(start, "--from"), _day_ms(end, "--to") + 86_400_000
    if end_ms <= start_ms:
        raise UserError("--to must not be before --from")
    _, storage = open_storage(config)
    result = Tracer(storage).trace(person, start_ms, end_ms, margin_s=margin_min * 60, default_stay_s=stay_min * 60)
    AuditLog(storage).record("qrgate.trace.run", ip="cli", person=person, contacts=len(result["contacts"]))
    print(json.dumps(result, ensure_ascii=False))
    return 0


@app.command("retention", CONFIG, arg("--days", type=int, required=True, help="keep this many days"))
def retention(config: str, days: int) -> int:
    """Delete check-ins older than --days days (run it daily, e.g. from a systemd timer)."""
    from server.audit import AuditLog
    from server.tracing import delete_older_than

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


@app.command("run", CONFIG)
def run(config: str) -> int:
    """Run the MQTT bridge and the web UI until SIGTERM or Ctrl-C."""
    cfg, storage = open_storage(config)
    from server.bridge import Bridge

    bridge = Bridge(storage, cfg.mqtt, cfg.base, opener=open_sealing(cfg))
    # Build the web app (which creates its tables) before the bridge starts writing:
    # a schema change racing the bridge's first commits would be refused by SQLite.
    app = web_app(cfg, storage, bridge) if cfg.web.enabled else None
    bridge.start()
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    try:
        if app is not None:
            serve_web(app, cfg.web.host, cfg.web.port, stop, bridge)
        else:
            stop.wait()
    finally:
        bridge.close()
    return 0


def open_sealing(cfg):
    """The opener for personal fields sealed by stations (key made on first start)."""
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from qrgate.keyfiles import load_or_create_key
    from qrgate.sealing import PersonOpener

    return PersonOpener(load_or_create_key(cfg.sealing_key_file, X25519PrivateKey))


def web_app(cfg, storage, bridge=None):
    """The web app as the configuration describes it (``bridge`` feeds /metrics)."""
    from server.areas import AreaDirectory
    from server.sms import create_sender
    from server.enrol import enrolment_for
    from server.web import create_app

    enrolment = enrolment_for(cfg, storage)
    areas = AreaDirectory.load(resolve(cfg.base, cfg.web.areas_file)) if cfg.web.areas_file else None
    return create_app(storage, cfg.web.timezone, auth=cfg.auth, sender=create_sender(cfg.auth.sms_sender),
                      areas=areas, public_url=cfg.web.public_url, public_feed=cfg.web.public_feed,
                      enrolment=enrolment, bridge=bridge, broker_files=enrolment.broker)


def serve_web(app, host: str, port: int, stop: threading.Event, bridge=None) -> None:
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning"))
    watcher = threading.Thread(target=lambda: (stop.wait(), setattr(server, "should_exit", True)), daemon=True)
    watcher.start()
    if bridge is not None:
        threading.Thread(target=notify_systemd, args=(server, bridge, stop), name="watchdog", daemon=True).start()
    logger.info("web UI on http://%s:%d/", host, port)
    server.run()


def notify_systemd(server, bridge, stop: threading.Event) -> None:
    """READY once the web UI listens; the watchdog fed only while the bridge's network
    loop and the web server both live (Type=notify, WatchdogSec in the unit)."""
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
        if bridge.alive() and server.started and not server.should_exit:
            notifier.notify(f"WATCHDOG=1\nSTATUS=stored {bridge.counters['stored']}")
        else:
            logger.error("not feeding the watchdog: the bridge or the web server stopped")


def main(argv=None) -> int:
    return app.main(argv)
