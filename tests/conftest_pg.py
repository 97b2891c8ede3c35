"""PostgreSQL for the tests: a fresh database per test on the machine's server, dropped after.

The server is found at $QRGATE_TEST_PG (a libpq connection string or URL to a database
the test role may connect to, with the right to create databases), else through the
local socket as this user (what scripts/bootstrap.sh sets up), else as ``postgres`` on
127.0.0.1:5432. Nothing is installed here: scripts/test's bootstrap installs and starts
PostgreSQL. Without a server the PostgreSQL tests are skipped on a developer's machine
and fail in CI (CI=true), like the sample-set tests.
"""

from __future__ import annotations

import os
import urllib.parse
import uuid

import psycopg
import pytest
from psycopg import sql

from conftest import unavailable

CANDIDATES = ("dbname=postgres", "postgresql://postgres@127.0.0.1:5432/postgres")


def admin_dsn() -> str:
    """The first server DSN that answers; skip (fail in CI) when none does."""
    wanted = os.environ.get("QRGATE_TEST_PG")
    errors = []
    for dsn in (wanted,) if wanted else CANDIDATES:
        try:
            with psycopg.connect(dsn, connect_timeout=3):
                return dsn
        except psycopg.OperationalError as exc:
            errors.append(f"{dsn}: {str(exc).strip().splitlines()[-1]}")
    unavailable("no PostgreSQL server for the tests (scripts/test installs and starts one): " + "; ".join(errors))


def database_dsn(admin: str, name: str) -> str:
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    return psycopg.conninfo.make_conninfo(**info)


@pytest.fixture
def pg_dsn():
    """A new, empty database for this test; dropped afterwards even if connections remain."""
    admin = admin_dsn()
    name = f"qrgate_test_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    try:
        yield database_dsn(admin, name)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


# Databases made for keys (test paths) by database_for, dropped by drop_made.
_made: dict[str, str] = {}


def database_url_of(dsn: str) -> str:
    """A libpq connection string as the postgresql:// URL server.toml takes."""
    info = psycopg.conninfo.conninfo_to_dict(dsn)
    user = urllib.parse.quote(info.get("user", ""), safe="")
    host = info.get("host", "")
    netloc = f"{user}@" if user else ""
    if host and not host.startswith("/"):
        netloc += host + (f":{info['port']}" if info.get("port") else "")
    query = {k: v for k, v in (("host", host if host.startswith("/") else ""), ("port", info.get("port", "")))
             if v and not (k == "port" and host and not host.startswith("/"))}
    url = f"postgresql://{netloc}/{urllib.parse.quote(info['dbname'], safe='')}"
    return url + ("?" + urllib.parse.urlencode(query) if query else "")


def database_for(key: str) -> str:
    """The URL of a fresh database belonging to ``key`` (made on first use)."""
    if key not in _made:
        admin = admin_dsn()
        name = f"qrgate_test_{uuid.uuid4().hex[:12]}"
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        _made[key] = database_url_of(database_dsn(admin, name))
    return _made[key]


def made_count() -> int:
    return len(_made)


def drop_made(keep: int = 0) -> None:
    """Drop the databases database_for made, but for the first ``keep`` (connections
    still open to them are ended)."""
    doomed = list(_made)[keep:]
    if not doomed:
        return
    admin = admin_dsn()
    with psycopg.connect(admin, autocommit=True) as conn:
        for key in doomed:
            name = psycopg.conninfo.conninfo_to_dict(_made.pop(key))["dbname"]
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))
