"""What bench/bench_fleet.py makes of its measurements: the arrival percentiles, the
broker's memory per station added, and the tables (each figure beside its raw
counterpart, then how each grows with the fleet)."""

from __future__ import annotations

import math

from bench.table import print_ratio_table


def percentile_s(times: list[float], t0: float, total: int, p: float) -> float | None:
    """Seconds from t0 until p of ``total`` stations had it (None: fewer did)."""
    need = math.ceil(p * total)
    if len(times) < need or need == 0:
        return None
    return sorted(times)[need - 1] - t0


def spread(times: list[float], t0: float, total: int) -> dict:
    return {"p99_s": percentile_s(times, t0, total, 0.99), "p100_s": percentile_s(times, t0, total, 1.0),
            "got": len(times), "of": total}


def growth(rows: list[dict]) -> dict:
    """The broker's memory per station added between the smallest and largest fleet:
    what sizing needs (accounts, connections, sessions and retained messages included,
    the broker's fixed part left out)."""
    first, last = rows[0], rows[-1]
    added = last["stations"] - first["stations"]
    return {kind: {"broker_kib_per_added_station_connected":
                   (last[kind]["connect"]["broker_rss_connected_kib"]
                    - first[kind]["connect"]["broker_rss_connected_kib"]) / added,
                   "broker_kib_per_added_station_after_traffic":
                   (last[kind]["broker_rss_after_traffic_kib"] - first[kind]["broker_rss_after_traffic_kib"]) / added}
            for kind in ("project", "raw")}


def _fmt(value, unit: str, digits: int = 2) -> str:
    return "-" if value is None else f"{value:,.{digits}f} {unit}"


def _ratio(a, b) -> str:
    return "-" if a is None or not b else f"{a / b:.2f}"


FIGURES = [
    # (label, path into a run's figures, unit, digits)
    ("broker memory per connected station", ("connect", "broker_kib_per_station"), "KiB", 1),
    ("broker RSS, all connected", ("connect", "broker_rss_connected_kib"), "KiB", 0),
    ("server CPU per heartbeat", ("traffic", "ingest_cpu_us_per_heartbeat"), "us", 0),
    ("server CPU per record message", ("traffic", "ingest_cpu_us_per_record"), "us", 0),
    ("broker CPU per heartbeat", ("traffic", "broker_cpu_us_per_heartbeat"), "us", 0),
    ("block list to 99 % of stations", ("blocklist", "p99_s"), "s", 2),
    ("block list to 100 %", ("blocklist", "p100_s"), "s", 2),
    ("release notice to 99 %", ("release", "p99_s"), "s", 2),
    ("release notice to 100 %", ("release", "p100_s"), "s", 2),
    ("retire -> connection closed (median)", ("retire", "median_ms"), "ms", 0),
    ("retire -> connection closed (max)", ("retire", "max_ms"), "ms", 0),
    ("restart: back from broker up, 99 %", ("restart", "p99_s"), "s", 2),
    ("restart: back from broker up, 100 %", ("restart", "p100_s"), "s", 2),
    ("restart: outage, stop to 100 % back", ("restart", "outage_p100_s"), "s", 2),
    ("restart: broker CPU per station back", ("restart", "broker_cpu_ms_per_station"), "ms", 2),
    ("connect all, 32 at a time per process", ("connect", "connect_s"), "s", 2),
    ("broker CPU per connect", ("connect", "broker_cpu_ms_per_connect"), "ms", 2),
]
RAW_NAMES = {
    "server CPU per heartbeat": "bare subscriber",
    "server CPU per record message": "bare subscriber",
    "block list to 99 % of stations": "same configs, bare publisher",
    "block list to 100 %": "same configs, bare publisher",
    "release notice to 99 %": "same notice, bare publisher",
    "release notice to 100 %": "same notice, bare publisher",
    "retire -> connection closed (median)": "client id taken over",
    "retire -> connection closed (max)": "client id taken over",
}


def figure(run: dict, path: tuple[str, str]):
    return run[path[0]][path[1]]


def print_table(results: dict) -> None:
    for row in results["sizes"]:
        n = row["stations"]
        print(f"\n{n} stations (project: TLS, own passwords, dynamic-security ACLs, bridge on SQLite;"
              f" raw: same mosquitto, bare)")
        rows = []
        for label, path, unit, digits in FIGURES:
            ours, base = figure(row["project"], path), figure(row["raw"], path)
            raw_label = f"raw {RAW_NAMES.get(label, 'broker')} {_fmt(base, unit, digits)}"
            rows.append((label, _fmt(ours, unit, digits), raw_label, _ratio(ours, base)))
        print_ratio_table(rows)
    if len(results["sizes"]) > 1:
        print_growth(results)


def print_growth(results: dict) -> None:
    sizes = results["sizes"]
    print("\nGrowth with the fleet (project; raw in brackets)")
    header = ["what"] + [f"{r['stations']}" for r in sizes] + [f"x{sizes[-1]['stations'] // sizes[0]['stations']} stations"]
    lines = [header]
    for label, path, unit, digits in FIGURES:
        cells = [f"{_fmt(figure(r['project'], path), '', digits).strip()} ({_fmt(figure(r['raw'], path), '', digits).strip()})"
                 for r in sizes]
        first, last = figure(sizes[0]["project"], path), figure(sizes[-1]["project"], path)
        lines.append([f"{label} [{unit}]", *cells, _ratio(last, first)])
    widths = [max(len(line[i]) for line in lines) for i in range(len(header))]
    for i, line in enumerate(lines):
        print("  ".join(cell.ljust(w) for cell, w in zip(line, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))
    g = results["growth"]
    for key, what in (("broker_kib_per_added_station_connected", "connected, status retained"),
                      ("broker_kib_per_added_station_after_traffic", "after the traffic, config retained too")):
        print(f"broker memory per station added ({what}): {g['project'][key]:.1f} KiB"
              f" (raw {g['raw'][key]:.1f} KiB)")
