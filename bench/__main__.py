"""Run every benchmark: `python -m bench [--quick] [--json PATH]`.

Prints each benchmark's table and writes one JSON document with all results. The full
run includes the 10-million-row query figures (the generated database is kept in
`.bench-cache/` and reused); `--quick` uses 1 million rows and fewer records.
"""

from __future__ import annotations

import argparse
import json
import platform
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from bench import bench_decode, bench_ingest, bench_pg, bench_queries, bench_station, bench_web


def machine() -> dict:
    model = ""
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    except (OSError, subprocess.SubprocessError):
        pass
    import os

    return {"cpu": model, "cores": os.cpu_count(), "machine": platform.machine(), "python": platform.python_version()}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer records and repeats (a smoke run)")
    parser.add_argument("--json", type=Path, help="write all results here")
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"), help="where generated databases are kept")
    parser.add_argument("--skip-postgresql", action="store_true", help="leave out the PostgreSQL figures")
    args = parser.parse_args(argv)
    results = {"machine": machine()}
    print("== decoding ==", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        decode_json = Path(tmp) / "decode.json"
        bench_decode.main(["--json", str(decode_json), "--repeat", "1" if args.quick else "3"])
        results["decode"] = json.loads(decode_json.read_text())
    print("\n== record path ==", flush=True)
    ingest = bench_ingest.run(2000 if args.quick else 20000)
    bench_ingest.print_table(ingest)
    results.update(ingest)
    print("\n== bridge workers (shared subscription) ==", flush=True)
    # The best of three runs in the full mode: the machine's other work moves one run.
    scaling = bench_ingest.run_workers(2000 if args.quick else 20000, repeat=1 if args.quick else 3)
    bench_ingest.print_workers_table(scaling)
    results["scaling"] = scaling
    if not args.skip_postgresql:
        print("\n== bridge workers on PostgreSQL ==", flush=True)
        scaling_pg = bench_ingest.run_workers(2000 if args.quick else 20000, backend="postgres",
                                              repeat=1 if args.quick else 3)
        bench_ingest.print_workers_table(scaling_pg)
        results["scaling_postgresql"] = scaling_pg
    print("\n== server queries ==", flush=True)
    queries = bench_queries.run(1_000_000 if args.quick else 10_000_000, args.cache)
    bench_queries.print_table(queries)
    results["queries"] = queries
    print("\n== web under load ==", flush=True)
    if shutil.which("wrk"):
        web = bench_web.run(1_000_000 if args.quick else 10_000_000, args.cache, 5 if args.quick else 10)
        bench_web.print_table(web)
        results["web"] = web
    else:
        print("  skipped: needs wrk (apt install wrk)")
    if not args.skip_postgresql:
        print("\n== PostgreSQL ==", flush=True)
        pg = bench_pg.run(2000 if args.quick else 20000, 1_000_000 if args.quick else 10_000_000)
        bench_pg.print_table(pg)
        results["postgresql"] = pg
    print("\n== station ==", flush=True)
    station = bench_station.run(50 if args.quick else 200)
    bench_station.print_table(station)
    results["station"] = station
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False) + "\n")
        print(f"\nJSON written to {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
