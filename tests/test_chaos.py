"""Kill -9 at random moments: the station many times over a scan run, the server (bridge)
and the broker now and then. Every record whose green light was shown is stored by the
server exactly once.

This is the short version CI runs (dozens of kills); `CHAOS_KILLS=1000` makes it long.
The run itself lives in bench/reliability.py, which also reports it in docs/reliability.md.
"""

from __future__ import annotations

import os

import pytest

from bench.reliability import chaos_run

KILLS = int(os.environ.get("CHAOS_KILLS", "24"))
pytestmark = pytest.mark.timeout(120 + 6 * KILLS)


def test_station_killed_at_random_loses_nothing_it_showed_as_accepted(tmp_path, server_env):
    result = chaos_run(server_env, tmp_path, KILLS)
    assert result.shown, "the station never got far enough to record anything"
    assert result.bridge_kills and (KILLS < 6 or result.broker_kills)
    assert len(result.stored_seqs) == len(set(result.stored_seqs))  # exactly once
    assert not result.lost, f"shown as accepted but not stored: {sorted(result.lost)}"
    assert result.duplicated == 0  # and never the same person twice (entry, 1 h window)
    print(f"{KILLS} kills, {len(result.shown)} shown accepted, {len(result.stored_seqs)} stored")
