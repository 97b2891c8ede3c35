"""A generated server database at scale, for the query benchmarks and the scale tests.

`python -m bench.dataset --checkins 1000000 --out /tmp/server.sqlite3` writes a server
database in the real schema (server/storage/sqlite.py plus the venue columns) with
``venues`` venues spread over the wards of the bundled areas file, ``people`` people
and ``checkins`` check-ins over ``days`` days: each visit is an entry scan and, nine
times in ten, an exit scan; most visits are at the person's own workplace, the rest at
other venues, busier venues more often.

The rows are synthetic: they were never signed by a station (``sig`` and ``record``
say so), which is fine for measuring queries and never reaches a real deployment.
The generator uses numpy and inserts in large batches with the indexes built at the
end, so 10 million rows take minutes, not hours.
"""

from __future__ import annotations

import argparse
import sqlite3
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

DAY_MS = 86_400_000
SURNAMES = ["Nguyễn", "Trần", "Lê", "Phạm", "Hoàng", "Huỳnh", "Phan", "Vũ", "Võ", "Đặng", "Bùi", "Đỗ", "Hồ", "Ngô",
            "Dương", "Lý"]
MIDDLE = ["Văn", "Thị", "Hữu", "Đức", "Minh", "Thu", "Ngọc", "Quang", "Thanh", "Hoài", "Xuân", "Kim"]
GIVEN = ["An", "Bình", "Châu", "Dũng", "Giang", "Hà", "Hải", "Hạnh", "Hiếu", "Hoa", "Hùng", "Hương", "Khánh", "Lan",
         "Linh", "Long", "Mai", "Nam", "Nga", "Phong", "Phúc", "Quân", "Sơn", "Tâm", "Thảo", "Trang", "Trung", "Tú",
         "Tuấn", "Vy", "Yến"]
KINDS = ("cccd", "bhyt", "national")


@dataclass(frozen=True)
class Dataset:
    path: Path
    checkins: int
    venues: int
    people: int
    start_ms: int
    end_ms: int
    person_keys: list[str]


def _person_key(kind: str, id_number: str, name: str, birth: str) -> str:
    try:
        from qrgate.persons import person_key
    except ImportError:  # older tree: the server stored kind:id
        return f"{kind}:{id_number}"
    return person_key(kind, id_number, name, birth)


def _create_schema(path: Path) -> None:
    """The server's own schema, made by the server's own code."""
    from server.accounts.accounts import Accounts
    from server.areas.areas import AreaDirectory
    from server.accounts.sms import DevSmsSender
    from server.storage import SqliteStorage
    from server.venues.venues import VenueDirectory

    storage = SqliteStorage(path)
    VenueDirectory(storage, Accounts(storage, DevSmsSender()), AreaDirectory.load())
    storage.db.conn.close()


def generate(path: str | Path, checkins: int, *, venues: int = 3000, people: int = 200_000, days: int = 28,
             seed: int = 1, end_ms: int | None = None, progress=None) -> Dataset:
    """Write the database at ``path`` (which must not exist) and describe it."""
    from server.areas.areas import AreaDirectory

    path = Path(path)
    if path.exists():
        raise FileExistsError(path)
    _create_schema(path)
    rng = np.random.default_rng(seed)
    end_ms = end_ms or (int(time.time() * 1000) // DAY_MS) * DAY_MS
    start_ms = end_ms - days * DAY_MS

    areas = AreaDirectory.load()
    wards = list(areas.wards.values())
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=OFF")  # a generated file: a crash means generating it again
    conn.execute("BEGIN")
    venue_rows = []
    for v in range(1, venues + 1):
        ward = wards[int(rng.integers(len(wards)))]
        district, province = "", ward.parent  # the 2025 map: communes and wards under their province
        venue_rows.append((v, f"Địa điểm {v}", "factory" if v % 3 else "market", "", province, district, ward.code,
                           start_ms - DAY_MS))
    conn.executemany("INSERT INTO venues (id, name, kind, address, province, district, ward, created_ms)"
                     " VALUES (?,?,?,?,?,?,?,?)", venue_rows)
    conn.executemany("INSERT INTO stations (station_id, public_key, venue_id, status, created_ms)"
                     " VALUES (?,?,?,?,?)", [(f"st-{v}", "synthetic", v, "active", start_ms) for v in
                                              range(1, venues + 1)])
    conn.execute("COMMIT")

    # People: card kind, id, name, birth, workplace.
    kinds = rng.choice(3, size=people, p=[0.7, 0.2, 0.1])
    names = [f"{SURNAMES[a]} {MIDDLE[b]} {GIVEN[c]}" for a, b, c in zip(
        rng.integers(len(SURNAMES), size=people), rng.integers(len(MIDDLE), size=people),
        rng.integers(len(GIVEN), size=people))]
    births = rng.integers(1950, 2008, size=people)
    # Zipf-like venue popularity: a few big factories, many small shops.
    weight = 1.0 / np.arange(1, venues + 1) ** 0.8
    weight /= weight.sum()
    workplace = rng.choice(venues, size=people, p=weight) + 1
    ids, keys = [], []
    for p in range(people):
        kind = KINDS[kinds[p]]
        if kind == "bhyt":
            id_number = f"DN479{p:010d}"
        else:
            id_number = f"0{(p % 96) + 1:02d}{p:09d}"
        ids.append(id_number)
        keys.append(_person_key(kind, id_number, names[p], str(births[p])))

    # Visits: about 1.9 rows each (nine in ten have an exit scan).
    visits = int(checkins / 1.9 * 1.05) + 10  # a few extra: exits past the end are dropped, then trimmed
    who = rng.integers(people, size=visits)
    at_work = rng.random(visits) < 0.7
    where = np.where(at_work, workplace[who], rng.choice(venues, size=visits, p=weight) + 1)
    day = rng.integers(days, size=visits)
    hour_ms = (rng.normal(11.0, 3.5, size=visits).clip(5, 22) * 3_600_000).astype(np.int64)
    start = start_ms + day.astype(np.int64) * DAY_MS + hour_ms - 7 * 3_600_000  # local time (UTC+7) to UTC
    stay = np.where(at_work, rng.normal(8.5, 1.0, size=visits).clip(1, 11) * 3_600_000,
                    rng.exponential(0.6, size=visits).clip(0.05, 6) * 3_600_000).astype(np.int64)
    has_exit = rng.random(visits) < 0.9

    person = np.concatenate([who, who[has_exit]])
    venue = np.concatenate([where, where[has_exit]])
    wall = np.concatenate([start, (start + stay)[has_exit]])
    out = np.concatenate([np.zeros(visits, bool), np.ones(int(has_exit.sum()), bool)])
    keep = wall < end_ms
    person, venue, wall, out = person[keep][:checkins], venue[keep][:checkins], wall[keep][:checkins], \
        out[keep][:checkins]
    # Stations number their records in time order: sort by (venue, time), count within venue.
    order = np.lexsort((wall, venue))
    person, venue, wall, out = person[order], venue[order], wall[order], out[order]
    first = np.r_[0, np.flatnonzero(np.diff(venue)) + 1]
    seq = np.arange(len(venue)) - np.repeat(first, np.diff(np.r_[first, len(venue)])) + 1
    # Insert in arrival order, as the bridge would.
    order = np.argsort(wall, kind="stable")

    # Every index of the server's schema is dropped for the insert and made again after it.
    indexes = [r for r in conn.execute("SELECT name, sql FROM sqlite_master WHERE type = 'index'"
                                       " AND tbl_name = 'checkins' AND sql IS NOT NULL")]
    for name, _ in indexes:
        conn.execute(f"DROP INDEX {name}")
    kinds_text = [KINDS[k] for k in range(3)]
    sql = ("INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key, id_number, name, birth,"
           " sex, wall_ms, mono_ms, boot_id, clock_synced, time_corrected, wall_ms_station, received_ms, sig, record)"
           " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)")
    batch = 200_000
    done = 0
    for lo in range(0, len(order), batch):
        idx = order[lo:lo + batch]
        rows = []
        for i in idx.tolist():
            p, v, w = int(person[i]), int(venue[i]), int(wall[i])
            rows.append((f"st-{v}", int(seq[i]), v, "out" if out[i] else "in", kinds_text[kinds[p]], keys[p], ids[p],
                         names[p], str(births[p]), "", w, 0, "synthetic", 1, 0, w, w + 1000, "synthetic",
                         '{"synthetic":true}'))
        conn.execute("BEGIN")
        conn.executemany(sql, rows)
        conn.execute("COMMIT")
        done += len(rows)
        if progress:
            progress(done)
    for _, index_sql in indexes:
        conn.execute(index_sql)
    conn.execute("ANALYZE")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    conn.close()
    return Dataset(path, done, venues, people, start_ms, end_ms, keys)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.dataset", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--checkins", type=int, default=1_000_000)
    parser.add_argument("--venues", type=int, default=3000)
    parser.add_argument("--people", type=int, default=200_000)
    parser.add_argument("--days", type=int, default=28)
    args = parser.parse_args(argv)
    t0 = time.perf_counter()
    ds = generate(args.out, args.checkins, venues=args.venues, people=args.people, days=args.days,
                  progress=lambda n: print(f"\r{n:,} rows", end="", file=sys.stderr, flush=True))
    print(f"\n{ds.checkins:,} check-ins, {ds.venues} venues, {ds.people:,} people in {args.out}"
          f" ({time.perf_counter() - t0:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
