"""Contact tracing and retention on the server's own database."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate import protocol
from server.storage import SqliteStorage
from server.tracing import Tracer, Visit, delete_older_than, overlap_ms, visits_from_checkins

H = 3_600_000
T0 = 1_789_948_800_000  # 2026-09-21 00:00 UTC; the day's scans below all fall on that date


def test_scans_pair_into_visits_and_a_missing_end_takes_the_default_stay():
    rows = [("p", 1, "in", T0), ("p", 1, "out", T0 + 2 * H),  # a full visit
            ("p", 2, "in", T0 + 3 * H),  # never scanned out
            ("p", 3, "out", T0 + 9 * H)]  # never scanned in
    visits = visits_from_checkins(rows, default_stay_ms=H)
    assert visits == [Visit("p", 1, T0, T0 + 2 * H, False), Visit("p", 2, T0 + 3 * H, T0 + 4 * H, True),
                      Visit("p", 3, T0 + 8 * H, T0 + 9 * H, True)]
    assert overlap_ms(visits[0], Visit("q", 1, T0 + H, T0 + 5 * H, False), 0) == H
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 3 * H, T0 + 4 * H, False), 15 * 60_000) == 0
    # Someone who came 10 minutes after the person left is within a 15-minute margin;
    # 20 minutes after is not.
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 2 * H + 10 * 60_000, T0 + 3 * H, False), 15 * 60_000) == 5 * 60_000
    assert overlap_ms(visits[0], Visit("q", 1, T0 + 2 * H + 20 * 60_000, T0 + 3 * H, False), 15 * 60_000) == 0


@pytest.fixture
def storage(tmp_path):
    storage = SqliteStorage(tmp_path / "qrgate.sqlite3")  # where server.toml below finds it
    factory = storage.add_venue("Nhà máy A")
    bus = storage.add_venue("Xe 51B-123.45")
    key = Ed25519PrivateKey.generate()
    text = protocol.public_key_to_text(key.public_key())
    storage.add_station("gate-a", text, factory)
    storage.add_station("bus-1", text, bus)
    seq = iter(range(1, 10_000))

    def scan(station, person_id, name, direction, at_ms):
        rec = {"v": 1, "type": "checkin", "st": station, "seq": next(seq), "ts": at_ms, "mono": 0, "boot": "b",
               "sync": True, "dir": direction, "kind": "cccd",
               "person": {"id": person_id, "name": name, "birth": "", "sex": ""}}
        storage.store_records(storage.station(station), [protocol.sign_record(rec, key)])

    # The F0 works 08:00-17:00 at the factory and rides the bus 17:10-17:50.
    scan("gate-a", "001", "Ca Bệnh", "in", T0 + 8 * H)
    scan("gate-a", "001", "Ca Bệnh", "out", T0 + 17 * H)
    scan("bus-1", "001", "Ca Bệnh", "in", T0 + 17 * H + 10 * 60_000)
    scan("bus-1", "001", "Ca Bệnh", "out", T0 + 17 * H + 50 * 60_000)
    # A colleague all day, a visitor for one hour (no exit scan), a night-shift worker.
    scan("gate-a", "002", "Đồng Nghiệp", "in", T0 + 7 * H)
    scan("gate-a", "002", "Đồng Nghiệp", "out", T0 + 16 * H)
    scan("gate-a", "003", "Khách", "in", T0 + 12 * H)
    scan("gate-a", "004", "Ca Đêm", "in", T0 + 19 * H)
    scan("gate-a", "004", "Ca Đêm", "out", T0 + 23 * H)
    # Someone on the same bus.
    scan("bus-1", "005", "Hành Khách", "in", T0 + 17 * H + 5 * 60_000)
    scan("bus-1", "005", "Hành Khách", "out", T0 + 17 * H + 40 * 60_000)
    return storage, factory, bus


def test_trace_lists_visits_and_ranks_everyone_who_overlapped(storage):
    storage, factory, bus = storage
    result = Tracer(storage).trace("cccd:001", T0, T0 + 24 * H, margin_s=15 * 60, default_stay_s=3600)
    assert [(v["venue_id"], v["estimated"]) for v in result["visits"]] == [(factory, False), (bus, False)]
    ranked = [(c["person_key"], c["venues"]) for c in result["contacts"]]
    assert ranked == [("cccd:002", [factory]), ("cccd:003", [factory]), ("cccd:005", [bus])]
    assert result["contacts"][0]["overlap_minutes"] == pytest.approx(8 * 60 + 15, abs=1)
    assert result["contacts"][0]["name"] == "Đồng Nghiệp"
    assert "cccd:004" not in {c["person_key"] for c in result["contacts"]}  # came 2 h after, beyond the margin


def test_trace_cli_prints_json_and_is_audited_and_retention_deletes_old_rows(storage, tmp_path):
    storage_obj, factory, _ = storage
    cfg = tmp_path / "server.toml"
    cfg.write_text(f'[server]\ndata_dir = "{tmp_path}"\n[mqtt]\nport = 8883\n')
    run = [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())"]
    out = subprocess.run([*run, "trace", "--config", str(cfg), "--person", "cccd:001", "--from", "2026-09-21",
                          "--to", "2026-09-21"], capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    assert [c["person_key"] for c in json.loads(out.stdout)["contacts"]] == ["cccd:002", "cccd:003", "cccd:005"]
    audit = storage_obj.db.execute("SELECT action, data FROM audit_log").fetchall()
    assert audit == [("qrgate.trace.run", '{"contacts": 3, "person": "cccd:001"}')]
    bad = subprocess.run([*run, "trace", "--config", str(cfg), "--person", "x", "--from", "21/09/2026", "--to", "x"],
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode == 1 and "--from must be a date like 2026-11-22" in bad.stderr
    assert delete_older_than(storage_obj, 30, now_ms=T0 + 40 * 24 * H) == 11
    assert storage_obj.count_checkins() == 0
