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

# The server's tests run on SQLite files, or, with QRGATE_TEST_DATABASE=postgresql (the
# second pass of scripts/test), each on a fresh PostgreSQL database dropped afterwards.
DATABASE = os.environ.get("QRGATE_TEST_DATABASE", "sqlite")
if DATABASE not in ("sqlite", "postgresql"):
    raise RuntimeError(f"QRGATE_TEST_DATABASE must be sqlite or postgresql, not {DATABASE!r}")
ON_POSTGRESQL = DATABASE == "postgresql"
_opened_storages: list = []

# Tests that never touch a server database: the PostgreSQL pass does not run them again.
collect_ignore = [
    "test_boot_rig.py", "test_decoder.py", "test_deploy.py", "test_display.py", "test_feedback.py", "test_outbox.py",
    "test_payloads.py", "test_policy.py", "test_powercut.py", "test_protocol.py", "test_scanners.py",
    "test_service.py", "test_sources.py",
] if ON_POSTGRESQL else []

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
    """An ASGI app served by uvicorn on a free local port in a thread, as the server
    serves it (server.cli.uvicorn_config); yields its base URL."""
    import uvicorn

    from server.cli import uvicorn_config

    port = free_port()
    server = uvicorn.Server(uvicorn_config(app, "127.0.0.1", port))
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


def database_url(key: Path | str) -> str:
    """For a server.toml's ``[server] database``: "" (the SQLite file under its data
    directory), or on the PostgreSQL pass the URL of this test's database for ``key``."""
    if not ON_POSTGRESQL:
        return ""
    from conftest_pg import database_for

    return database_for(str(key))


def new_storage(path: Path | str):
    """The server storage of a test: the SQLite file at ``path``, or on the PostgreSQL
    pass the database belonging to ``path`` (the same one each time it is asked for)."""
    if not ON_POSTGRESQL:
        return SqliteStorage(path)
    from server.storage.postgres import PostgresStorage

    storage = PostgresStorage(database_url(path), data_dir=Path(path).parent)
    _opened_storages.append(storage)
    return storage


def storage_for(config: ServerConfig):
    """The storage a server.toml names, opened as ``qrgate-server`` opens it (closed
    after the test on the PostgreSQL pass)."""
    from server.storage.postgres import open_configured

    storage = open_configured(config)
    if config.server.database:
        _opened_storages.append(storage)
    return storage


def _close_and_drop(storages_before: int, databases_before: int) -> None:
    from conftest_pg import drop_made

    while len(_opened_storages) > storages_before:
        _opened_storages.pop().close()
    drop_made(databases_before)


@pytest.fixture(autouse=True, scope="session")
def _drop_postgresql_databases_at_end():
    """On the PostgreSQL pass: what module-scoped fixtures opened goes at the end."""
    yield
    if ON_POSTGRESQL:
        _close_and_drop(0, 0)


@pytest.fixture(autouse=True)
def _close_postgresql_databases():
    """On the PostgreSQL pass: close what the test opened and drop its databases (what
    wider-scoped fixtures opened before the test stays for the next tests)."""
    if not ON_POSTGRESQL:
        yield
        return
    from conftest_pg import made_count

    before = len(_opened_storages), made_count()
    yield
    _close_and_drop(*before)


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
    storage: SqliteStorage  # or PostgresStorage on the PostgreSQL pass
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
        write_server_config(tmp_path / "server" / "server.toml", broker=broker.files, password=password,
                            web_port=free_port(), database=database_url(tmp_path / "server"))
    )
    storage = storage_for(cfg)
    venue = storage.add_venue("Nhà máy Test - Cổng 1", "factory gate")
    pass_key, sealing_key = server_public_keys(cfg)
    return ServerEnv(cfg, storage, venue, pass_key, sealing_key, broker)

