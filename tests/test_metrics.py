"""Prometheus metrics: what an operator's dashboard scrapes from stations and the server."""

from __future__ import annotations

import urllib.request

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi.testclient import TestClient

from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from provisioning.broker import free_port
from qrgate import protocol
from qrgate.samples import demo_samples
from qrgate.sealing import x25519_public_to_text
from conftest import new_storage
from server.ingest.bridge import Bridge
from server.web.app import create_app


def test_station_serves_scan_counts_backlog_and_faults(tmp_path):
    port = free_port()
    cfg = tmp_path / "station.toml"
    cfg.write_text(f"""
[station]
id = "gate-m"
server_key = "{x25519_public_to_text(X25519PrivateKey.generate().public_key())}"
metrics_port = {port}
[mqtt]
port = {free_port()}
tls = false
[feedback]
indicators = "none"
panel = "none"
[source]
kind = "list"
""")
    station = Station(load_station_config(cfg), source=ListSource([]), decoder=object())
    station.start()
    try:
        station.handle_text(demo_samples()[0].text)
        station.handle_text("https://example.com/x")
        station._set_fault("camera")
        text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    finally:
        station.close()
    assert 'qrgate_station_scans_total{reason="",result="accepted_offline"} 1.0' in text
    assert 'qrgate_station_scans_total{reason="unknown_format",result="refused"} 1.0' in text
    assert "qrgate_station_backlog_records 1.0" in text
    assert "qrgate_station_online 0.0" in text
    assert 'qrgate_station_fault{fault="camera"} 1.0' in text


def test_server_metrics_count_stored_refused_and_stations(tmp_path):
    storage = new_storage(tmp_path / "s.sqlite3")
    venue = storage.add_venue("Cổng A")
    key = Ed25519PrivateKey.generate()
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    bridge = Bridge(storage)
    record = protocol.sign_record(
        {"v": 1, "type": "checkin", "st": "gate-1", "seq": 1, "ts": 1_790_000_000_000, "mono": 1, "boot": "b", "sync": True,
         "dir": "in", "kind": "cccd", "person": {"id": "1", "name": "A", "birth": "", "sex": ""}}, key)
    topic = protocol.records_topic("gate-1")
    bridge.handle(topic, protocol.encode_batch([protocol.canonical_json(record)]))
    bridge.handle(protocol.records_topic("gate-2"), b'{"records":[]}')
    app = create_app(storage, bridge=bridge)
    text = TestClient(app).get("/metrics").text
    assert "qrgate_records_stored_total 1.0" in text
    assert 'qrgate_records_refused_total{reason="unknown_station"} 1.0' in text
    assert "qrgate_checkins 1.0" in text
    assert 'qrgate_stations{state="offline"} 1.0' in text
