"""Kill -9 while work is in flight: a station scanning an endless queue of people, many
times over, and the server (bridge) and the broker now and then while records stream to
them. Every record whose green light was shown is stored by the server exactly once, and
no person is counted twice.

A kill counts only when it lands on work in flight; the test counts those and fails when
they did not happen (a station that finished its work and exited by itself is a failed
run, not a kill). This is the short version CI runs; `CHAOS_KILLS=500` makes it long, and
`python -m bench.reliability kills --kills 500` is the documented long run
(docs/reliability.md). The run itself lives in bench/reliability.py.
"""

from __future__ import annotations

import os

import pytest

from bench.reliability import chaos_run

KILLS = int(os.environ.get("CHAOS_KILLS", "12"))
pytestmark = pytest.mark.timeout(60 + 4 * KILLS)


def test_station_bridge_and_broker_killed_mid_work_lose_and_duplicate_nothing_shown(tmp_path, server_env):
    result = chaos_run(server_env, tmp_path, KILLS)
    # The faults landed on work in flight: every station run was still scanning when it
    # was killed (none ran out of work and exited), and it died of the kill right after
    # logging a record, with more codes waiting; the bridge and the broker were killed
    # while the server was storing this station's records and more were on their way.
    # The test judges each kill from outside: on a busy machine it may read the last
    # record late, or find the scanner's queue empty for a moment; hence 80 % and "at
    # least one" (the long run in docs/reliability.md: 496 of 500, 120 of 125, 82 of 83).
    missed = [entry for entry in result.log if not entry["landed"]]
    assert result.exits_by_itself == [], "stations that ended without being killed"
    assert result.station_kills == KILLS
    assert result.station_kills_landed >= 0.8 * KILLS, missed
    assert result.bridge_kills == (KILLS + 1) // 4 and (result.bridge_kills_landed >= 1 or KILLS < 3), missed
    assert result.broker_kills == KILLS // 6 and (result.broker_kills_landed >= 1 or KILLS < 6), missed
    assert len(result.shown) >= 2 * KILLS  # records were made in every run
    # Nothing shown is lost, nothing committed is missing, nothing is there twice.
    assert not result.lost, f"shown as accepted but not stored: {sorted(result.lost)}"
    assert not result.missing, f"committed to the outbox but not stored: {sorted(result.missing)}"
    assert len(result.stored_seqs) == len(set(result.stored_seqs))  # exactly once
    assert result.duplicated == 0  # and never the same person twice (entry, 1 h window)
    assert result.refusals == {}  # no number reused after a kill (the server would refuse a conflict)
    print(f"{result.station_kills_landed}/{KILLS} station kills, {result.bridge_kills_landed}/{result.bridge_kills} "
          f"bridge and {result.broker_kills_landed}/{result.broker_kills} broker kills landed mid-work; "
          f"{len(result.shown)} shown, {len(result.stored_seqs)} stored, {result.committed_not_shown} committed "
          f"but cut off before the green light; {result.seconds} s")
