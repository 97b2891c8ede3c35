"""The server's side of fleet updates: the release files served by name only, a station's
signed update report kept for the fleet page and answered with what the server saw, and
publishing a repository into the server's data folder (SQLite or PostgreSQL)."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from fastapi.testclient import TestClient

from conftest import new_storage
from provisioning.release_publish import publish, served_folder
from provisioning.release_repo import ReleaseRepository
from qrgate import protocol
from qrgate.updates import sign_report
from server.ingest.fleet import Fleet
from server.releases import routes as release_routes
from server.releases.service import attach
from server.web.app import create_app

pytestmark = pytest.mark.timeout(120)


@pytest.fixture
def site(tmp_path):
    storage = new_storage(tmp_path / "data" / "qrgate.sqlite3")
    venue = storage.add_venue("Nhà máy A - Cổng 1")
    key = Ed25519PrivateKey.generate()
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    repo = ReleaseRepository(tmp_path / "repo")
    repo.init(tmp_path / "keys", tmp_path / "offline")
    (tmp_path / "data").mkdir(exist_ok=True)
    (tmp_path / "keys" / "timestamp.pem").rename(tmp_path / "data" / "release-timestamp.pem")
    publish(repo.folder, tmp_path / "data")
    app = create_app(storage)
    # What create_app does once the lead wires it in (see the report): the router and the service.
    app.include_router(release_routes.router)
    attach(app, served_folder(tmp_path / "data"), storage)
    return app, storage, key, tmp_path


def test_the_signed_metadata_is_served_and_nothing_else(site):
    app, _, _, tmp_path = site
    client = TestClient(app)
    root = client.get("/releases/metadata/1.root.json")
    assert root.status_code == 200 and json.loads(root.content)["signed"]["_type"] == "root"
    stamp = client.get("/releases/metadata/timestamp.json")
    assert stamp.status_code == 200 and stamp.headers["cache-control"] == "no-cache"
    (tmp_path / "data" / "secret.txt").write_text("no")
    for path in ("/releases/metadata/..%2Fsecret.txt", "/releases/metadata/secret.txt",
                 "/releases/targets/1.root.json", "/releases/other/1.root.json",
                 "/releases/metadata/2.root.json"):
        assert client.get(path).status_code == 404, path


def test_a_station_report_is_kept_for_the_fleet_page_and_answered_with_what_the_server_saw(site):
    app, storage, key, _ = site
    client = TestClient(app)
    Fleet(storage).record_status("gate-1", protocol.canonical_json({"online": True, "fw": "0.2.0", "backlog": 0}))
    update = {"state": "rolled_back", "version": "0.3.0", "running": "0.2.0", "good": "0.2.0", "cause": "not_ready",
              "refusal": "", "reason": "not READY within 60 s (the unit is activating/auto-restart)"}
    answer = client.post("/api/releases/report", json=sign_report(key, {"v": 1, "station_id": "gate-1", "n": 4,
                                                                         "update": update}))
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["stored"] and body["fw"] == "0.2.0" and body["last_seen_ms"] and body["checkins"] == 0
    shown = app.state.releases.station_updates()["gate-1"]
    assert shown["state"] == "rolled_back" and shown["version"] == "0.3.0" and "not READY" in shown["reason"]
    assert shown["cause"] == "not_ready" and shown["running"] == "0.2.0"
    # The same count again (a replay) is answered but changes nothing.
    stale = {**update, "state": "kept"}
    again = client.post("/api/releases/report", json=sign_report(key, {"v": 1, "station_id": "gate-1", "n": 4,
                                                                        "update": stale}))
    assert again.json()["stored"] is False
    assert app.state.releases.station_updates()["gate-1"]["state"] == "rolled_back"


def test_a_report_not_signed_by_the_station_or_from_a_retired_one_is_refused(site):
    app, storage, key, _ = site
    client = TestClient(app)
    update = {"state": "kept", "version": "0.2.0"}
    forged = sign_report(Ed25519PrivateKey.generate(), {"v": 1, "station_id": "gate-1", "n": 1, "update": update})
    assert client.post("/api/releases/report", json=forged).status_code == 403
    unknown = sign_report(key, {"v": 1, "station_id": "gate-9", "n": 1, "update": update})
    assert client.post("/api/releases/report", json=unknown).status_code == 403
    Fleet(storage).retire("gate-1")
    retired = sign_report(key, {"v": 1, "station_id": "gate-1", "n": 1, "update": update})
    assert client.post("/api/releases/report", json=retired).json() == {"error": "retired"}
    assert app.state.releases.station_updates() == {}


def test_publishing_adds_files_in_order_and_a_fresh_timestamp(site):
    _, _, _, tmp_path = site
    served = ReleaseRepository(served_folder(tmp_path / "data"))
    before = served.latest("timestamp").signed.version
    again = publish(tmp_path / "repo", tmp_path / "data")
    assert again["copied"] == 0 and again["timestamp_version"] == before + 1
    assert served.latest("timestamp").signed.snapshot_meta.version == served.latest("snapshot").signed.version


def test_a_release_for_another_architecture_takes_wheels_of_any_older_glibc_the_station_runs():
    """pip takes each --platform literally: asking only for glibc 2.36 found no arm64
    wheel of cbor2 (tagged manylinux_2_28) and the arm64 build failed."""
    from provisioning.release_build import platform_tags

    tags = platform_tags("arm64")
    assert tags[0] == "manylinux_2_36_aarch64" and "manylinux_2_28_aarch64" in tags
    assert "manylinux_2_17_aarch64" in tags and tags[-1] == "manylinux2014_aarch64"
    assert not any("x86_64" in tag or "_2_37_" in tag for tag in tags)  # nothing newer than Bookworm's glibc
