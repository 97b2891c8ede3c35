"""The storage port on PostgreSQL (psycopg 3 and its connection pool): check-ins
partitioned by month, and retention.

``PostgresStorage`` implements the same :class:`server.storage.Storage` port as
``SqliteStorage``, with the same answers: a record is stored once by (station, seq), a
repeat with the same signature is acked again, a different record under a stored number
is a ``seq_conflict``, a clock record corrects earlier unsynced check-ins of its boot.

Its schema (numbered migrations, ``checkin_keys``), its month partitions and their
retention are in server/storage/postgres_schema.py; contact tracing on it
(``PostgresTracer``) belongs to the tracing feature, server/checkins/postgres_tracer.py.

Every other server module keeps its tables (accounts, venue roles, audit trail, fleet
status, rosters, the dashboards' roll-up, ...) in the same database through ``.sql``
(server/storage/sql.py), creating them at start as on SQLite (docs/postgresql.md).
``open_configured`` / ``open_storage_url`` open whichever engine server.toml names.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

try:
    import psycopg
    from psycopg import sql
    from psycopg_pool import ConnectionPool, PoolTimeout
except ImportError:  # a SQLite-only install: open_storage_url still serves SQLite
    psycopg = None

from qrgate import persons, protocol
from qrgate.errors import UserError
from server.storage import postgres_schema as schema
from server.storage.port import IngestWindow, StationInfo, StoreResult, checkin_out_of_window, clock_out_of_window
from server.storage.sql import PostgresDatabase, configure_connection
from server.storage.sqlite import SqliteStorage, record_runs

DAY_MS = 86_400_000

logger = logging.getLogger(__name__)

PG_BIGINT = (-(2**63), 2**63 - 1)

_CHECKIN_COLUMNS = ("station_id", "seq", "venue_id", "direction", "kind", "person_key", "id_number", "name", "birth",
                    "sex", "wall_ms", "mono_ms", "boot_id", "clock_synced", "time_corrected", "wall_ms_station",
                    "received_ms", "sig", "record")


def _column_text(value: str) -> str:
    # PostgreSQL text cannot hold NUL; the signed record (kept whole in ``record``, where
    # JSON escapes it) stays the proof, the searchable column gets U+FFFD instead.
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


class PostgresStorage:
    """The check-in core in PostgreSQL; thread-safe (a pool of connections).

    ``dsn`` is a libpq connection string or ``postgresql://`` URL. ``data_dir`` is the
    server's local folder for what is not in the database (the pass-signing key, export
    files), as the SQLite file's folder is; ``clock`` gives the time in seconds (tests
    pass a fixed one).
    """

    def __init__(self, dsn: str, *, data_dir: str | Path | None = None, min_connections: int = 1,
                 max_connections: int = 8, clock: Callable[[], float] = time.time):
        if psycopg is None:
            raise UserError("PostgreSQL needs psycopg and psycopg-pool: pip install 'qrgate[postgresql]'")
        self.dsn = dsn
        self.data_dir = Path(data_dir) if data_dir is not None else None
        self.clock = clock
        self._months: set[int] = set()
        self._months_lock = threading.Lock()
        try:  # one plain connection first: the pool would only say it timed out
            psycopg.connect(dsn, connect_timeout=10, application_name="qrgate-server").close()
        except psycopg.Error as exc:
            reason = " ".join(line.strip() for line in str(exc).splitlines() if line.strip()) or type(exc).__name__
            raise UserError(f"cannot connect to PostgreSQL at {_safe_dsn(dsn)}: {reason}") from None
        self.pool = ConnectionPool(dsn, min_size=min_connections, max_size=max_connections, open=False,
                                   kwargs={"application_name": "qrgate-server"}, configure=configure_connection)
        self.sql = PostgresDatabase(self.pool)
        try:
            self.pool.open(wait=True, timeout=30)
        except PoolTimeout as exc:
            self.pool.close()
            raise UserError(f"cannot connect to PostgreSQL at {_safe_dsn(dsn)}: {exc}") from None
        self.migrate()
        self.ensure_months_ahead()

    def close(self) -> None:
        self.pool.close()

    # --- schema ---
    def migrate(self) -> list[int]:
        """Apply the numbered steps not yet recorded; return the ones applied here."""
        with self.pool.connection() as conn:
            return schema.migrate(conn)

    def schema_versions(self) -> list[int]:
        with self.pool.connection() as conn:
            return schema.schema_versions(conn)

    # --- partitions ---
    def partitions(self) -> list[tuple[str, int, int]]:
        """(name, first ms, end ms) of every month partition, oldest first."""
        with self.pool.connection() as conn:
            return schema.list_partitions(conn)

    def ensure_months_ahead(self) -> None:
        now = schema.month_of(self._now_ms())
        self.ensure_partitions(range(now, now + schema.AHEAD_MONTHS + 1))

    def ensure_partitions(self, months: Iterable[int]) -> list[str]:
        """Make the partitions of these months if missing, moving their rows out of the
        default partition; return the names made here."""
        wanted = sorted(set(months) - self._months)
        if not wanted:
            return []
        with self.pool.connection() as conn:
            existing, made = schema.make_partitions(conn, wanted)
        with self._months_lock:
            self._months.update(existing)
            self._months.update(wanted)
        return made

    def _months_to_make(self, walls: Iterable[int]) -> set[int]:
        now = self._now_ms()
        lo, hi = now - schema.PARTITION_PAST_DAYS * DAY_MS, now + schema.PARTITION_FUTURE_DAYS * DAY_MS
        return {schema.month_of(w) for w in walls if lo <= w <= hi} - self._months

    # --- the Storage port ---
    def add_venue(self, name: str, kind: str = "", address: str = "") -> int:
        name = _column_text(name.strip())
        if not name:
            raise UserError("venue name must not be empty")
        with self.pool.connection() as conn:
            return conn.execute(
                "INSERT INTO venues (name, kind, address, created_ms) VALUES (%s, %s, %s, %s) RETURNING id",
                [name, _column_text(kind), _column_text(address), self._now_ms()]).fetchone()[0]

    def add_station(self, station_id: str, public_key: str, venue_id: int) -> None:
        if not protocol.STATION_ID_RE.match(station_id):
            raise UserError(
                f"station id {station_id!r} must be 3-63 characters of a-z, 0-9 and '-', starting with a letter or digit"
            )
        protocol.public_key_from_text(public_key)  # refuse a key that is not one
        now = self._now_ms()
        with self.pool.connection() as conn:
            if not PG_BIGINT[0] <= venue_id <= PG_BIGINT[1] or conn.execute(
                    "SELECT 1 FROM venues WHERE id = %s", [venue_id]).fetchone() is None:
                raise UserError(f"no venue with id {venue_id}")
            conn.execute(
                "INSERT INTO stations (station_id, public_key, venue_id, status, created_ms)"
                " VALUES (%s, %s, %s, 'active', %s) ON CONFLICT (station_id) DO UPDATE SET"
                " public_key = excluded.public_key, venue_id = excluded.venue_id, status = 'active',"
                " created_ms = excluded.created_ms",
                [station_id, public_key, venue_id, now])
            # (Re-)registering starts the key history afresh: this key signs from seq 1.
            conn.execute("DELETE FROM station_keys WHERE station_id = %s", [station_id])
            conn.execute("INSERT INTO station_keys VALUES (%s, 1, %s, %s)", [station_id, public_key, now])

    def station_keys(self, station_id: str) -> list[tuple[int, str]]:
        """(from_seq, public key) of every key the station has had, oldest first."""
        with self.pool.connection() as conn:
            return [tuple(r) for r in conn.execute(
                "SELECT from_seq, public_key FROM station_keys WHERE station_id = %s ORDER BY from_seq",
                [station_id])]

    def rotate_station_key(self, station_id: str, public_key: str, from_seq: int) -> None:
        """From record ``from_seq`` on, the station signs with ``public_key``."""
        with self.pool.connection() as conn:
            # The station's row lock puts two rotations of one station one after the other.
            conn.execute("SELECT 1 FROM stations WHERE station_id = %s FOR UPDATE", [station_id])
            last = conn.execute("SELECT max(from_seq) FROM station_keys WHERE station_id = %s",
                                [station_id]).fetchone()[0]
            if last is not None and from_seq <= last:
                raise UserError(f"a key rotation must start after seq {last}, not at {from_seq}")
            if conn.execute("SELECT 1 FROM station_keys WHERE public_key = %s", [public_key]).fetchone():
                raise UserError("this key was already used by a station")
            conn.execute("INSERT INTO station_keys VALUES (%s, %s, %s, %s)",
                         [station_id, from_seq, public_key, self._now_ms()])
            conn.execute("UPDATE stations SET public_key = %s WHERE station_id = %s", [public_key, station_id])

    def station(self, station_id: str) -> StationInfo | None:
        if not protocol.STATION_ID_RE.match(station_id):
            return None  # no station has such a name (and text with NUL cannot reach PostgreSQL)
        with self.pool.connection() as conn:
            row = conn.execute("SELECT station_id, public_key, venue_id, status FROM stations WHERE station_id = %s",
                               [station_id]).fetchone()
        return StationInfo(*row) if row else None

    def store_records(self, station: StationInfo, records: Iterable[Mapping[str, Any]],
                      window: IngestWindow | None = None) -> StoreResult:
        """Store verified records (check-ins with their opened ``person``, and clock
        records) in one transaction; return what to ack. With a ``window``, a record
        whose time is outside it is refused as ``bad_time`` (SqliteStorage.store_records)."""
        records = list(records)
        for attempt in range(3):
            try:
                return self._store_once(station, records, window)
            except psycopg.errors.CheckViolation:
                # Another worker attached the partition of these rows' month while this
                # statement still routed them to the default partition: the transaction
                # rolled back whole; once more, now that the partition exists.
                if attempt == 2:
                    raise
                logger.info("a partition was attached under this batch of %s; storing it again", station.station_id)
            except psycopg.errors.DeadlockDetected:
                # Two writers took the dashboards' (venue, day) rows in opposite orders
                # (a station with a wrong clock beside one with a right one): PostgreSQL
                # rolled this transaction back whole and let the other go on.
                if attempt == 2:
                    raise
                logger.info("a deadlock with another writer rolled back a batch of %s; storing it again",
                            station.station_id)
        raise AssertionError("unreachable")

    def _store_once(self, station: StationInfo, records: list[Mapping[str, Any]],
                    window: IngestWindow | None) -> StoreResult:
        stored: list[int] = []
        refused: dict[int, str] = {}
        new = 0
        received = self._now_ms()
        bounds = window.bounds(received) if window is not None else None
        walls: list[int] = []
        with self.pool.connection() as conn:
            for clock, run in record_runs(records):
                if clock:
                    outcomes = [self._insert_clock(conn, station, rec, received, walls, bounds) for rec in run]
                else:
                    outcomes = self._insert_checkins(conn, station, run, received, walls, bounds)
                for rec, outcome in zip(run, outcomes):
                    if outcome == "new":
                        new += 1
                        stored.append(rec["seq"])
                    elif outcome == "same":
                        stored.append(rec["seq"])
                    else:
                        refused[rec["seq"]] = outcome
        months = self._months_to_make(walls)
        if months:
            now = schema.month_of(self._now_ms())
            self.ensure_partitions(months | set(range(now, now + schema.AHEAD_MONTHS + 1)))
        return StoreResult(tuple(stored), new, refused)

    @staticmethod
    def _as_received(rec: Mapping[str, Any]) -> str:
        return SqliteStorage._as_received(rec)

    def _insert_checkins(self, conn, station: StationInfo, recs: list[Mapping[str, Any]], received: int,
                         walls: list[int], bounds: tuple[int, int] | None = None) -> list[str]:
        # Numbers are within what the protocol allows (qrgate.protocol.validate_record):
        # 64-bit, and times within 2**53 ms, so mono + base fits as well.
        outcomes = [""] * len(recs)
        unsynced = sorted({r["boot"] for r, o in zip(recs, outcomes) if not o and not r["sync"]})
        bases: dict[str, int] = {}
        if unsynced:
            bases = dict(conn.execute(
                "SELECT DISTINCT ON (boot_id) boot_id, base_ms FROM clock_bases"
                " WHERE station_id = %s AND boot_id = ANY(%s) ORDER BY boot_id, seq DESC",
                [station.station_id, unsynced]).fetchall())
        rows: dict[int, tuple] = {}  # first record of each seq, by seq
        for n, rec in enumerate(recs):
            if outcomes[n] or rec["seq"] in rows:
                continue
            person = rec["person"]
            wall, corrected = rec["ts"], False
            if not rec["sync"] and rec["boot"] in bases:
                wall, corrected = rec["mono"] + bases[rec["boot"]], True
            if bounds is not None and checkin_out_of_window(rec, wall if corrected else None, bounds):
                outcomes[n] = "bad_time"
                continue
            key = persons.person_key(rec["kind"], person["id"], person["name"], person["birth"])
            rows[rec["seq"]] = (
                station.station_id, rec["seq"], station.venue_id, rec["dir"], rec["kind"], _column_text(key),
                _column_text(person["id"]), _column_text(person["name"]), _column_text(person["birth"]),
                _column_text(person["sex"]), wall, rec["mono"], _column_text(rec["boot"]), rec["sync"], corrected,
                rec["ts"], received, rec["sig"], self._as_received(rec),
            )
        seqs = sorted(rows)  # one order for every writer: no deadlock between two batches
        new_seqs: set[int] = set()
        if seqs:
            new_seqs = {r[0] for r in conn.execute(
                "INSERT INTO checkin_keys (station_id, seq, sig, wall_ms)"
                " SELECT %s, s, g, w FROM unnest(%s::bigint[], %s::text[], %s::bigint[]) AS u(s, g, w)"
                " ON CONFLICT DO NOTHING RETURNING seq",
                [station.station_id, seqs, [rows[s][17] for s in seqs], [rows[s][10] for s in seqs]]).fetchall()}
        if new_seqs:
            with conn.cursor().copy(sql.SQL("COPY checkins ({}) FROM STDIN").format(
                    sql.SQL(", ").join(map(sql.Identifier, _CHECKIN_COLUMNS)))) as copy:
                for s in seqs:
                    if s in new_seqs:
                        copy.write_row(rows[s])
                        walls.append(rows[s][10])
        # Repeats and numbers stored before: the same signature is the same record
        # (Ed25519 is deterministic), a harmless repeat; anything else is a conflict.
        # Read after the insert, so a concurrent writer of the same record has committed.
        others = sorted({r["seq"] for r, o in zip(recs, outcomes) if not o} - new_seqs)
        stored_sigs = dict(conn.execute(
            "SELECT seq, sig FROM checkin_keys WHERE station_id = %s AND seq = ANY(%s)",
            [station.station_id, others]).fetchall()) if others else {}
        first_seen: set[int] = set()
        for n, rec in enumerate(recs):
            if outcomes[n]:
                continue
            seq = rec["seq"]
            if seq in new_seqs and seq not in first_seen:
                first_seen.add(seq)
                outcomes[n] = "new"
                continue
            stored_sig = rows[seq][17] if seq in new_seqs else stored_sigs.get(seq)
            outcomes[n] = "same" if stored_sig == rec["sig"] else "seq_conflict"
        return outcomes

    def _insert_clock(self, conn, station: StationInfo, rec: Mapping[str, Any], received: int,
                      walls: list[int], bounds: tuple[int, int] | None = None) -> str:
        if bounds is not None:
            # Outside the window itself, or moving a check-in of its boot stored before it
            # (unsynced) outside the window: refused (SqliteStorage._clock_refused).
            lo, hi = bounds
            base = rec["base"]
            if clock_out_of_window(rec, bounds) or conn.execute(
                    "SELECT 1 FROM checkins WHERE station_id = %s AND boot_id = %s AND NOT clock_synced"
                    " AND (mono_ms < %s OR mono_ms > %s) LIMIT 1",
                    [station.station_id, _column_text(rec["boot"]), lo - base, hi - base]).fetchone():
                return "bad_time"
        inserted = conn.execute(
            "INSERT INTO clock_bases (station_id, seq, boot_id, base_ms, sig, record, received_ms)"
            " VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT DO NOTHING RETURNING 1",
            [station.station_id, rec["seq"], _column_text(rec["boot"]), rec["base"], rec["sig"],
             self._as_received(rec), received]).fetchone()
        if inserted is None:
            row = conn.execute("SELECT sig FROM clock_bases WHERE station_id = %s AND seq = %s",
                               [station.station_id, rec["seq"]]).fetchone()
            return "same" if row and row[0] == rec["sig"] else "seq_conflict"
        # Check-ins of that boot made before the clock synced get their true time; a
        # corrected row may move to another partition, and its key keeps the new time.
        moved = conn.execute(
            "WITH moved AS (UPDATE checkins SET wall_ms = mono_ms + %s, time_corrected = true"
            "   WHERE station_id = %s AND boot_id = %s AND NOT clock_synced"
            "   RETURNING seq, wall_ms)"
            " UPDATE checkin_keys k SET wall_ms = moved.wall_ms FROM moved"
            " WHERE k.station_id = %s AND k.seq = moved.seq RETURNING k.wall_ms",
            [rec["base"], station.station_id, _column_text(rec["boot"]), station.station_id]).fetchall()
        walls.extend(r[0] for r in moved)
        return "new"

    def latest_checkins(self, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]:
        where, params = ("WHERE c.id < %s", [before_id]) if before_id else ("", [])
        query = (
            "SELECT c.id, c.station_id, c.seq, c.venue_id, v.name AS venue, c.direction, c.kind, c.id_number,"
            " c.name, c.birth, c.wall_ms, c.clock_synced, c.time_corrected, c.wall_ms_station, c.received_ms"
            f" FROM checkins c JOIN venues v ON v.id = c.venue_id {where} ORDER BY c.id DESC LIMIT %s"
        )
        with self.pool.connection() as conn:
            cur = conn.execute(query, [*params, limit])
            names = [d.name for d in cur.description]
            return [dict(zip(names, r)) for r in cur.fetchall()]

    def count_checkins(self, station_id: str | None = None) -> int:
        # checkin_keys has one small row per check-in: counting it spares the partitions.
        with self.pool.connection() as conn:
            if station_id is None:
                return conn.execute("SELECT count(*) FROM checkin_keys").fetchone()[0]
            return conn.execute("SELECT count(*) FROM checkin_keys WHERE station_id = %s",
                                [station_id]).fetchone()[0]

    def count_refusal(self, station_id: str, reason: str) -> None:
        with self.pool.connection() as conn:
            conn.execute(
                "INSERT INTO refusals (station_id, reason, count, last_ms) VALUES (%s, %s, 1, %s)"
                " ON CONFLICT (station_id, reason) DO UPDATE SET count = refusals.count + 1,"
                " last_ms = excluded.last_ms",
                [_column_text(station_id), reason, self._now_ms()])

    def refusal_counts(self) -> dict[str, int]:
        with self.pool.connection() as conn:
            return {r[0]: r[1] for r in conn.execute("SELECT reason, sum(count)::bigint FROM refusals GROUP BY reason")}

    # --- retention ---
    def delete_older_than(self, days: int, *, now_ms: int | None = None) -> int:
        """Retention: drop the month partitions wholly older than ``days`` days, delete
        the older rows of the boundary month and the default partition; return how many
        check-ins went. Each run is recorded in ``retention_runs``."""
        if days < 1:
            raise ValueError("retention must keep at least one day")
        now = now_ms or self._now_ms()
        cutoff = now - days * DAY_MS
        with self.pool.connection() as conn:
            deleted, dropped = schema.delete_before(conn, cutoff)
            conn.execute("INSERT INTO retention_runs (ran_ms, cutoff_ms, rows_deleted, partitions_dropped)"
                         " VALUES (%s, %s, %s, %s)", [now, cutoff, deleted, dropped])
        with self._months_lock:
            self._months -= {schema.month_of_name(n) for n in dropped}
        logger.info("retention: %d check-ins older than %d days deleted, partitions dropped: %s",
                    deleted, days, ", ".join(dropped) or "none")
        return deleted

    def retention_runs(self) -> list[dict[str, Any]]:
        with self.pool.connection() as conn:
            cur = conn.execute("SELECT ran_ms, cutoff_ms, rows_deleted, partitions_dropped FROM retention_runs"
                               " ORDER BY id")
            return [dict(zip(("ran_ms", "cutoff_ms", "rows_deleted", "partitions_dropped"), r)) for r in cur]

    def _now_ms(self) -> int:
        return int(self.clock() * 1000)


def open_storage_url(url: str | Path, *, data_dir: str | Path | None = None):
    """The storage a ``[server] database`` setting names: ``postgresql://...`` (or
    ``postgres://``) opens PostgreSQL, with ``data_dir`` as its local folder; a path or
    ``sqlite:///path`` opens that SQLite file."""
    text = str(url).strip()
    if text.startswith(("postgresql://", "postgres://")):
        return PostgresStorage(text, data_dir=data_dir)
    if text.startswith("sqlite:///"):
        text = text[len("sqlite:///"):]  # sqlite:///relative or sqlite:////absolute
    elif "://" in text:
        raise UserError(f"database {_safe_dsn(text)!r}: use a file path, sqlite:///path or postgresql://...")
    if not text:
        raise UserError("database must not be empty")
    return SqliteStorage(text)


def open_configured(config):
    """The storage a server.toml names: ``[server] database`` if set, else the SQLite
    file in the data directory (every command and service opens it this way)."""
    if config.server.database:
        return open_storage_url(config.server.database, data_dir=config.data_dir)
    return SqliteStorage(config.database)


def _safe_dsn(dsn: str) -> str:
    """The DSN without its password, for messages."""
    if psycopg is None:
        return "(a PostgreSQL connection string)"
    try:
        info = psycopg.conninfo.conninfo_to_dict(dsn)
    except psycopg.ProgrammingError:
        return "(an unreadable connection string)"
    info.pop("password", None)
    return " ".join(f"{k}={v}" for k, v in sorted(info.items()))
