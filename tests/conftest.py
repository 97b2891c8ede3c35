"""Shared fixtures: a real Mosquitto with the project's config, a server, stations."""

from __future__ import annotations

import contextlib
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from bench.reliability import ServerProcess  # `qrgate-server run` as a killable child (used by tests)
from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
from provisioning.station import enroll_local, server_public_keys, write_server_config
from server.config import ServerConfig, load_server_config
from server.storage import SqliteStorage

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared"
QR_PHOTOS = SHARED / "data" / "qr-photos"


def require_qr_photos() -> Path:
    """The third-party photographed sample sets, which live beside the repository, not in it.

    A developer's clone without them skips the tests that read them; CI (CI=true, run
    with ../shared beside the clone) must have them, so there a missing folder fails.
    """
    if QR_PHOTOS.is_dir() and any(QR_PHOTOS.iterdir()):
        return QR_PHOTOS
    unavailable(f"photographed QR sample sets not found at {QR_PHOTOS} (they sit beside the repository)")


def unavailable(message: str):
    """Something a test needs is not on this machine: a developer's machine skips the test
    with ``message``; CI (CI=true), where `scripts/test` installed everything, fails it."""
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


@contextlib.contextmanager
def serve_app(app, what: str = "web server start"):
    """An ASGI app served by uvicorn on a free local port in a thread; yields its base URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_until(lambda: server.started, 15, what)
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def wait_until(predicate: Callable[[], bool], timeout: float = 30.0, what: str = "condition") -> None:
    """Poll a condition with a deadline; fail the test with ``what`` if it never holds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.02)


@pytest.fixture
def broker(tmp_path) -> BrokerProcess:
    files = BrokerFiles.create(tmp_path / "broker", port=free_port())
    proc = BrokerProcess(files)
    proc.start()
    yield proc
    proc.stop()


@dataclass
class ServerEnv:
    config: ServerConfig
    storage: SqliteStorage
    venue_id: int
    pass_key_text: str
    sealing_key_text: str
    broker: BrokerProcess

    def add_station(self, station_id: str, directory: Path, **kwargs):
        setup = enroll_local(
            storage=self.storage, broker=self.broker.files, station_id=station_id, venue_id=self.venue_id,
            station_dir=directory, venue_name="Cổng Test", pass_keys=(self.pass_key_text,),
            server_key=self.sealing_key_text, **kwargs,
        )
        self.broker.reload()
        return setup


@pytest.fixture
def server_env(tmp_path, broker) -> ServerEnv:
    password = broker.files.add_user(SERVER_USER)
    broker.reload()
    cfg = load_server_config(
        write_server_config(tmp_path / "server" / "server.toml", broker=broker.files, password=password, web_port=free_port())
    )
    storage = SqliteStorage(cfg.database)
    venue = storage.add_venue("Nhà máy Test - Cổng 1", "factory gate")
    pass_key, sealing_key = server_public_keys(cfg)
    return ServerEnv(cfg, storage, venue, pass_key, sealing_key, broker)

