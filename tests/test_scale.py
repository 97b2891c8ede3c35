"""Tracing on a generated database of a million check-ins (3,000 venues, 200,000 people),
checked against a brute-force computation over every row."""

from __future__ import annotations

import random
from collections import defaultdict

import pytest

from bench.dataset import DAY_MS, generate
from conftest_pg import pg_dsn  # noqa: F401 (a fixture)
from server.storage import SqliteStorage
from server.checkins.tracing import Tracer, overlap_ms, visits_from_checkins

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
    from server.storage.postgres import PostgresStorage
    from server.checkins.postgres_tracer import PostgresTracer

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


def test_a_database_from_before_the_tracing_indexes_is_upgraded_in_place_and_traces_the_same(tmp_path):
    small = generate(tmp_path / "old.sqlite3", 50_000, venues=200, people=5_000, days=28, seed=9)
    storage = SqliteStorage(small.path)
    start = small.end_ms - 14 * DAY_MS
    people = [r[0] for r in storage.db.execute("SELECT DISTINCT person_key FROM checkins WHERE wall_ms >= ?"
                                               " ORDER BY person_key LIMIT 5", [start])]
    before = [Tracer(storage).trace(p, start, small.end_ms) for p in people]
    assert sum(len(b["contacts"]) for b in before) > 5
    # The indexes of a database made by an earlier release.
    storage.db.conn.executescript(
        "DROP INDEX idx_checkins_venue_scan; DROP INDEX idx_checkins_person_scan;"
        " CREATE INDEX idx_checkins_venue_id_wall_ms ON checkins (venue_id, wall_ms);"
        " CREATE INDEX idx_checkins_person_key_wall_ms ON checkins (person_key, wall_ms);")
    storage.db.conn.close()
    reopened = SqliteStorage(small.path)
    names = {r[0] for r in reopened.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                               " AND tbl_name = 'checkins'")}
    assert {"idx_checkins_venue_scan", "idx_checkins_person_scan"} <= names
    assert not names & {"idx_checkins_venue_id_wall_ms", "idx_checkins_person_key_wall_ms"}
    assert reopened.count_checkins() == 50_000
    assert [Tracer(reopened).trace(p, start, small.end_ms) for p in people] == before
    # Who else was at a venue, and where a person was, come from the indexes alone, not
    # from the large rows; the history's order (time, then id) needs no sort.
    for sql in ("SELECT person_key, venue_id, direction, wall_ms, id FROM checkins WHERE venue_id = 3"
                " AND wall_ms >= 0 AND wall_ms <= 9 AND person_key != 'x' ORDER BY wall_ms, id",
                "SELECT person_key, venue_id, direction, wall_ms FROM checkins WHERE person_key = 'x'"
                " AND wall_ms >= 0 AND wall_ms <= 9 ORDER BY wall_ms",
                "SELECT id, name FROM checkins WHERE venue_id = 3 ORDER BY wall_ms DESC, id DESC LIMIT 50"):
        plan = " ".join(r[3] for r in reopened.db.execute(f"EXPLAIN QUERY PLAN {sql}"))
        assert "idx_checkins_venue_scan" in plan or "idx_checkins_person_scan" in plan, plan
        assert "TEMP B-TREE" not in plan, plan
        if "name" not in sql:
            assert "COVERING INDEX" in plan, plan
