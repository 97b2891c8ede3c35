"""Bridge worker processes: several bridges sharing the stations' records on one broker.

``qrgate-server bridge --worker-id N`` runs one bridge and nothing else, beside the web
process (``qrgate-server run --no-bridge``). Every worker joins the server's shared
subscription group (``$share/qrgate-bridge-<hash>/...``, server/ingest/bridge.py), so the broker
hands each batch to one of them.

The broker session of a worker is named by its id (client id ``qrgate-bridge-N``, which
no station can log in under: every station's account is bound to its own id,
provisioning/broker.py) and outlives the process: Mosquitto keeps handing a share of the
batches to a member whose session still exists, even while it is down, and keeps them
for it. So a worker that is restarted takes its queue back, and a worker removed for
good must be retired (``qrgate-server bridge-retire --worker-id N``): that ends its
session, and stations send again whatever it held (they forget a record only on the
server's ack).

Worker 1 also keeps the fleet's status (heartbeats, last wills); the others only records.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from qrgate.config import MqttSettings
from qrgate.errors import UserError
from qrgate.mqtt import make_client

logger = logging.getLogger(__name__)

MAX_WORKERS = 64
STATUS_WORKER = 1  # the worker that records station status for the fleet


def worker_client_id(worker_id: int) -> str:
    if not 1 <= worker_id <= MAX_WORKERS:
        raise UserError(f"--worker-id must be 1-{MAX_WORKERS}, got {worker_id}")
    return f"qrgate-bridge-{worker_id}"


def make_worker(storage, settings: MqttSettings, base: Path, worker_id: int, *, opener=None,
                check_threads: int | None = None, ingest=None):
    """A Bridge set up as worker ``worker_id`` of the server's group (not started);
    ``ingest`` is the window of record times it stores (None: [ingest]'s defaults)."""
    from server.ingest.bridge import Bridge

    return Bridge(storage, settings, base, client_id=worker_client_id(worker_id), opener=opener,
                  follow_status=worker_id == STATUS_WORKER, check_threads=check_threads, ingest=ingest)


def run_worker(bridge, stop: threading.Event, *, metrics_port: int | None = None, storage=None) -> None:
    """Run a started worker until ``stop`` is set: systemd READY once the broker confirmed
    its subscriptions, the watchdog fed while paho's network loop lives, /metrics on
    ``metrics_port`` if given."""
    if metrics_port:
        from prometheus_client import CollectorRegistry, start_http_server

        from server.ingest.metrics import ServerCollector

        registry = CollectorRegistry()
        registry.register(ServerCollector(storage, bridge))
        start_http_server(metrics_port, addr="127.0.0.1", registry=registry)
        logger.info("worker metrics on http://127.0.0.1:%d/metrics", metrics_port)
    threading.Thread(target=_notify_systemd, args=(bridge, stop), name="watchdog", daemon=True).start()
    stop.wait()


def _notify_systemd(bridge, stop: threading.Event) -> None:
    import sdnotify

    notifier = sdnotify.SystemdNotifier()
    while not bridge.wait_subscribed(0.5):
        if stop.is_set():
            return
    notifier.notify(f"READY=1\nSTATUS=subscribed as {bridge.client_id}")
    usec = os.environ.get("WATCHDOG_USEC")
    if not usec:
        return
    while not stop.wait(int(usec) / 2_000_000):
        if bridge.alive():
            notifier.notify(f"WATCHDOG=1\nSTATUS=stored {bridge.counters['stored']}")
        else:
            logger.error("not feeding the watchdog: the bridge's network loop stopped")


def retire_worker(settings: MqttSettings, base: Path, worker_id: int, timeout: float = 15.0) -> None:
    """End worker ``worker_id``'s broker session for good (the worker must be stopped).

    Connects once under its client id with a clean start and no session expiry, so the
    broker drops its subscription and whatever it held for it; the stations send those
    records again since nobody acked them.
    """
    client, props = make_client(worker_client_id(worker_id), settings, base, persistent=False)
    done = threading.Event()
    outcome: list = []

    def on_connect(c, userdata, flags, reason_code, properties):
        outcome.append(reason_code)
        done.set()

    client.on_connect = on_connect
    try:
        client.connect(settings.host, settings.port, keepalive=settings.keepalive, clean_start=True, properties=props)
    except OSError as exc:
        raise UserError(f"cannot reach the broker at {settings.host}:{settings.port}: {exc}") from None
    client.loop_start()
    try:
        if not done.wait(timeout):
            raise UserError(f"the broker at {settings.host}:{settings.port} did not answer within {timeout:.0f}s")
        if outcome[0].is_failure:
            raise UserError(f"the broker refused {worker_client_id(worker_id)}: {outcome[0]}")
    finally:
        client.disconnect()
        client.loop_stop()
