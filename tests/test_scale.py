"""Tracing on a generated database of a million check-ins (3,000 venues, 200,000 people),
checked against a brute-force computation over every row."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from bench.dataset import DAY_MS, generate
from conftest_pg import pg_dsn  # noqa: F401 (a fixture)
from server.storage import SqliteStorage
from server.tracing import Tracer, overlap_ms, visits_from_checkins

pytestmark = pytest.mark.timeout(600)
STAY_S, MARGIN_S = 3600, 900


@pytest.fixture(scope="module")
def million(tmp_path_factory):
    path = tmp_path_factory.mktemp("scale") / "server.sqlite3"
    return generate(path, 1_000_000, venues=3000, people=200_000, days=28, seed=7)


def brute_force(rows, person_key: str, start_ms: int, end_ms: int) -> dict[str, int]:
    """Every visit of everyone from the whole table; the traced person's visits that touch
    [start, end); every other visit at the same venue overlapping one of them."""
    stay, margin = STAY_S * 1000, MARGIN_S * 1000
    everyone = visits_from_checkins(rows, stay)
    mine = [v for v in everyone if v.person_key == person_key and v.end_ms > start_ms and v.start_ms < end_ms]
    by_venue = defaultdict(list)
    for v in everyone:
        by_venue[v.venue_id].append(v)
    contacts: dict[str, int] = defaultdict(int)
    for visit in mine:
        for other in by_venue[visit.venue_id]:
            if other.person_key != person_key:
                shared = overlap_ms(visit, other, margin)
                if shared > 0:
                    contacts[other.person_key] += shared
    return dict(contacts)


def test_tracing_matches_a_brute_force_over_every_row(million):
    storage = SqliteStorage(million.path)
    assert storage.count_checkins() == 1_000_000
    rows = storage.db.execute("SELECT person_key, venue_id, direction, wall_ms FROM checkins").fetchall()
    busy = defaultdict(int)
    for r in rows:
        busy[r[0]] += 1
    rng = random.Random(3)
    # People with a few visits and people with many: a sample of both.
    people = rng.sample(sorted(k for k, n in busy.items() if n >= 8), 6) + rng.sample(sorted(busy), 6)
    tracer = Tracer(storage)
    start = million.end_ms - 14 * DAY_MS
    checked = 0
    for person in people:
        got = tracer.trace(person, start, million.end_ms, margin_s=MARGIN_S, default_stay_s=STAY_S)
        expected = brute_force(rows, person, start, million.end_ms)
        got_overlap = {c["person_key"]: round(c["overlap_minutes"], 1) for c in got["contacts"]}
        assert got_overlap == {k: round(v / 60000, 1) for k, v in expected.items()}, person
        ranks = [c["overlap_minutes"] for c in got["contacts"]]
        assert ranks == sorted(ranks, reverse=True)
        checked += len(expected)
    assert checked > 100  # the sample found real contacts to compare, not only empty answers


def test_postgresql_traces_the_same_million_rows_to_the_same_answer(million, pg_dsn, tmp_path):  # noqa: F811
    from server.storage_pg import PostgresStorage, PostgresTracer

    lite = SqliteStorage(million.path)
    pg = PostgresStorage(pg_dsn, data_dir=tmp_path)
    columns = ("station_id", "seq", "venue_id", "direction", "kind", "person_key", "id_number", "name", "birth",
               "sex", "wall_ms", "mono_ms", "boot_id", "clock_synced", "time_corrected", "wall_ms_station",
               "received_ms", "sig", "record")
    with pg.pool.connection() as conn:
        with conn.cursor().copy(f"COPY checkins ({', '.join(columns)}) FROM STDIN") as copy:
            for row in lite.db.execute(f"SELECT {', '.join(columns)} FROM checkins ORDER BY id"):
                copy.write_row([*row[:13], bool(row[13]), bool(row[14]), *row[15:]])
        conn.execute("ANALYZE checkins")
        assert conn.execute("SELECT count(*) FROM checkins").fetchone()[0] == lite.count_checkins()
    rng = random.Random(5)
    keys = [r[0] for r in lite.db.execute(
        "SELECT person_key FROM checkins WHERE wall_ms >= ? ORDER BY random() LIMIT 300",
        [million.end_ms - 14 * DAY_MS])]
    start = million.end_ms - 14 * DAY_MS
    compared = 0
    for person in rng.sample(keys, 8):
        ours = PostgresTracer(pg).trace(person, start, million.end_ms)
        theirs = Tracer(lite).trace(person, start, million.end_ms)
        assert ours["visits"] == theirs["visits"], person
        assert [(c["person_key"], c["overlap_minutes"]) for c in ours["contacts"]] == \
            [(c["person_key"], c["overlap_minutes"]) for c in theirs["contacts"]], person
        compared += len(theirs["contacts"])
    assert compared > 20
