"""The fleet benchmark (`python -m bench.bench_fleet`, figures in docs/scaling.md) with 20
stations: the same broker configuration, server pieces and simulated stations as the
5,000-station run, so a change that breaks the harness or the path it times is seen in
every test run. Figures at this size are noise; what is checked is that every station
was reached and that each figure is there and of a sane size."""

from __future__ import annotations

import pytest

from bench import bench_fleet

pytestmark = pytest.mark.timeout(240)
STATIONS = 20


@pytest.fixture(scope="module")
def fleet(tmp_path_factory):
    results = bench_fleet.run((STATIONS,), heartbeats=1, records=1, retire=2, sims=1,
                              work=tmp_path_factory.mktemp("fleet"))
    [row] = results["sizes"]
    return row


@pytest.mark.parametrize("kind", ["project", "raw"])
def test_every_station_gets_the_block_list_change_and_the_release_notice(fleet, kind):
    for change in ("blocklist", "release"):
        got = fleet[kind][change]
        assert (got["got"], got["of"]) == (STATIONS, STATIONS), change
        assert 0 < got["p99_s"] <= got["p100_s"] < 60, change


@pytest.mark.parametrize("kind", ["project", "raw"])
def test_every_station_that_is_not_retired_comes_back_after_a_broker_restart(fleet, kind):
    restart = fleet[kind]["restart"]
    assert (restart["got"], restart["of"]) == (STATIONS - 2, STATIONS - 2)
    # Stations wait a second before trying again (paho's back-off), then come back.
    assert 0 < restart["p100_s"] < 60 and restart["outage_p100_s"] >= restart["p100_s"]


def test_a_retired_station_is_cut_off_and_a_raw_takeover_closes_a_connection_too(fleet):
    for kind in ("project", "raw"):
        retire = fleet[kind]["retire"]
        assert retire["retired"] == 2
        assert 0 < retire["median_ms"] <= retire["max_ms"] < 30_000


def test_heartbeats_and_records_reach_the_server_and_the_costs_are_sane(fleet):
    for kind in ("project", "raw"):
        traffic = fleet[kind]["traffic"]
        assert traffic["heartbeats"] == STATIONS
        # 20 heartbeats are a few clock ticks of CPU: only the order of magnitude is checked.
        assert abs(traffic["ingest_cpu_us_per_heartbeat"]) < 100_000
        connect = fleet[kind]["connect"]
        assert connect["broker_rss_connected_kib"] > connect["broker_rss_start_kib"] > 0
    # The bench itself refuses a run where the bridge did not store every record.
    assert fleet["project"]["connect"]["broker_rss_connected_kib"] > fleet["raw"]["connect"]["broker_rss_start_kib"]
