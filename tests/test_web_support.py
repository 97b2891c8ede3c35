"""Helpers shared by the server web tests: a site on a temporary database (a SQLite file,
or PostgreSQL on that pass) with a fake clock and the development SMS sender, and a
visitor that logs in by reading its SMS.

No tests here; the module is named for the tests that use it.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2; the client works the same
    from fastapi.testclient import TestClient

from conftest import new_storage
from server.accounts.sms import DevSmsSender
from server.web.app import create_app

CODE_IN_SMS = re.compile(r"(\d{6})\. Mã hết hạn")
CSRF_IN_PAGE = re.compile(r'name="csrf" value="([^"]+)"')
PLACE = {"kind": "market", "name": "TP-Chợ Bến Thành", "address": "Số 1 Lê Lợi", "province": "79",
         "district": "760", "ward": "26743"}


class FakeClock:
    """Seconds since the epoch that move only when a test says so."""

    def __init__(self, now: float = 1_790_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def stored_text(storage) -> str:
    """Every row of every table in the server's database as text, to look for what must
    never be stored."""
    db = storage.sql
    if db.dialect == "sqlite":
        tables = [r[0] for r in db.rows("SELECT name FROM sqlite_master WHERE type = 'table'")]
    else:
        tables = [r[0] for r in db.rows("SELECT tablename FROM pg_tables WHERE schemaname = current_schema()")]
    assert "sessions" in tables and "otp_codes" in tables
    return "\n".join(f"{table}: {row!r}" for table in tables for row in db.rows(f'SELECT * FROM "{table}"'))


def every_route(app) -> list:
    """Every route of ``app``, those of the routers it includes too (FastAPI keeps an
    included router as one entry of ``app.routes``)."""
    routes, todo = [], list(app.routes)
    while todo:
        route = todo.pop(0)
        included = getattr(route, "original_router", None)
        if included is None:
            routes.append(route)
            continue
        assert not route.include_context.prefix, "the server includes its routers without a prefix"
        todo.extend(included.routes)
    return routes


@dataclass
class Site:
    storage: object  # SqliteStorage, or PostgresStorage on the PostgreSQL pass
    sender: DevSmsSender
    clock: FakeClock
    app: object

    @classmethod
    def create(cls, tmp_path, **kwargs) -> "Site":
        storage = new_storage(tmp_path / "server.sqlite3")
        sender = DevSmsSender()
        clock = FakeClock()
        return cls(storage, sender, clock, create_app(storage, sender=sender, clock=clock, **kwargs))

    @property
    def services(self):
        return self.app.state.services

    def last_code(self, phone: str) -> str:
        text = self.sender.last_text_to(phone)
        assert text, f"no SMS was sent to {phone}"
        return CODE_IN_SMS.search(text).group(1)

    def visitor(self, ip: str = "203.0.113.7", https: bool = False) -> "Visitor":
        base = "https://testserver" if https else "http://testserver"
        return Visitor(self, TestClient(self.app, base_url=base, client=(ip, 50000), follow_redirects=False))


@dataclass
class Visitor:
    site: Site
    http: TestClient

    def csrf(self) -> str:
        return self.http.get("/api/session").json()["csrf_token"]

    def form(self, path: str, data: dict, csrf: bool = True):
        return self.http.post(path, data={**data, **({"csrf": self.csrf()} if csrf else {})})

    def api(self, method: str, path: str, json=None, csrf: bool = True):
        headers = {"X-CSRF-Token": self.csrf()} if csrf else {}
        return self.http.request(method, path, json=json, headers=headers)

    def login(self, phone: str) -> "Visitor":
        assert self.api("POST", "/api/login/code", {"phone": phone}).status_code == 200
        response = self.api("POST", "/api/login", {"phone": phone, "code": self.site.last_code(_national(phone))})
        assert response.status_code == 200, response.text
        return self

    def create_venue(self, **fields) -> int:
        response = self.api("POST", "/api/venues", {**PLACE, **fields})
        assert response.status_code == 201, response.text
        return response.json()["id"]


def _national(phone: str) -> str:
    from server.accounts.accounts import normalise_phone

    return normalise_phone(phone)
