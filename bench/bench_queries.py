"""Server queries at scale: contact tracing, a history page and an area dashboard on a
generated database (bench/dataset.py), against raw SQLite doing the least the same
answer needs, in the same run.

`python -m bench.bench_queries --checkins 10000000` (the full figure; the database is
generated once into --cache and reused), `--checkins 1000000` for a quicker run.

Baselines (raw SQLite, same file, same run):
- tracing: the index range scans alone (the person's rows in the 14 days, and the rows
  of each venue they visited in the same hours), with no pairing or ranking;
- history page: `SELECT ... WHERE venue_id = ? ORDER BY wall_ms DESC LIMIT 50`;
- dashboard: one GROUP BY over the (venue, day) roll-up the dashboard reads.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import random
import statistics
import sys
import time
from pathlib import Path
from zoneinfo import ZoneInfo

from bench.dataset import DAY_MS, generate
from bench.table import print_ratio_table

TZ = ZoneInfo("Asia/Ho_Chi_Minh")


def _median_ms(fn, args_list) -> tuple[float, float]:
    times = []
    for args in args_list:
        t0 = time.perf_counter()
        fn(*args)
        times.append((time.perf_counter() - t0) * 1000)
    times.sort()
    return statistics.median(times), times[min(len(times) - 1, int(len(times) * 0.95))]


def open_dataset(checkins: int, cache: Path):
    """The generated database for ``checkins`` rows, made once and kept in ``cache``."""
    cache.mkdir(parents=True, exist_ok=True)
    path = cache / f"server-{checkins}.sqlite3"
    meta = path.with_suffix(".json")
    if not (path.exists() and meta.exists()):
        for stale in cache.glob(f"server-{checkins}.sqlite3*"):
            stale.unlink()
        t0 = time.perf_counter()
        ds = generate(path, checkins, progress=lambda n: print(f"\r  generating: {n:,} rows", end="", flush=True))
        print(f"\r  generated {ds.checkins:,} rows in {time.perf_counter() - t0:.0f} s", flush=True)
        meta.write_text(json.dumps({"end_ms": ds.end_ms, "start_ms": ds.start_ms, "checkins": ds.checkins}))
    info = json.loads(meta.read_text())
    return path, info


def run(checkins: int, cache: Path, samples: int = 40) -> dict:
    from server.storage import SqliteStorage
    from server.checkins.tracing import Tracer

    path, info = open_dataset(checkins, cache)
    storage = SqliteStorage(path)
    db = storage.db
    end_ms = info["end_ms"]
    start_ms = end_ms - 14 * DAY_MS
    rng = random.Random(11)
    # People who were there in the last 14 days, drawn by row (busy people more often,
    # as a health office would get them).
    max_id = db.execute("SELECT max(id) FROM checkins").fetchone()[0]
    people = []
    while len(people) < samples:
        row = db.execute("SELECT person_key, wall_ms FROM checkins WHERE id = ?", [rng.randint(1, max_id)]).fetchone()
        if row and row[1] >= start_ms:
            people.append(row[0])
    results: dict = {"checkins": info["checkins"], "samples": samples}

    tracer = Tracer(storage)

    def raw_trace(p):
        own = db.execute("SELECT venue_id, wall_ms FROM checkins WHERE person_key = ? AND wall_ms >= ? AND wall_ms < ?",
                         [p, start_ms, end_ms]).fetchall()
        for venue, wall in own:
            db.execute("SELECT person_key, direction, wall_ms FROM checkins WHERE venue_id = ? AND wall_ms BETWEEN ? AND ?",
                       [venue, wall - 3_600_000, wall + 3_600_000]).fetchall()

    # One untimed pass of each first, so neither is timed on pages the other brought
    # into the cache (the database is larger than SQLite's cache, not than the OS's).
    for p in people:
        tracer.trace(p, start_ms, end_ms)
        raw_trace(p)
    ours, ours95 = _median_ms(lambda p: tracer.trace(p, start_ms, end_ms), [(p,) for p in people])
    raw, raw95 = _median_ms(raw_trace, [(p,) for p in people])
    results["tracing_14d"] = {"ours_ms": ours, "ours_p95_ms": ours95, "raw_ms": raw, "raw_p95_ms": raw95,
                              "target_ms": 100}

    venues = [r[0] for r in db.execute("SELECT venue_id FROM checkins WHERE id IN (%s)" % ",".join(
        str(rng.randint(1, max_id)) for _ in range(samples))).fetchall()]

    def raw_page(v):
        db.execute("SELECT id, person_key, name, id_number, wall_ms FROM checkins WHERE venue_id = ?"
                   " ORDER BY wall_ms DESC, id DESC LIMIT 50", [v]).fetchall()

    for v in venues:  # untimed first pass, as for tracing
        raw_page(v)
    raw, raw95 = _median_ms(raw_page, [(v,) for v in venues])
    try:
        from server.checkins.history import query_history
    except ImportError:
        query_history = None
    if query_history is not None:
        def our_page(v):
            page = query_history(storage, venue_ids=[v], limit=50)
            if page.next_cursor:  # and the next page, through the keyset cursor
                query_history(storage, venue_ids=[v], limit=50, cursor=page.next_cursor)

        for v in venues:
            our_page(v)
        ours, ours95 = _median_ms(our_page, [(v,) for v in venues])
        raw2, _ = _median_ms(lambda v: (raw_page(v), raw_page(v)), [(v,) for v in venues])
        results["history_page"] = {"ours_ms": ours / 2, "ours_p95_ms": ours95 / 2, "raw_ms": raw2 / 2,
                                   "raw_p95_ms": raw95, "target_ms": 100}
        # A province's officer: every venue of one province, one page.
        province = db.execute("SELECT province, count(*) FROM venues GROUP BY province ORDER BY 2 DESC LIMIT 1"
                              ).fetchone()[0]
        ids = [r[0] for r in db.execute("SELECT id FROM venues WHERE province = ?", [province])]
        query_history(storage, venue_ids=ids, limit=50)
        ours, ours95 = _median_ms(lambda: query_history(storage, venue_ids=ids, limit=50), [()] * 10)
        results["history_page_province"] = {"ours_ms": ours, "ours_p95_ms": ours95, "venues": len(ids),
                                            "target_ms": 100}
    try:
        from server.reports.dashboard import area_dashboard
    except ImportError:
        area_dashboard = None
    if area_dashboard is not None:
        from server.areas.areas import AreaDirectory

        areas = AreaDirectory.load()
        until = dt.datetime.fromtimestamp(end_ms / 1000, TZ).date()
        since = until - dt.timedelta(days=13)
        province = db.execute("SELECT province FROM venues GROUP BY province ORDER BY count(*) DESC LIMIT 1"
                              ).fetchone()[0]
        area_dashboard(storage, areas, province, since, until, TZ)  # builds the roll-up on first use
        ours, ours95 = _median_ms(lambda c: area_dashboard(storage, areas, c, since, until, TZ),
                                  [(None,)] * 5 + [(province,)] * 5)
        results["dashboard"] = {"ours_ms": ours, "ours_p95_ms": ours95, "target_ms": 500}
    return results


def print_table(results: dict) -> None:
    rows = []
    for key, label in (("tracing_14d", "tracing, one person, 14 days"), ("history_page", "history page (venue)"),
                       ("history_page_province", "history page (a province)"), ("dashboard", "area dashboard")):
        r = results.get(key)
        if not r:
            rows.append((label, "not built", "", ""))
            continue
        ours = f"{r['ours_ms']:.1f} ms median, p95 {r['ours_p95_ms']:.1f} (target {r['target_ms']})"
        if "raw_ms" in r:
            rows.append((label, ours, f"raw SQLite {r['raw_ms']:.2f} ms", f"{r['ours_ms'] / r['raw_ms']:.1f}x"))
        else:
            rows.append((label, ours, "", ""))
    print(f"{results['checkins']:,} check-ins, {results['samples']} sampled people/venues")
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_queries", description=__doc__.splitlines()[0])
    parser.add_argument("--checkins", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    results = run(args.checkins, args.cache)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
