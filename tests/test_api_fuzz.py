"""The web API fuzzed from its own OpenAPI document (schemathesis): whatever a client
sends, as an anonymous visitor or as a logged-in venue owner, the server answers with a
status below 500: no crash, no internal error, no hang."""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings

from server.enrol import Enrolment, EnrolSettings
from server.sms import DevSmsSender
from server.storage import SqliteStorage
from server.web import create_app
from test_web_stations import RecordingBroker
from test_web_support import FakeClock, Site

pytestmark = pytest.mark.timeout(300)


@pytest.fixture(scope="module")
def owner(tmp_path_factory):
    storage = SqliteStorage(tmp_path_factory.mktemp("api-fuzz") / "server.sqlite3")
    broker = RecordingBroker()
    enrolment = Enrolment(storage, broker, EnrolSettings("mqtt.example.vn", 8883, "CA", "SEAL", ("PASS",)))
    sender, clock = DevSmsSender(), FakeClock()
    site = Site(storage, sender, clock, create_app(storage, sender=sender, clock=clock, enrolment=enrolment,
                                                   broker_files=broker))
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
