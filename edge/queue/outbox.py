"""The station's signed, durable outbox (SQLite, WAL) and its memory of who came in.

A record is signed and committed (fsync'd) before the pipeline shows the green light,
and leaves the outbox only when the server says it stored it. The same transaction
updates the presence table the policy reads, so a crash can never leave a check-in
counted by the policy but missing from the outbox, or the other way round.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import os
import sqlite3
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.policy import Instant, LastCheckin
from qrgate import protocol
from qrgate.errors import DriverError

logger = logging.getLogger(__name__)

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,          -- the signed record, canonical JSON
    created_wall_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refused (
    seq INTEGER PRIMARY KEY,
    body BLOB NOT NULL,
    reason TEXT NOT NULL,
    refused_wall_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS presence (
    person_hash TEXT PRIMARY KEY, -- keyed hash: the id itself is not kept here
    direction TEXT NOT NULL,
    wall_s REAL NOT NULL,
    mono_s REAL NOT NULL,
    boot_id TEXT NOT NULL
);
"""


class OutboxError(DriverError):
    """The outbox cannot take a record (disk full, read-only, corrupt): show a fault."""


@dataclass(frozen=True, slots=True)
class Appended:
    seq: int
    body: bytes


def connect_sqlite(path: Path) -> sqlite3.Connection:
    """The outbox's usual connection: the standard library's SQLite, autocommit."""
    return sqlite3.connect(path, check_same_thread=False, isolation_level=None)


class Outbox:
    """Signed records waiting for the server, in one SQLite file.

    ``path`` is created with mode 0600. ``person_secret`` keys the hash under which
    presence is remembered. ``connect`` opens the file; anything with the
    ``sqlite3.Connection`` methods the outbox uses will do (the power-cut simulation in
    bench/powercut.py passes one that runs through a VFS that loses unsynced writes).
    """

    # Chosen by the power-cut simulation (docs/reliability.md): with WAL, only FULL
    # keeps every record whose green light was shown.
    JOURNAL_MODE = "WAL"
    SYNCHRONOUS = "FULL"

    def __init__(self, path: str | Path, *, station_id: str, key: Ed25519PrivateKey, person_secret: bytes,
                 connect: Callable[[Path], sqlite3.Connection] = connect_sqlite):
        self.path = Path(path)
        self._connect = connect
        self.station_id = station_id
        self._key = key
        self._secret = person_secret
        self._lock = threading.Lock()
        self.set_aside: Path | None = None  # a damaged outbox moved out of the way at start
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = self._open()
        except sqlite3.DatabaseError as exc:
            self._set_aside(exc)
            try:
                self._db = self._open()
            except sqlite3.DatabaseError as again:
                raise OutboxError(f"outbox {self.path}: {again}") from again
            # The old numbers are unknown now: continue above any number this station can
            # have used (the wall clock in ms is far above any count of scans), so nothing
            # new collides with a record the server already has.
            self._db.execute("INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)",
                             (str(max(1, int(time.time() * 1000))),))
        self._next_seq = self._load_next_seq()

    def _open(self) -> sqlite3.Connection:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        os.close(fd)
        db = self._connect(self.path)
        try:
            db.execute(f"PRAGMA journal_mode={self.JOURNAL_MODE}")
            # FULL: the WAL is fsync'd at every commit, so a power cut after the green
            # light cannot take the record with it.
            db.execute(f"PRAGMA synchronous={self.SYNCHRONOUS}")
            db.execute("PRAGMA busy_timeout=5000")
            verdict = db.execute("PRAGMA quick_check").fetchone()[0]
            if verdict != "ok":
                raise sqlite3.DatabaseError(f"integrity check: {verdict}")
            db.executescript(SCHEMA)
        except BaseException:
            db.close()
            raise
        return db

    def _set_aside(self, exc: Exception) -> None:
        """Keep a damaged outbox for recovery by hand: renamed, never deleted."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        target = self.path.with_name(f"{self.path.name}.damaged-{stamp}")
        for suffix in ("", "-wal", "-shm"):
            part = Path(str(self.path) + suffix)
            if part.exists():
                os.replace(part, Path(str(target) + suffix))
        self.set_aside = target
        logger.error("outbox %s is damaged (%s): moved to %s for recovery; starting a new outbox",
                     self.path, exc, target)

    def _load_next_seq(self) -> int:
        row = self._db.execute("SELECT value FROM meta WHERE key='next_seq'").fetchone()
        if row:
            return int(row[0])
        # First start (or meta lost): never reuse a number that may still be in the outbox.
        top = self._db.execute(
            "SELECT max(m) FROM (SELECT max(seq) m FROM outbox UNION ALL SELECT max(seq) FROM refused)"
        ).fetchone()[0]
        return (top or 0) + 1

    def person_hash(self, person_key: str) -> str:
        return hmac.new(self._secret, person_key.encode("utf-8"), hashlib.sha256).hexdigest()[:32]

    def last_checkin(self, person_hash: str) -> LastCheckin | None:
        with self._lock:
            row = self._db.execute(
                "SELECT direction, wall_s, mono_s, boot_id FROM presence WHERE person_hash=?", (person_hash,)
            ).fetchone()
        if row is None:
            return None
        return LastCheckin(row[0], Instant(row[1], row[2], row[3]))

    def append(self, fields: dict[str, Any], *, person_hash: str | None, now: Instant) -> Appended:
        """Number, sign and durably store one record; return once it is on disk.

        ``fields`` is the record without ``st``, ``seq``, ``v`` and ``sig``. A check-in
        updates the person's presence in the same transaction; a check-in made with an
        unsynced clock marks this boot as needing a clock record.
        """
        with self._lock:
            seq = self._next_seq
            record = protocol.sign_record(
                {**fields, "v": protocol.VERSION, "st": self.station_id, "seq": seq}, self._key
            )
            body = protocol.canonical_json(record)
            try:
                self._db.execute("BEGIN IMMEDIATE")
                self._db.execute(
                    "INSERT INTO outbox (seq, body, created_wall_ms) VALUES (?, ?, ?)",
                    (seq, body, int(now.wall_s * 1000)),
                )
                if person_hash is not None:
                    self._db.execute(
                        "INSERT OR REPLACE INTO presence VALUES (?, ?, ?, ?, ?)",
                        (person_hash, record["dir"], now.wall_s, now.mono_s, now.boot_id),
                    )
                if record["type"] == "checkin" and not record["sync"]:
                    self._db.execute("INSERT OR REPLACE INTO meta VALUES ('unsynced_boot', ?)", (record["boot"],))
                elif record["type"] == "clock":
                    self._db.execute("DELETE FROM meta WHERE key = 'unsynced_boot'")
                self._db.execute(
                    "INSERT OR REPLACE INTO meta VALUES ('next_seq', ?)", (str(seq + 1),)
                )
                self._db.execute("COMMIT")
            except sqlite3.Error as exc:
                self._rollback()
                raise OutboxError(f"outbox {self.path}: cannot store record: {exc}") from exc
            self._next_seq = seq + 1
        return Appended(seq, body)

    def unsynced_boot(self) -> str | None:
        """The boot id whose check-ins were made with an unsynced clock and await a clock record."""
        with self._lock:
            row = self._db.execute("SELECT value FROM meta WHERE key = 'unsynced_boot'").fetchone()
        return row[0] if row else None

    def forget_presence_before(self, wall_s: float) -> int:
        """Drop presence older than ``wall_s``: the policy no longer needs it (bus mode)."""
        with self._lock:
            cur = self._db.execute("DELETE FROM presence WHERE wall_s < ?", (wall_s,))
            return cur.rowcount

    def _rollback(self) -> None:
        try:
            self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass

    def pending(self, limit: int, after_seq: int = 0) -> list[tuple[int, bytes]]:
        """Oldest records still waiting for the server's ack, in sequence order."""
        with self._lock:
            return self._db.execute(
                "SELECT seq, body FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (after_seq, limit)
            ).fetchall()

    def mark_stored(self, seqs: list[int]) -> int:
        """The server stored these: forget them. Returns how many were still here."""
        if not seqs:
            return 0
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            cur = self._db.executemany("DELETE FROM outbox WHERE seq=?", [(s,) for s in seqs])
            self._db.execute("COMMIT")
            return cur.rowcount

    def mark_refused(self, refused: dict[int, str], now_wall_ms: int) -> None:
        """The server will never store these: keep them aside for inspection, stop sending."""
        if not refused:
            return
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            for seq, reason in refused.items():
                row = self._db.execute("SELECT body FROM outbox WHERE seq=?", (seq,)).fetchone()
                if row is None:
                    continue
                logger.error("server refused record %s/%d: %s", self.station_id, seq, reason)
                self._db.execute(
                    "INSERT OR REPLACE INTO refused VALUES (?, ?, ?, ?)", (seq, row[0], reason, now_wall_ms)
                )
                self._db.execute("DELETE FROM outbox WHERE seq=?", (seq,))
            self._db.execute("COMMIT")

    def backlog(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM outbox").fetchone()[0]

    def refused_count(self) -> int:
        with self._lock:
            return self._db.execute("SELECT count(*) FROM refused").fetchone()[0]

    def next_seq(self) -> int:
        return self._next_seq

    def close(self) -> None:
        with self._lock:
            self._db.close()


def decode_body(body: bytes) -> dict[str, Any]:
    return json.loads(body)
