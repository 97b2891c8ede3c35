"""The server's storage on SQLite: one file, sqlite-utils, WAL.

Check-ins are stored idempotently by (station, seq): the same signed record arriving
twice is stored once; a different record under a stored (station, seq) is a conflict.
"""

from __future__ import annotations

import functools
import itertools
import logging
import sqlite3
import threading
import time
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

import sqlite_utils

from qrgate import persons, protocol
from qrgate.errors import UserError
from server.storage.port import (IngestWindow, StationInfo, StoreResult, checkin_out_of_window,
                                 clock_out_of_window)
from server.storage.sql import SqliteDatabase

log = logging.getLogger(__name__)


class SqliteStorage:
    """All server data in one SQLite file; one connection per thread."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.path.parent  # the server's local files live beside its database
        self._local = threading.local()
        self.sql = SqliteDatabase(lambda: self.db.conn)
        self._create()

    @property
    def db(self) -> sqlite_utils.Database:
        db = getattr(self._local, "db", None)
        if db is None:
            conn = sqlite3.connect(self.path, isolation_level=None, timeout=10)
            conn.execute("PRAGMA journal_mode=WAL")
            # The ack to the station follows the commit: it must survive a power cut.
            conn.execute("PRAGMA synchronous=FULL")
            conn.execute("PRAGMA foreign_keys=ON")
            db = sqlite_utils.Database(conn)
            self._local.db = db
        return db

    def _create(self) -> None:
        db = self.db
        if "venues" not in db.table_names():
            db["venues"].create(
                {"id": int, "name": str, "kind": str, "address": str, "created_ms": int}, pk="id"
            )
        if "stations" not in db.table_names():
            db["stations"].create(
                {"station_id": str, "public_key": str, "venue_id": int, "status": str, "created_ms": int},
                pk="station_id",
                foreign_keys=[("venue_id", "venues", "id")],
            )
        if "station_keys" not in db.table_names():
            # Every key a station has had: a record is checked with the key whose
            # from_seq is the largest not above the record's seq (key rotation).
            db["station_keys"].create(
                {"station_id": str, "from_seq": int, "public_key": str, "added_ms": int},
                pk=("station_id", "from_seq"),
            )
        if "checkins" not in db.table_names():
            db["checkins"].create(
                {
                    "id": int,
                    "station_id": str,
                    "seq": int,
                    "venue_id": int,
                    "direction": str,
                    "kind": str,
                    "person_key": str,
                    "id_number": str,
                    "name": str,
                    "birth": str,
                    "sex": str,
                    "wall_ms": int,
                    "mono_ms": int,
                    "boot_id": str,
                    "clock_synced": bool,
                    # 1 when wall_ms was corrected from the station's monotonic clock
                    # after its clock synchronised; wall_ms_station keeps what it said.
                    "time_corrected": bool,
                    "wall_ms_station": int,
                    "received_ms": int,
                    "sig": str,
                    "record": str,  # the signed record as received, for later proof
                },
                pk="id",
                not_null={"station_id", "seq", "venue_id", "sig", "record"},
                defaults={"time_corrected": 0},
            )
            db["checkins"].create_index(["station_id", "seq"], unique=True)
        self._create_scan_indexes()
        # The history of all venues and retention read check-ins in time order.
        db.execute("CREATE INDEX IF NOT EXISTS idx_checkins_wall_ms ON checkins (wall_ms)")
        if "clock_bases" not in db.table_names():
            # Signed clock records: during (station, boot), wall time = mono + base_ms.
            db["clock_bases"].create(
                {"station_id": str, "seq": int, "boot_id": str, "base_ms": int, "sig": str,
                 "record": str, "received_ms": int},
                pk=("station_id", "seq"),
            )
            db["clock_bases"].create_index(["station_id", "boot_id"])
        if "refusals" not in db.table_names():
            db["refusals"].create(
                {"station_id": str, "reason": str, "count": int, "last_ms": int}, pk=("station_id", "reason")
            )

    def _create_scan_indexes(self) -> None:
        """The check-ins of a venue, and of a person, in time order: (venue_id, wall_ms, id)
        and (person_key, wall_ms, id), each carrying the columns a trace reads of the
        others' scans (person or venue, and direction), so tracing reads these indexes
        alone and not the rows, which are large (the signed record is kept).

        A database made before these indexes has the same two without the carried
        columns; they are replaced once, in one transaction (about 30 s a 10 million
        check-ins), while other processes opening the file wait for it.
        """
        wanted = {"idx_checkins_venue_scan": "venue_id, wall_ms, id, person_key, direction",
                  "idx_checkins_person_scan": "person_key, wall_ms, id, venue_id, direction"}
        replaced = {"idx_checkins_venue_id_wall_ms", "idx_checkins_person_key_wall_ms"}
        have = {r[0] for r in self.db.execute("SELECT name FROM sqlite_master WHERE type = 'index'"
                                              " AND tbl_name = 'checkins'")}
        if set(wanted) <= have and not have & replaced:
            return
        if have & replaced:
            log.info("rebuilding the check-in indexes for tracing in %s (once)", self.path)
        conn = self.db.conn
        conn.execute("PRAGMA busy_timeout = 900000")  # another process may be building them
        try:
            self.sql.schema("; ".join([*(f"CREATE INDEX IF NOT EXISTS {name} ON checkins ({columns})"
                                         for name, columns in wanted.items()),
                                       *(f"DROP INDEX IF EXISTS {name}" for name in sorted(replaced))]))
        finally:
            conn.execute("PRAGMA busy_timeout = 10000")

    def add_venue(self, name: str, kind: str = "", address: str = "") -> int:
        name = name.strip()
        if not name:
            raise UserError("venue name must not be empty")
        table = self.db["venues"]
        table.insert({"name": name, "kind": kind, "address": address, "created_ms": _now_ms()})
        return int(table.last_pk)

    def add_station(self, station_id: str, public_key: str, venue_id: int) -> None:
        if not protocol.STATION_ID_RE.match(station_id):
            raise UserError(
                f"station id {station_id!r} must be 3-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
            )
        protocol.public_key_from_text(public_key)  # refuse a key that is not one
        if self.db["venues"].count_where("id = ?", [venue_id]) == 0:
            raise UserError(f"no venue with id {venue_id}")
        self.db["stations"].upsert(
            {
                "station_id": station_id,
                "public_key": public_key,
                "venue_id": venue_id,
                "status": "active",
                "created_ms": _now_ms(),
            },
            pk="station_id",
        )
        # (Re-)registering starts the key history afresh: this key signs from seq 1.
        self.db.execute("DELETE FROM station_keys WHERE station_id = ?", [station_id])
        self.db["station_keys"].insert(
            {"station_id": station_id, "from_seq": 1, "public_key": public_key, "added_ms": _now_ms()}
        )

    def station_keys(self, station_id: str) -> list[tuple[int, str]]:
        """(from_seq, public key) of every key the station has had, oldest first."""
        return [tuple(r) for r in self.db.execute(
            "SELECT from_seq, public_key FROM station_keys WHERE station_id = ? ORDER BY from_seq", [station_id])]

    def rotate_station_key(self, station_id: str, public_key: str, from_seq: int) -> None:
        """From record ``from_seq`` on, the station signs with ``public_key``."""
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            last = conn.execute("SELECT max(from_seq) FROM station_keys WHERE station_id = ?", [station_id]).fetchone()[0]
            if last is not None and from_seq <= last:
                raise UserError(f"a key rotation must start after seq {last}, not at {from_seq}")
            used = conn.execute("SELECT 1 FROM station_keys WHERE public_key = ?", [public_key]).fetchone()
            if used:
                raise UserError("this key was already used by a station")
            conn.execute("INSERT INTO station_keys VALUES (?, ?, ?, ?)", [station_id, from_seq, public_key, _now_ms()])
            conn.execute("UPDATE stations SET public_key = ? WHERE station_id = ?", [public_key, station_id])
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise

    def station(self, station_id: str) -> StationInfo | None:
        row = self.db.execute(
            "SELECT station_id, public_key, venue_id, status FROM stations WHERE station_id = ?", [station_id]
        ).fetchone()
        return StationInfo(*row) if row else None

    def store_records(self, station: StationInfo, records: Iterable[Mapping[str, Any]],
                      window: IngestWindow | None = None) -> StoreResult:
        """Store verified records (check-ins with their opened ``person``, and clock
        records) in one transaction; return what to ack. With a ``window`` (the bridge
        passes one; server-side sources stamp their own times), a record whose time is
        outside it is refused as ``bad_time``."""
        stored: list[int] = []
        refused: dict[int, str] = {}
        new = 0
        received = _now_ms()
        bounds = window.bounds(received) if window is not None else None
        conn = self.db.conn
        conn.execute("BEGIN IMMEDIATE")
        try:
            for clock, run in record_runs(records):
                if clock:
                    table = "clock_bases"
                    if bounds is not None:
                        run = [rec for rec in run if not self._clock_refused(conn, station, rec, bounds, refused)]
                    inserted = sum(self._insert_clock(conn, station, rec, received) for rec in run)
                else:
                    table = "checkins"
                    inserted, run = self._insert_checkins(conn, station, run, received, bounds, refused)
                new += inserted
                if inserted == len(run):
                    stored.extend(rec["seq"] for rec in run)
                    continue
                # Some were there already: the same signature means the same record
                # (Ed25519 is deterministic), a harmless repeat; anything else conflicts.
                for rec in run:
                    row = conn.execute(f"SELECT sig FROM {table} WHERE station_id = ? AND seq = ?",
                                       (station.station_id, rec["seq"])).fetchone()
                    if row and row[0] == rec["sig"]:
                        stored.append(rec["seq"])
                    else:
                        refused[rec["seq"]] = "seq_conflict"
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return StoreResult(tuple(stored), new, refused)

    @staticmethod
    def _clock_refused(conn, station: StationInfo, rec: Mapping[str, Any], bounds: tuple[int, int],
                       refused: dict[int, str]) -> bool:
        """A clock record outside the window, or one whose base would move a check-in of
        its boot stored before it (unsynced) outside the window, is refused."""
        lo, hi = bounds
        base = rec["base"]
        if clock_out_of_window(rec, bounds) or conn.execute(
                "SELECT 1 FROM checkins WHERE station_id = ? AND boot_id = ? AND clock_synced = 0"
                " AND (mono_ms < ? OR mono_ms > ?) LIMIT 1",
                (station.station_id, rec["boot"], lo - base, hi - base)).fetchone():
            refused[rec["seq"]] = "bad_time"
            return True
        return False

    @staticmethod
    def _as_received(rec: Mapping[str, Any]) -> str:
        # The opened person is not part of what the station signed: keep the sealed form.
        if "sealed" in rec:
            rec = {k: v for k, v in rec.items() if k != "person"}
        return protocol.canonical_json(rec).decode("utf-8")

    def _insert_checkins(self, conn, station: StationInfo, recs: list[Mapping[str, Any]], received: int,
                         bounds: tuple[int, int] | None, refused: dict[int, str]) -> tuple[int, list]:
        """INSERT OR IGNORE a run of check-ins; return how many were new, and the run
        without those refused (into ``refused``) for their time."""
        rows = []
        kept = []
        for rec in recs:
            person = rec["person"]
            wall, corrected = rec["ts"], False
            if not rec["sync"]:
                base = conn.execute(
                    "SELECT base_ms FROM clock_bases WHERE station_id = ? AND boot_id = ? ORDER BY seq DESC LIMIT 1",
                    (station.station_id, rec["boot"]),
                ).fetchone()
                if base:
                    wall, corrected = rec["mono"] + base[0], True
            if bounds is not None and checkin_out_of_window(rec, wall if corrected else None, bounds):
                refused[rec["seq"]] = "bad_time"
                continue
            kept.append(rec)
            rows.append((
                station.station_id, rec["seq"], station.venue_id, rec["dir"], rec["kind"],
                persons.person_key(rec["kind"], person["id"], person["name"], person["birth"]),
                person["id"], person["name"], person["birth"], person["sex"],
                wall, rec["mono"], rec["boot"], rec["sync"], corrected, rec["ts"], received, rec["sig"],
                self._as_received(rec),
            ))
        # Many rows per statement: one step of SQLite's (with Python's lock released) for
        # up to INSERT_ROWS rows, where executemany would take and give back the lock for
        # every row, and wait for it behind the verification threads each time.
        inserted = 0
        for first in range(0, len(rows), INSERT_ROWS):
            chunk = rows[first:first + INSERT_ROWS]
            cur = conn.execute(_insert_checkins_sql(len(chunk)), [v for row in chunk for v in row])
            inserted += cur.rowcount  # the rows of this statement, not what triggers write
        return inserted, kept

    def _insert_clock(self, conn, station: StationInfo, rec: Mapping[str, Any], received: int) -> bool:
        cur = conn.execute(
            "INSERT OR IGNORE INTO clock_bases (station_id, seq, boot_id, base_ms, sig, record, received_ms)"
            " VALUES (?,?,?,?,?,?,?)",
            (station.station_id, rec["seq"], rec["boot"], rec["base"], rec["sig"], self._as_received(rec), received),
        )
        if cur.rowcount != 1:
            return False
        # Check-ins of that boot made before the clock synced get their true time.
        conn.execute(
            "UPDATE checkins SET wall_ms = mono_ms + ?, time_corrected = 1"
            " WHERE station_id = ? AND boot_id = ? AND clock_synced = 0",
            (rec["base"], station.station_id, rec["boot"]),
        )
        return True

    def latest_checkins(self, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE c.id < ?", [before_id]) if before_id else ("", [])
        sql = (
            "SELECT c.id, c.station_id, c.seq, c.venue_id, v.name AS venue, c.direction, c.kind, c.id_number,"
            " c.name, c.birth, c.wall_ms, c.clock_synced, c.time_corrected, c.wall_ms_station, c.received_ms"
            f" FROM checkins c JOIN venues v ON v.id = c.venue_id {where} ORDER BY c.id DESC LIMIT ?"
        )
        return [dict(r) for r in self.db.query(sql, [*params, limit])]

    def count_checkins(self, station_id: str | None = None) -> int:
        if station_id is None:
            return self.db["checkins"].count
        return self.db["checkins"].count_where("station_id = ?", [station_id])

    def count_refusal(self, station_id: str, reason: str) -> None:
        self.db.execute(
            "INSERT INTO refusals (station_id, reason, count, last_ms) VALUES (?, ?, 1, ?)"
            " ON CONFLICT (station_id, reason) DO UPDATE SET count = count + 1, last_ms = excluded.last_ms",
            [station_id, reason, _now_ms()],
        )

    def refusal_counts(self) -> dict[str, int]:
        return {
            r["reason"]: r["n"]
            for r in self.db.query("SELECT reason, sum(count) AS n FROM refusals GROUP BY reason")
        }


def record_runs(records: Iterable[Mapping[str, Any]]) -> Iterator[tuple[bool, list[Mapping[str, Any]]]]:
    """A batch as runs in its order: (True, clock records) or (False, check-ins), so a
    storage writes each run of check-ins in few statements and applies a clock record in
    its place (it corrects the check-ins stored before it and sets those after it)."""
    for clock, run in itertools.groupby(records, key=lambda rec: rec.get("type") == "clock"):
        yield clock, list(run)


INSERT_ROWS = 50  # x 19 values = 950: within the 999 parameters SQLite before 3.32 allows


@functools.lru_cache(maxsize=INSERT_ROWS)
def _insert_checkins_sql(rows: int) -> str:
    values = ",".join(["(?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)"] * rows)
    return ("INSERT OR IGNORE INTO checkins (station_id, seq, venue_id, direction, kind, person_key,"
            " id_number, name, birth, sex, wall_ms, mono_ms, boot_id, clock_synced, time_corrected,"
            f" wall_ms_station, received_ms, sig, record) VALUES {values}")


def _now_ms() -> int:
    return int(time.time() * 1000)
