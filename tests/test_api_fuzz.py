"""The web API fuzzed from its own OpenAPI document (schemathesis): whatever a client
sends, as an anonymous visitor or as a logged-in venue owner, the server answers with a
status below 500: no crash, no internal error, no hang. Then every operation and every
page once more with the input a database cannot hold (text with a NUL, numbers past 64
bits) put into an otherwise valid request, as an operator who is also a health officer:
a refusal, never an error from SQL (PostgreSQL refuses NUL in text and integers past
BIGINT; SQLite integers past 64 bits)."""

from __future__ import annotations

import warnings

import pytest
import schemathesis
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note about httpx2; the client works the same
    from fastapi.testclient import TestClient

from fastapi.routing import APIRoute

from conftest import new_storage
from qrgate import protocol
from server.ingest.enrol import Enrolment, EnrolSettings
from server.accounts.sms import DevSmsSender
from server.phone.service import attach as attach_phones
from server.releases.service import attach as attach_releases
from server.web.app import create_app
from test_web_stations import RecordingBroker
from test_web_support import PLACE, FakeClock, Site, every_route

pytestmark = pytest.mark.timeout(300)
OPERATOR = "0976929792"
NUL_TEXT = "a\x00b"
PAST_64_BITS = (2**63, -(2**63) - 1, 2**70)
HOSTILE_TEXT = (NUL_TEXT, *map(str, PAST_64_BITS))  # text a server might turn into a number
STATION_KEY = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    storage = new_storage(tmp_path_factory.mktemp("api-fuzz") / "server.sqlite3")
    broker = RecordingBroker()
    enrolment = Enrolment(storage, broker, EnrolSettings("mqtt.example.vn", 8883, "CA", "SEAL", ("PASS",)))
    sender, clock = DevSmsSender(), FakeClock()
    site = Site(storage, sender, clock, create_app(storage, sender=sender, clock=clock, enrolment=enrolment,
                                                   broker_files=broker))
    # The whole API, phones' included: they get the server's keys as in server/cli.py.
    attach_phones(site.app, sealing_key=X25519PrivateKey.generate(), pass_key=Ed25519PrivateKey.generate())
    attach_releases(site.app, tmp_path_factory.mktemp("releases"), site.storage)  # nothing published: every wave refused
    visitor = site.visitor().login("0912486419")
    visitor.create_venue(name="Fuzz <b>venue</b>")
    return site, dict(visitor.http.cookies), visitor.csrf()


def operations(site):
    schema = schemathesis.openapi.from_asgi("/openapi.json", site.app)
    return [result.ok() for result in schema.get_all_operations()]


def test_no_generated_request_makes_the_server_fail(owner):
    site, cookies, csrf = owner
    ops = operations(site)
    assert len(ops) >= 15  # the whole API is in the document
    failures = []
    for op in ops:
        @settings(max_examples=20, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def check(case):
            for response in (case.call(), case.call(cookies=cookies, headers={"X-CSRF-Token": csrf})):
                if response.status_code >= 500:
                    failures.append((case.method, case.formatted_path, response.status_code, response.text[:200]))

        check()
    assert not failures, failures[:5]


# A request each operation accepts (or refuses only for what it means, not its form);
# one field at a time is then replaced by what no database column can hold.
VALID_BODIES = {
    "/api/releases/report": {"station_id": "gate-9", "n": 1, "update": {"state": "idle"}, "sig": "AAAA"},
    "/api/phone/venues/{venue_id}/enrol": {"code": "0" * 48, "public_key": STATION_KEY, "mode": "toggle"},
    "/api/exports": {"venues": [1], "start": "2026-09-08", "end": "2026-09-21", "format": "csv"},
    "/api/enrol": {"v": 1, "token": "0" * 32, "public_key": STATION_KEY, "name": "gate-9"},
    "/api/rotate-key": {"v": 1, "station_id": "gate-9", "new_public_key": STATION_KEY, "from_seq": 1,
                        "ts_ms": 1_790_000_000_000, "sig": "AAAA"},
    "/api/login/code": {"phone": OPERATOR},
    "/api/login": {"phone": OPERATOR, "code": "123456"},
    "/api/venues": PLACE,
    "/api/venues/{venue_id}": PLACE,
    "/api/venues/{venue_id}/invitations": {"phones": "0969201470", "role": "controller"},
    "/api/invitations/{invitation_id}/accept": {"code": "123456"},
    "/api/self-checkin/{token}": {"id_number": "001090000123", "name": "Lê Văn An", "birth_year": "1990",
                                  "direction": "in"},
    "/api/venues/{venue_id}/enrol-code": {"minutes": 5},
    "/api/trace": {"kind": "cccd", "id_number": "001090000123", "from": "2026-09-08", "to": "2026-09-21"},
    "/api/venues/{venue_id}/exports": {"start": "2026-09-08", "end": "2026-09-21", "format": "csv"},
    "/api/venues/{venue_id}/passes": {"person_ids": [1], "days": 30},
    "/api/venues/{venue_id}/passes/{pid}/revoke": {"reason": "lost", "reissue_days": 0},
}
TRACE_FORM = {"checkin": "", "kind": "cccd", "id_number": "001090000123", "name": "", "birth": "",
              "from": "2026-09-08", "to": "2026-09-21", "margin": "15", "stay": "60"}
# The same for the pages' forms (not in the API document).
VALID_FORMS = {
    "/login": {"phone": OPERATOR, "next": "/venues"},
    "/login/code": {"phone": OPERATOR, "code": "123456", "next": "/venues"},
    "/logout": {},
    "/account/logout-all": {},
    "/exports": {"venue": "1", "start": "2026-09-08", "end": "2026-09-21", "format": "csv"},
    "/venues/{venue_id}/reports/addresses": {"email": "baocao@example.vn", "lang": "vi"},
    "/venues/{venue_id}/reports/addresses/remove": {"email": "baocao@example.vn"},
    "/reports/email": {"email": "baocao@example.vn", "lang": "vi"},
    "/venues/{venue_id}/passes/push": {},
    "/venues/new": {**PLACE, "parent_id": ""},
    "/venues/{venue_id}/edit": {**PLACE, "parent_id": ""},
    "/venues/{venue_id}/close": {},
    "/venues/{venue_id}/reopen": {},
    "/venues/{venue_id}/share": {"phones": "0969201470", "role": "controller"},
    "/venues/{venue_id}/members/{account_id}/revoke": {},
    "/venues/{venue_id}/invitations/{invitation_id}/cancel": {},
    "/invitations/{invitation_id}": {"code": "123456"},
    "/c/{token}": {"id_number": "001090000123", "name": "Lê Văn An", "birth_year": "1990", "direction": "in"},
    "/venues/{venue_id}/enrol-code": {},
    "/fleet/{station_id}/retire": {},
    "/fleet/{station_id}/reassign": {"venue_id": "1"},
    "/fleet/{station_id}/group": {"group": "pilot"},
    "/fleet/releases/{version}/wave": {"percent": "10", "groups": "pilot", "stop_at": "10"},
    "/fleet/releases/{version}/stop": {},
    "/fleet/releases/{version}/resume": {},
    "/venues/{venue_id}/export": {"start": "2026-09-08", "end": "2026-09-21", "format": "csv"},
    "/trace": TRACE_FORM,
    "/trace.csv": TRACE_FORM,
    "/venues/{venue_id}/roster": None,  # a file upload: sent with NULs in its cells
    "/venues/{venue_id}/passes": {"person": "1", "days": "30"},
    "/venues/{venue_id}/passes/{pid}/revoke": {"reason": "lost", "reissue": ""},
}
ROSTER_WITH_NUL = f"ma_nv,ho_ten,so_dien_thoai\nNV{NUL_TEXT},Lê {NUL_TEXT},0912{NUL_TEXT}\n".encode()


def _type(schema: dict) -> str | None:
    """The JSON type a parameter or property takes (the first one besides null)."""
    if "type" in schema:
        return schema["type"]
    return next((s.get("type") for s in schema.get("anyOf", ()) if s.get("type") != "null"), None)


def _hostile(schema: dict) -> list:
    kind = _type(schema)
    if kind == "integer":
        return list(PAST_64_BITS)
    if kind == "string":
        return list(HOSTILE_TEXT)
    if kind == "array" and _type(schema.get("items", {})) == "integer":
        return [[n] for n in PAST_64_BITS]
    return []


def _parameter_names(route: APIRoute, kind: str) -> set[str]:
    """The names of a route's ``kind`` parameters (path_params, query_params), its
    dependencies' included."""
    names, todo = set(), [route.dependant]
    while todo:
        dependant = todo.pop()
        names |= {p.alias for p in getattr(dependant, kind)}
        todo.extend(dependant.dependencies)
    return names


def test_text_with_nul_and_numbers_past_64_bits_are_refused_in_every_operation(owner):
    site, _, _ = owner
    site.services.accounts.set_operator(OPERATOR)
    site.services.officers.grant(site.services.accounts, OPERATOR, "79")
    # A client that shows an internal error as a 500 answer instead of raising it here.
    http = TestClient(site.app, base_url="http://testserver", client=("203.0.113.9", 50000),
                      follow_redirects=False, raise_server_exceptions=False)
    operator = site.visitor("203.0.113.9").login(OPERATOR)
    http.cookies = operator.http.cookies
    venue = operator.create_venue(name="Hostile input")
    site.storage.add_station("gate-9", STATION_KEY, venue)  # the station a key rotation names
    good_path = {"venue_id": venue, "token": site.services.venues.ensure_public_token(venue), "pid": "23456789"}
    document = site.app.openapi()
    schemas = document["components"]["schemas"]
    sent, failures = 0, []

    def send(method: str, template: str, path_values: dict, params: dict | None = None, body=None, files=None,
             form: dict | None = None):
        nonlocal sent
        path = template
        for name, value in path_values.items():
            path = path.replace("{" + name + "}", str(value).replace("\x00", "%00"))
        csrf = operator.csrf()
        response = http.request(method, path, params=params, json=body, files=files,
                                data=None if form is None else {**form, "csrf": csrf}, headers={"X-CSRF-Token": csrf})
        sent += 1
        if response.status_code >= 500:
            failures.append((method, template, path_values, params, body, form, response.status_code))

    for template, item in document["paths"].items():
        for method, op in item.items():
            method = method.upper()
            params = op.get("parameters", [])
            path_values = {p["name"]: good_path.get(p["name"], 1 if _type(p["schema"]) == "integer" else "x")
                           for p in params if p["in"] == "path"}
            content = op.get("requestBody", {}).get("content", {})
            body = None
            if "application/json" in content:
                assert template in VALID_BODIES, f"add a valid body for {method} {template} to VALID_BODIES"
                body = VALID_BODIES[template]
            for p in params:
                for bad in _hostile(p["schema"]):
                    if p["in"] == "path":
                        send(method, template, {**path_values, p["name"]: bad}, body=body)
                    elif p["in"] == "query":
                        send(method, template, path_values, params={p["name"]: bad}, body=body)
            if "multipart/form-data" in content:
                send(method, template, path_values, files={"file": ("r.csv", ROSTER_WITH_NUL, "text/csv")})
            if body is None:
                continue
            ref = content["application/json"]["schema"].get("$ref", "")
            properties = schemas[ref.rsplit("/", 1)[-1]]["properties"] if ref else {
                k: {"type": "integer" if isinstance(v, int) else "string"} for k, v in body.items()}
            for name, schema in properties.items():
                for bad in _hostile(schema):
                    send(method, template, path_values, body={**body, name: bad})
    # The pages: every value they read from the path, the query or a form, as text.
    for route in every_route(site.app):
        if not isinstance(route, APIRoute) or route.include_in_schema:
            continue
        method = "POST" if "POST" in route.methods else "GET"
        form = VALID_FORMS.get(route.path) if method == "POST" else None
        assert method == "GET" or route.path in VALID_FORMS, f"add a valid form for {route.path} to VALID_FORMS"
        path_values = {name: good_path.get(name, 1) for name in _parameter_names(route, "path_params")}
        if route.path in ("/logout", "/account/logout-all"):
            continue  # nothing to read; it would end the session the rest uses
        for name in path_values:
            for bad in HOSTILE_TEXT:
                send(method, route.path, {**path_values, name: bad}, form=form)
        for name in _parameter_names(route, "query_params"):
            for bad in HOSTILE_TEXT:
                send(method, route.path, path_values, params={name: bad}, form=form)
        if method == "POST" and form is None:
            send(method, route.path, path_values, files={"file": ("r.csv", ROSTER_WITH_NUL, "text/csv")},
                 form={})
        for name in form or {}:
            for bad in HOSTILE_TEXT:
                send(method, route.path, path_values, form={**form, name: bad})
    assert sent > 400
    assert not failures, "\n".join(map(repr, failures))
