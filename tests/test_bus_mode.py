"""A station in a bus: a week with no network (accelerated clock), then it catches up in
order through the real broker, and nothing shown as accepted is lost."""

from __future__ import annotations

import pytest

from bench.reliability import WeekClock
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result
from qrgate.samples import cccd
from server.ingest.bridge import Bridge
from server.cli import open_sealing

pytestmark = pytest.mark.timeout(240)

WORKERS = 150
DAYS = 7


def test_a_week_offline_then_every_record_arrives_once_and_in_order(tmp_path, server_env):
    setup = server_env.add_station("bus-51b12345", tmp_path / "bus", source={"kind": "list"},
                                   feedback={"indicators": "none", "panel": "none"},
                                   station_options={"resend_after_s": 5.0})
    clock = WeekClock()
    station = Station(load_station_config(setup.config_path), source=ListSource([]), decoder=object(), clock=clock)
    people = [cccd(f"0791{i:08d}", "", f"Phạm Thị Lụa {i}", "01011990", "Nữ", "Thủ Đức", "01012022")
              for i in range(WORKERS)]
    accepted = 0
    for day in range(DAYS):
        for trip_hour in (6, 17):  # morning shuttle in, evening shuttle out
            clock.t = day * 86400 + trip_hour * 3600
            for person in people:
                clock.t += 4  # one worker boards every 4 s
                out = station.handle_text(person)
                assert out.result is Result.ACCEPTED_OFFLINE, out
                accepted += 1
        station.housekeeping()
    assert station.outbox.backlog() == accepted == WORKERS * 2 * DAYS
    presence = station.outbox._db.execute("SELECT count(*) FROM presence").fetchone()[0]
    assert presence <= WORKERS  # what the policy remembers stays bounded

    bridge = Bridge(server_env.storage, server_env.config.mqtt, server_env.config.base,
                    opener=open_sealing(server_env.config))
    bridge.start()
    try:
        assert bridge.wait_connected(30)
        station.publisher.start()  # back at the depot: the network returns
        assert station.publisher.wait_drained(180), f"left: {station.outbox.backlog()}"
    finally:
        station.publisher.close()
        bridge.close()
        station.close()
    rows = server_env.storage.sql.rows(
        "SELECT seq, wall_ms, direction FROM checkins WHERE station_id = 'bus-51b12345' ORDER BY id"
    )
    assert [r[0] for r in rows] == list(range(1, accepted + 1))  # once each, in order
    assert all(a[1] < b[1] for a, b in zip(rows, rows[1:]))  # times in order too
    directions = [r[2] for r in rows]
    assert directions.count("in") == directions.count("out") == WORKERS * DAYS
