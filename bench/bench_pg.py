"""PostgreSQL against SQLite on the record path, and tracing at scale on PostgreSQL.

- ingest: the same signed, sealed records verified, opened and stored by one bridge
  (Bridge.handle, no broker) into SQLite and into PostgreSQL, against the raw
  single-core libsodium verify rate; and storing alone (Storage.store_records with the
  records already opened), SQLite against PostgreSQL;
- tracing: one person over 14 days in a PostgreSQL database of 10 million check-ins
  (1 million with --quick), against the trace's own queries run bare.

Each run makes its own databases on the server (``--dsn`` names one to connect to
first, default: the local socket as this user) and drops them at the end.

    python bench/bench_pg.py [--quick] [--records N] [--rows N] [--dsn DSN] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import statistics
import sys
import tempfile
import time
import uuid
from contextlib import contextmanager
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import psycopg  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from psycopg import sql  # noqa: E402

from bench.bench_ingest import SERVER_SEALING, per_second, signed_records  # noqa: E402
from bench.table import print_ratio_table  # noqa: E402
from qrgate import protocol  # noqa: E402
from qrgate.sealing import PersonOpener  # noqa: E402

DAY_MS = 86_400_000
DEFAULT_DSNS = ("dbname=postgres", "postgresql://postgres@127.0.0.1:5432/postgres")
BATCH = 200


def admin_dsn(wanted: str | None) -> str:
    for dsn in (wanted,) if wanted else DEFAULT_DSNS:
        try:
            with psycopg.connect(dsn, connect_timeout=3):
                return dsn
        except psycopg.OperationalError:
            continue
    raise SystemExit("no PostgreSQL server answers: give --dsn (scripts/test's bootstrap installs one)")


@contextmanager
def scratch_database(admin: str, purpose: str):
    """A new database for one measurement, dropped afterwards."""
    name = f"qrgate_bench_{purpose}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    info = psycopg.conninfo.conninfo_to_dict(admin)
    info["dbname"] = name
    try:
        yield psycopg.conninfo.make_conninfo(**info)
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name)))


def server_settings(dsn: str) -> dict:
    with psycopg.connect(dsn) as conn:
        return {k: conn.execute(sql.SQL("SHOW {}").format(sql.Identifier(k))).fetchone()[0]
                for k in ("server_version", "fsync", "synchronous_commit", "shared_buffers")}


# --- ingest ---

def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def bench_ingest(admin: str, n: int, rounds: int = 3) -> dict:
    """``rounds`` rounds of ``n`` records each; within a round the raw verify, SQLite and
    PostgreSQL take turns, so a machine busy with other work slows all of them alike.
    Medians over the rounds."""
    import base64

    from nacl.signing import VerifyKey

    from server.ingest.bridge import Bridge
    from server.storage import SqliteStorage
    from server.storage.postgres import PostgresStorage

    key = Ed25519PrivateKey.generate()
    public = protocol.public_key_to_text(key.public_key())
    sodium = VerifyKey(base64.b64decode(public))
    opener = PersonOpener(SERVER_SEALING)
    rates: dict[str, list[float]] = {k: [] for k in ("raw_verify", "sqlite_bridge", "postgresql_bridge",
                                                      "sqlite_store", "postgresql_store")}
    out: dict = {"records": n, "rounds": rounds, "batch": BATCH}
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp, scratch_database(admin, "ingest") as dsn:
        out["postgresql_settings"] = server_settings(dsn)
        backends = {"sqlite": SqliteStorage(Path(tmp) / "server.sqlite3"),
                    "postgresql": PostgresStorage(dsn, data_dir=Path(tmp))}
        try:
            venues = {label: storage.add_venue("Bench") for label, storage in backends.items()}
            for r in range(rounds):
                # Each round and path has its own station, so every record is new to the database.
                signed = {label: signed_records(key, n, f"bridge-{label[:2]}-{r}") for label in backends}
                plain = {label: [{**rec, "person": opener.open(rec["sealed"], rec["st"])}
                                 for rec in signed_records(key, n, f"store-{label[:2]}-{r}")] for label in backends}
                pairs = [(protocol.signing_bytes(rec), base64.b64decode(rec["sig"])) for rec in signed["sqlite"]]
                rates["raw_verify"].append(per_second(n, _timed(lambda: [sodium.verify(d, g) for d, g in pairs])))
                for label, storage in backends.items():
                    station = signed[label][0]["st"]
                    storage.add_station(station, public, venues[label])
                    messages = [protocol.encode_batch(protocol.canonical_json(rec) for rec in signed[label][i:i + BATCH])
                                for i in range(0, n, BATCH)]
                    bridge = Bridge(storage, opener=opener)
                    topic = protocol.records_topic(station)
                    rates[f"{label}_bridge"].append(per_second(n, _timed(
                        lambda: [bridge.handle(topic, m) for m in messages])))
                    assert storage.count_checkins(station) == n, f"{label}: not every record stored"
                    station = plain[label][0]["st"]
                    storage.add_station(station, public, venues[label])
                    info = storage.station(station)
                    rates[f"{label}_store"].append(per_second(n, _timed(
                        lambda: [storage.store_records(info, plain[label][i:i + BATCH]) for i in range(0, n, BATCH)])))
                    assert storage.count_checkins(station) == n
        finally:
            backends["postgresql"].close()
    for name, values in rates.items():
        out[f"{name}_per_s"] = statistics.median(values)
        out[f"{name}_per_s_rounds"] = values
    out["sqlite_ratio_to_raw_verify"] = out["sqlite_bridge_per_s"] / out["raw_verify_per_s"]
    out["postgresql_ratio_to_raw_verify"] = out["postgresql_bridge_per_s"] / out["raw_verify_per_s"]
    out["postgresql_to_sqlite_bridge"] = out["postgresql_bridge_per_s"] / out["sqlite_bridge_per_s"]
    out["postgresql_to_sqlite_store"] = out["postgresql_store_per_s"] / out["sqlite_store_per_s"]
    return out


# --- tracing at scale ---

# One day of check-ins, made in the server: every person scans in at their workplace
# between 06:00 and 09:00 and out eight to nine hours later; one day in ten they are at
# another venue instead. Fifty people share a workplace.
DAY_ROWS = """
INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key, id_number, name, birth, sex,
                      wall_ms, mono_ms, boot_id, clock_synced, time_corrected, wall_ms_station, received_ms,
                      sig, record)
SELECT 'bench-' || v, (p::bigint * %(days)s + %(d)s) * 2 + o, v + 1, CASE o WHEN 0 THEN 'in' ELSE 'out' END,
       'cccd', 'cccd:' || lpad(p::text, 12, '0'), lpad(p::text, 12, '0'), 'Người ' || p, '1990-01-01', '',
       wall, wall %% 1000000, 'bench', true, false, wall, wall, 'synthetic', '{}'
FROM (SELECT p, o,
             CASE WHEN (p + %(d)s) %% 10 = 0 THEN (p * 7919 + %(d)s * 104729) %% %(venues)s
                  ELSE p %% %(venues)s END AS v,
             %(day_ms)s + (360 + p %% 180) * 60000::bigint + o * (480 + (p * 31) %% 60) * 60000::bigint AS wall
      FROM generate_series(0, %(people)s - 1) AS p, generate_series(0, 1) AS o) AS s
"""
BULK_INDEXES = ("checkins_id", "checkins_venue_wall", "checkins_person_wall")


def generate(storage, rows: int, days: int, end_ms: int) -> dict:
    """``rows`` synthetic check-ins over the ``days`` days before ``end_ms`` (a UTC
    midnight), loaded with the indexes dropped and rebuilt after, as a restore would."""
    from server.storage.postgres_schema import month_of

    people = max(1, rows // (2 * days))
    venues = max(1, people // 50)
    start_ms = end_ms - days * DAY_MS
    storage.ensure_partitions(range(month_of(start_ms), month_of(end_ms) + 1))
    t = time.perf_counter()
    with storage.pool.connection() as conn:
        conn.execute("INSERT INTO venues (id, name, created_ms) SELECT v, 'Nơi làm việc ' || v, 0"
                     " FROM generate_series(1, %s) AS v", [venues])
        definitions = dict(conn.execute(
            "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = 'checkins' AND indexname = ANY(%s)",
            [list(BULK_INDEXES)]).fetchall())
        for name in BULK_INDEXES:
            conn.execute(sql.SQL("DROP INDEX {}").format(sql.Identifier(name)))
    for d in range(days):
        with storage.pool.connection() as conn:
            conn.execute(DAY_ROWS, {"d": d, "days": days, "people": people, "venues": venues,
                                    "day_ms": start_ms + d * DAY_MS})
    load_s = time.perf_counter() - t
    t = time.perf_counter()
    with storage.pool.connection() as conn:
        conn.execute("SET maintenance_work_mem = '256MB'")
        for name in BULK_INDEXES:
            # pg_indexes shows a partitioned index as "ON ONLY": made so, it would be an
            # empty shell waiting for its partitions' indexes.
            conn.execute(definitions[name].replace(" ON ONLY ", " ON "))
    with storage.pool.connection() as conn:
        conn.autocommit = True
        conn.execute("ANALYZE checkins")
        total = conn.execute("SELECT count(*) FROM checkins").fetchone()[0]
    return {"rows": total, "people": people, "venues": venues, "days": days, "start_ms": start_ms,
            "end_ms": end_ms, "load_s": load_s, "index_s": time.perf_counter() - t}


def bench_tracing(admin: str, rows: int, days: int = 60, repeat: int = 5) -> dict:
    from server.storage.postgres import PostgresStorage
    from server.checkins.postgres_tracer import PostgresTracer

    end_ms = int(time.time() * 1000) // DAY_MS * DAY_MS  # today, 00:00 UTC
    with scratch_database(admin, "trace") as dsn, tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp:
        storage = PostgresStorage(dsn, data_dir=Path(tmp))
        try:
            data = generate(storage, rows, days, end_ms)
            person = f"cccd:{4242 % data['people']:012d}"
            start, end = end_ms - 21 * DAY_MS, end_ms - 7 * DAY_MS  # 14 days, a week back
            tracer = PostgresTracer(storage)
            result = tracer.trace(person, start, end)  # and the pages it reads are cached
            times, bare = [], []
            for _ in range(repeat):  # in turns, so other load on the machine hits both alike
                times.append(_timed(lambda: tracer.trace(person, start, end)))
                bare.append(_bare_trace_queries(storage, person, start, end, result))
            partitions = len(storage.partitions()) + 1  # and the default one
            with storage.pool.connection() as conn:
                plan = "\n".join(r[0] for r in conn.execute(
                    "EXPLAIN SELECT person_key, venue_id, direction, wall_ms FROM checkins"
                    " WHERE person_key = %s AND wall_ms >= %s AND wall_ms < %s ORDER BY wall_ms",
                    [person, start - 3_600_000, end + 3_600_000]))
        finally:
            storage.close()
    touched = sorted(set(re.findall(r"checkins_\d{4}_\d{2}|checkins_default", plan)))
    return {**data, "person": person, "trace_days": 14, "visits": len(result["visits"]),
            "contacts": len(result["contacts"]), "trace_ms_median": statistics.median(times) * 1000,
            "trace_ms_min": min(times) * 1000, "bare_queries_ms_median": statistics.median(bare) * 1000,
            "partitions": partitions, "partitions_in_person_plan": touched}


def _bare_trace_queries(storage, person: str, start: int, end: int, result: dict) -> float:
    """The trace's two queries with the windows it used, fetched and thrown away."""
    stay, margin = 3_600_000, 900_000
    windows = [(v["venue_id"], v["start_ms"] - margin - stay, v["end_ms"] + margin + stay) for v in result["visits"]]
    with storage.pool.connection() as conn:
        t = time.perf_counter()
        conn.execute("SELECT person_key, venue_id, direction, wall_ms FROM checkins"
                     " WHERE person_key = %s AND wall_ms >= %s AND wall_ms < %s ORDER BY wall_ms",
                     [person, start - stay, end + stay]).fetchall()
        if windows:
            conn.execute(
                "SELECT w.n, c.person_key, c.venue_id, c.direction, c.wall_ms, c.name"
                " FROM unnest(%s::int[], %s::bigint[], %s::bigint[], %s::bigint[]) AS w(n, venue_id, lo, hi)"
                " JOIN checkins c ON c.venue_id = w.venue_id AND c.wall_ms >= w.lo AND c.wall_ms <= w.hi"
                " WHERE c.wall_ms >= %s AND c.wall_ms <= %s AND c.person_key <> %s",
                [list(range(len(windows))), [w[0] for w in windows], [w[1] for w in windows],
                 [w[2] for w in windows], min(w[1] for w in windows), max(w[2] for w in windows),
                 person]).fetchall()
        return time.perf_counter() - t


def run(records: int, rows: int, dsn: str | None = None) -> dict:
    admin = admin_dsn(dsn)
    return {"ingest": bench_ingest(admin, records), "tracing": bench_tracing(admin, rows)}


def print_table(results: dict) -> None:
    i, t = results["ingest"], results["tracing"]
    rows = [
        ("SQLite: bridge verify + open + store", f"{i['sqlite_bridge_per_s']:.0f} records/s",
         f"raw libsodium verify {i['raw_verify_per_s']:.0f}/s", f"{i['sqlite_ratio_to_raw_verify']:.2f}"),
        ("PostgreSQL: bridge verify + open + store", f"{i['postgresql_bridge_per_s']:.0f} records/s",
         f"raw libsodium verify {i['raw_verify_per_s']:.0f}/s", f"{i['postgresql_ratio_to_raw_verify']:.2f}"),
        ("  PostgreSQL against SQLite", "", "", f"{i['postgresql_to_sqlite_bridge']:.2f}"),
        ("store_records alone, PostgreSQL", f"{i['postgresql_store_per_s']:.0f} records/s",
         f"SQLite {i['sqlite_store_per_s']:.0f}/s", f"{i['postgresql_to_sqlite_store']:.2f}"),
        (f"trace 14 days, {t['rows'] / 1e6:.0f}M check-ins ({t['visits']} visits, {t['contacts']} contacts)",
         f"{t['trace_ms_median']:.1f} ms", f"its queries bare {t['bare_queries_ms_median']:.1f} ms",
         f"{t['trace_ms_median'] / t['bare_queries_ms_median']:.2f}"),
        (f"  load {t['rows']} rows / build indexes", f"{t['load_s']:.0f} s / {t['index_s']:.0f} s",
         f"person query plans {len(t['partitions_in_person_plan'])} of {t['partitions']} partitions", ""),
    ]
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2,000 records and 1 million check-ins")
    parser.add_argument("--records", type=int, help="records for the ingest runs (default 20,000)")
    parser.add_argument("--rows", type=int, help="check-ins for the tracing run (default 10 million)")
    parser.add_argument("--dsn", default=os.environ.get("QRGATE_BENCH_PG"), help="a database to connect to first")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    records = args.records or (2000 if args.quick else 20000)
    rows = args.rows or (1_000_000 if args.quick else 10_000_000)
    results = run(records, rows, args.dsn)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
