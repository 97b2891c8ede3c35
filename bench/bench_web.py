"""The web under load: p50/p95/p99 latency of the history page and the JSON history
endpoint at 50 concurrent connections (wrk), on a generated database, against the
server's cheapest route (/healthz: the framework and one indexed row) in the same run.

`python -m bench.bench_web --checkins 10000000` (the database is generated once into
--cache, as for bench_queries). Needs wrk (Debian: `apt install wrk`).

The server runs as `qrgate-server run` serves it (server/cli.py: uvicorn_config and
the SO_REUSEPORT socket), on the generated SQLite file, logged in as the owner of a busy
venue: one web process, then two on the same port (`--processes 1,2`), as two
`qrgate-server run --no-bridge` processes would share it.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench.bench_queries import open_dataset
from bench.table import parse_counts, print_ratio_table
from provisioning.broker import free_port

REPO = Path(__file__).resolve().parents[1]
# wrk prints these after the run; p95 is not among its defaults.
LUA = """
done = function(summary, latency, requests)
  io.write(string.format("QRGATE %d %d %d %d %d %d\\n", latency:percentile(50), latency:percentile(95),
    latency:percentile(99), summary.requests, summary.errors.status + summary.errors.connect +
    summary.errors.read + summary.errors.write + summary.errors.timeout, summary.duration))
end
"""
SERVE = """
import sys, uvicorn
from server.cli import uvicorn_config, web_socket
from server.storage import SqliteStorage
from server.web.app import create_app
app = create_app(SqliteStorage(sys.argv[1]), public_feed=False)
port = int(sys.argv[2])
uvicorn.Server(uvicorn_config(app, "127.0.0.1", port)).run(sockets=[web_socket("127.0.0.1", port)])
"""


def owner_session(path: Path) -> tuple[str, int]:
    """A session cookie of the owner of the busiest venue, and that venue's id."""
    from server.accounts.accounts import Accounts
    from server.areas.areas import AreaDirectory
    from server.accounts.sms import DevSmsSender
    from server.storage import SqliteStorage
    from server.venues.venues import VenueDirectory

    storage = SqliteStorage(path)
    accounts = Accounts(storage, DevSmsSender())
    venues = VenueDirectory(storage, accounts, AreaDirectory.load())
    venue = storage.db.execute("SELECT venue_id FROM checkins GROUP BY venue_id ORDER BY count(*) DESC LIMIT 1"
                               ).fetchone()[0]
    account = accounts.account_for_phone("0912000001")
    if venues.role_of(venue, account.id) is None:
        venues.add_member(venue, account, "owner")
    return accounts.start_session(account), venue


def wrk(url: str, cookie: str, seconds: int, connections: int) -> dict:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as script:
        script.write(LUA)
    try:
        out = subprocess.run(["wrk", "-t2", f"-c{connections}", f"-d{seconds}s", "--timeout", "10s", "-s", script.name,
                              "-H", f"Cookie: qrgate_session={cookie}", url],
                             capture_output=True, text=True, timeout=seconds + 60)
    finally:
        os.unlink(script.name)
    line = next(line for line in out.stdout.splitlines() if line.startswith("QRGATE "))
    p50, p95, p99, requests, errors, duration_us = map(int, line.split()[1:])
    return {"p50_ms": p50 / 1000, "p95_ms": p95 / 1000, "p99_ms": p99 / 1000, "requests": requests,
            "errors": errors, "per_s": requests / (duration_us / 1e6)}


def _serve(path: Path, processes: int):
    """Start ``processes`` web servers on one port; return (base URL, processes)."""
    port = free_port()
    servers = [subprocess.Popen([sys.executable, "-c", SERVE, str(path), str(port)], cwd=REPO,
                                stdout=subprocess.DEVNULL, stderr=subprocess.PIPE) for _ in range(processes)]
    base = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    # Every process answers once it listens; wait until each has had time to bind.
    for server in servers:
        while True:
            try:
                urllib.request.urlopen(base + "/healthz", timeout=5).read()
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit("the web server did not start: " + server.stderr.read().decode()[-2000:])
                time.sleep(0.2)
    for server in servers:
        if server.poll() is not None:
            raise SystemExit("a web server exited: " + server.stderr.read().decode()[-2000:])
    return base, servers


def run(checkins: int, cache: Path, seconds: int = 10, connections: int = 50,
        processes: tuple[int, ...] = (1, 2)) -> dict:
    if shutil.which("wrk") is None:
        raise SystemExit("bench_web needs wrk: apt install wrk")
    path, info = open_dataset(checkins, cache)
    cookie, venue = owner_session(path)
    results = {"checkins": info["checkins"], "connections": connections, "seconds": seconds, "venue": venue,
               "runs": []}
    for count in processes:
        base, servers = _serve(path, count)
        run_result = {"processes": count}
        try:
            for name, url in (("healthz", "/healthz"), ("history_page", f"/venues/{venue}/checkins"),
                              ("history_json", f"/api/history?venue={venue}")):
                # Check the route answers as the owner would see it before loading it.
                request = urllib.request.Request(base + url, headers={"Cookie": f"qrgate_session={cookie}"})
                with urllib.request.urlopen(request, timeout=30) as answer:
                    assert answer.status == 200, (url, answer.status)
                wrk(base + url, cookie, 2, connections)  # warm-up
                run_result[name] = wrk(base + url, cookie, seconds, connections)
        finally:
            for server in servers:
                server.terminate()
            for server in servers:
                server.wait(timeout=30)
        results["runs"].append(run_result)
    return results


def print_table(results: dict) -> None:
    rows = []
    for run_result in results["runs"]:
        base = run_result["healthz"]
        n = run_result["processes"]
        for key, label in (("history_page", "history page (HTML, one venue, 50 rows)"),
                           ("history_json", "history JSON (/api/history, one venue)")):
            r = run_result[key]
            rows.append((f"{label}, {n} web process{'es' if n > 1 else ''}",
                         f"p95 {r['p95_ms']:.1f} ms (p50 {r['p50_ms']:.1f}, p99 {r['p99_ms']:.1f}),"
                         f" {r['per_s']:.0f} req/s, {r['errors']} errors",
                         f"/healthz p95 {base['p95_ms']:.1f} ms, {base['per_s']:.0f} req/s",
                         f"{r['p95_ms'] / base['p95_ms']:.1f}x"))
    print(f"{results['checkins']:,} check-ins, wrk {results['connections']} connections x {results['seconds']} s;"
          " target p95 under 50 ms")
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_web", description=__doc__.splitlines()[0])
    parser.add_argument("--checkins", type=int, default=1_000_000)
    parser.add_argument("--cache", type=Path, default=Path(".bench-cache"))
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--processes", default="1,2", help="web processes sharing the port, one run each")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args(argv)
    processes = parse_counts(parser, args.processes, "--processes")
    results = run(args.checkins, args.cache, args.seconds, processes=processes)
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
