"""Power cuts, simulated: what is left on the card when power goes at a random write.

A kill lets the kernel write its cache out; a power cut does not. ``PowerCutVFS`` (an
apsw VFS over the normal one) passes every read and write through to the real files and
keeps, per file, what the disk has for sure (the content at its last sync) and what was
written since. A cut at a chosen write turns that into the files a rebooted station
would find:

- ``drop``: every write since the file's last sync is lost;
- ``tear``: a random prefix of those writes survives, cut at a 512-byte sector
  boundary (the write in flight may be half there);
- ``scatter``: a random subset of those sectors survives (the disk reordered them).

Names in the directory are modelled too: a file created or deleted without a directory
sync may come back, or vanish, after the cut (SQLite syncs the directory once after
creating a journal or WAL, and on a delete only when it asks for ``syncdir``).

The snapshot is checked with the standard library's sqlite3, not through the VFS:
``PRAGMA integrity_check`` must say ok, every record relied on must be there, byte for
byte, with a valid Ed25519 signature, and the outbox reopened by the real ``Outbox``
must not hand out a sequence number already shown. A record is relied on from the
moment its commit returned (the green light) until the server's ack for it arrives;
the outbox may drop it from then on, even before ``mark_stored`` returns (that call's
commit can be followed, inside the call, by a WAL checkpoint a cut may land in).

Cuts are drawn at random writes, or made at every write of each WAL checkpoint (and of
the WAL's restart after it), which random cuts hit rarely; the outbox can also be closed
and reopened every so many scans, as a service restart does.

WAL through a VFS without shared memory needs ``locking_mode=EXCLUSIVE`` (the WAL index
is then kept in memory, not in ``-shm``); the writes and syncs to the database and the
WAL are the same as in normal locking mode. For rollback journals the locking mode is
left alone, because exclusive mode would keep the journal instead of deleting it.

Run: ``python -m bench.powercut --settings in-use --checkpoints --seed 1 --seed 777`` (the
long runs and their figures are in docs/reliability.md), or all settings through
``python -m bench.reliability``.
"""

from __future__ import annotations

import argparse
import itertools
import json
import random
import shutil
import sqlite3
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import apsw
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.policy import Instant
from edge.queue.outbox import Outbox
from qrgate import protocol
from server.storage import SqliteStorage

SECTOR = 512
MODES = ("drop", "tear", "scatter")
# (journal_mode, synchronous): the settings in use first, then weaker ones to compare.
OUTBOX_SETTINGS = (("WAL", "FULL"), ("WAL", "NORMAL"), ("DELETE", "FULL"), ("DELETE", "NORMAL"),
                   ("DELETE", "EXTRA"), ("WAL", "OFF"))
SERVER_SETTINGS = (("WAL", "FULL"), ("WAL", "NORMAL"))
_vfs_names = itertools.count(1)


# --- the disk model -------------------------------------------------------------------


class _Inode:
    """One file as the disk knows it: content at its last sync, and the writes since."""

    def __init__(self, content: bytes = b"", *, syncs_directory: bool = False):
        self.durable = bytearray(content)
        self.pending: list[tuple[int, bytes] | tuple[int, None]] = []  # (offset, data) or (size, None): truncate
        self.syncs_directory = syncs_directory  # the first sync also syncs the directory

    def apply(self, content: bytearray, ops) -> None:
        for where, data in ops:
            if data is None:
                del content[where:]
            else:
                if len(content) < where:
                    content.extend(b"\0" * (where - len(content)))
                content[where:where + len(data)] = data

    def sync(self) -> None:
        self.apply(self.durable, self.pending)
        self.pending.clear()

    def after_cut(self, mode: str, rng: random.Random) -> bytes:
        content = bytearray(self.durable)
        if mode == "drop" or not self.pending:
            return bytes(content)
        pieces: list[tuple[int, bytes | None]] = []
        for where, data in self.pending:  # writes split at sector boundaries, in order
            if data is None:
                pieces.append((where, None))
                continue
            pos = 0
            while pos < len(data):
                end = min(len(data), pos + SECTOR - (where + pos) % SECTOR)
                pieces.append((where + pos, data[pos:end]))
                pos = end
        if mode == "tear":
            kept = pieces[:rng.randint(0, len(pieces))]
        else:
            kept = [p for p in pieces if rng.random() < 0.5]
        self.apply(content, kept)
        return bytes(content)


class Disk:
    """The files of one directory as a power cut would leave them."""

    def __init__(self, directory: Path):
        self.directory = directory.resolve()
        self.names: dict[str, _Inode] = {}  # what the running program sees
        self.durable_names: dict[str, _Inode] = {}  # what the directory holds for sure
        for path in self.directory.iterdir():  # what was there before is on disk
            if path.is_file():
                inode = _Inode(path.read_bytes())
                self.names[path.name] = self.durable_names[path.name] = inode
        self.writes = 0
        self.writes_to: dict[str, int] = {}  # per file name: shows the WAL was checkpointed
        self.log: list[tuple[str, int]] = []  # (file name, offset) of every write, in order

    def inode(self, name: str, *, syncs_directory: bool) -> _Inode:
        """The file about to be opened (call before the real open creates it)."""
        inode = self.names.get(name)
        if inode is None:
            real = self.directory / name
            if real.exists():  # made before the VFS saw it (e.g. at provisioning): on disk
                inode = self.durable_names[name] = _Inode(real.read_bytes())
            else:  # created now: neither its name nor its content is on disk until synced
                inode = _Inode(syncs_directory=syncs_directory)
            self.names[name] = inode
        return inode

    def sync_directory(self) -> None:
        self.durable_names = dict(self.names)

    def delete(self, name: str, syncdir: bool) -> None:
        self.names.pop(name, None)
        if syncdir:
            self.sync_directory()

    def after_cut(self, mode: str, rng: random.Random) -> dict[str, bytes]:
        return {name: inode.after_cut(mode, rng) for name, inode in sorted(self.durable_names.items())}


class _File(apsw.VFSFile):
    def __init__(self, vfs: PowerCutVFS, name, flags):
        self._vfs = vfs
        self._inode = None
        path = name.filename() if isinstance(name, apsw.URIFilename) else name
        if path and Path(path).parent.resolve() == vfs.disk.directory:
            # unix VFS: the directory is synced after the first sync of a new journal or WAL.
            syncs_directory = bool(flags[0] & (apsw.SQLITE_OPEN_MAIN_JOURNAL | apsw.SQLITE_OPEN_WAL
                                               | apsw.SQLITE_OPEN_SUPER_JOURNAL))
            self._name = Path(path).name
            self._inode = vfs.disk.inode(self._name, syncs_directory=syncs_directory)
        super().__init__("", name, flags)

    def xWrite(self, data, offset):
        if self._inode is not None:
            self._inode.pending.append((offset, bytes(data)))
            self._vfs.wrote(self._name, offset)
        super().xWrite(data, offset)

    def xTruncate(self, newsize):
        if self._inode is not None:
            self._inode.pending.append((newsize, None))
        super().xTruncate(newsize)

    def xSync(self, flags):
        # The real fsync is skipped for the files under test: what survives a cut is what
        # the model says, and those files are scratch (it keeps the runs fast, too).
        if self._inode is None:
            super().xSync(flags)
            return
        self._inode.sync()
        if self._inode.syncs_directory:
            self._inode.syncs_directory = False
            self._vfs.disk.sync_directory()


class PowerCutVFS(apsw.VFS):
    """Passes everything to the default VFS; ``on_write(n)`` is called before write n lands."""

    def __init__(self, directory: Path, on_write: Callable[[int], None] = lambda n: None):
        self.vfs_name = f"powercut-{next(_vfs_names)}"
        self.disk = Disk(directory)
        self.on_write = on_write
        super().__init__(self.vfs_name, "")

    def wrote(self, name: str, offset: int) -> None:
        self.disk.writes += 1
        self.disk.writes_to[name] = self.disk.writes_to.get(name, 0) + 1
        self.disk.log.append((name, offset))
        self.on_write(self.disk.writes)

    def xOpen(self, name, flags):
        return _File(self, name, flags)

    def xDelete(self, filename, syncdir):
        path = Path(filename)
        if path.parent.resolve() == self.disk.directory:
            self.disk.delete(path.name, syncdir)
        super().xDelete(filename, syncdir)


# --- an apsw connection that looks like sqlite3 to the code under test ------------------


class _Rows:
    def __init__(self, rows: list[tuple], rowcount: int):
        self._rows = rows
        self.rowcount = rowcount

    def fetchone(self):
        return self._rows.pop(0) if self._rows else None

    def fetchall(self):
        rows, self._rows = self._rows, []
        return rows

    def __iter__(self):
        return iter(self.fetchall())


@contextmanager
def _as_sqlite3_errors() -> Iterator[None]:
    try:
        yield
    except apsw.ConstraintError as exc:
        raise sqlite3.IntegrityError(str(exc)) from exc
    except (apsw.CorruptError, apsw.NotADBError) as exc:
        raise sqlite3.DatabaseError(str(exc)) from exc
    except apsw.Error as exc:
        raise sqlite3.OperationalError(str(exc)) from exc


class ApswAsSqlite3:
    """The few ``sqlite3.Connection`` methods the outbox and the storage use, over apsw."""

    def __init__(self, conn: apsw.Connection):
        self._conn = conn

    def execute(self, sql: str, params=()) -> _Rows:
        with _as_sqlite3_errors():
            before = self._conn.total_changes()
            rows = [tuple(r) for r in self._conn.execute(sql, params)]
            return _Rows(rows, self._conn.total_changes() - before)

    def executemany(self, sql: str, seq) -> _Rows:
        with _as_sqlite3_errors():
            before = self._conn.total_changes()
            for params in seq:
                list(self._conn.execute(sql, params))
            return _Rows([], self._conn.total_changes() - before)

    def executescript(self, sql: str) -> None:
        with _as_sqlite3_errors():
            list(self._conn.execute(sql))

    def close(self) -> None:
        self._conn.close()


def connect_through(vfs: PowerCutVFS, journal_mode: str) -> Callable[[Path], ApswAsSqlite3]:
    def connect(path: Path) -> ApswAsSqlite3:
        conn = apsw.Connection(str(path), vfs=vfs.vfs_name)
        if journal_mode == "WAL":
            conn.execute("PRAGMA locking_mode=EXCLUSIVE")
        return ApswAsSqlite3(conn)

    return connect


# --- the two things under test ----------------------------------------------------------


@dataclass
class CutResult:
    at_risk: int = 0  # records shown accepted (or acked) and still relied on at the cut
    kept: int = 0  # of those, found intact with a valid signature after the cut
    damaged: bool = False  # integrity_check failed, or the file could not be opened
    reused: int = 0  # sequence numbers already shown that the reopened outbox would hand out again


class Workload:
    """A station scanning people, with the server's acks now and then (a fake clock)."""

    def __init__(self, rng: random.Random, key: Ed25519PrivateKey):
        self.rng = rng
        self.key = key
        self.t = 0.0

    def now(self) -> Instant:
        self.t += self.rng.uniform(0.5, 5.0)
        return Instant(1_790_000_000.0 + self.t, 100.0 + self.t, "boot-cut")

    def fields(self, now: Instant, person: int) -> dict[str, Any]:
        return {"type": "checkin", "ts": int(now.wall_s * 1000), "mono": int(now.mono_s * 1000), "boot": "boot-cut",
                "sync": True, "dir": self.rng.choice(protocol.DIRECTIONS), "kind": "cccd",
                "person": {"id": f"0791{person:08d}", "name": f"Trần Thị Hoa {person}", "birth": "1990-01-01",
                           "sex": "F"}}


def _materialise(files: dict[str, bytes], target: Path) -> None:
    shutil.rmtree(target, ignore_errors=True)
    target.mkdir(parents=True)
    for name, data in files.items():
        (target / name).write_bytes(data)


def _integrity(path: Path) -> tuple[bool, sqlite3.Connection | None]:
    """Open with the standard library and run integrity_check: (ok, the open connection).

    No file at all is not damage (nothing was ever synced): (True, None)."""
    if not path.exists():
        return True, None
    try:
        conn = sqlite3.connect(path, isolation_level=None)
        try:
            ok = conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            return ok, conn
        except sqlite3.DatabaseError:
            conn.close()
            return False, None
    except sqlite3.DatabaseError:
        return False, None


class OutboxRun:
    """The real ``Outbox`` through the VFS, cut at chosen writes."""

    name = "station outbox"
    db_name = "outbox.sqlite3"

    def __init__(self, journal_mode: str, synchronous: str, workdir: Path, seed: int, ops: int,
                 restart_every: int = 0):
        self.journal_mode, self.synchronous = journal_mode, synchronous
        self.workdir, self.seed, self.ops = workdir, seed, ops
        # Close and reopen the outbox every so many scans, as a service restart does: the
        # last connection checkpoints and deletes the WAL (no directory sync), and the next
        # one makes a new WAL under the same name.
        self.restart_every = restart_every
        self.key = Ed25519PrivateKey.generate()
        self.secret = b"p" * 32

    def outbox_class(self) -> type[Outbox]:
        return type("SimulatedOutbox", (Outbox,), {"JOURNAL_MODE": self.journal_mode,
                                                   "SYNCHRONOUS": self.synchronous})

    def fresh_directory(self) -> Path:
        live = self.workdir / "live"
        shutil.rmtree(live, ignore_errors=True)
        live.mkdir(parents=True)
        # The outbox as first created at provisioning (on disk for sure), already in the
        # journal mode under test: a WAL file opened without shared memory would force
        # exclusive locking, which keeps a rollback journal instead of deleting it.
        self.outbox_class()(live / "outbox.sqlite3", station_id="gate-cut", key=self.key,
                            person_secret=self.secret).close()
        return live

    def play(self, on_write: Callable[[int], None]) -> PowerCutVFS:
        """Run the scan workload once; ``on_write`` may take snapshots of ``self.vfs.disk``."""
        live = self.fresh_directory()
        vfs = self.vfs = PowerCutVFS(live)
        rng = random.Random(self.seed)
        work = Workload(rng, self.key)
        self.shown: dict[int, bytes] = {}  # green light shown, not yet acked by the server
        self.top_shown = 0
        self.acking = False  # inside mark_stored(): the cut lands while an ack is written

        def open_box() -> Outbox:
            return self.outbox_class()(live / "outbox.sqlite3", station_id="gate-cut", key=self.key,
                                       person_secret=self.secret, connect=connect_through(vfs, self.journal_mode))

        box = open_box()
        vfs.on_write = on_write
        try:
            for op in range(self.ops):
                if self.restart_every and op and op % self.restart_every == 0:
                    box.close()
                    box = open_box()
                now = work.now()
                person = rng.randrange(60)
                appended = box.append(work.fields(now, person), person_hash=box.person_hash(str(person)), now=now)
                self.shown[appended.seq] = appended.body  # the commit returned: green light
                self.top_shown = max(self.top_shown, appended.seq)
                if rng.random() < 0.1:  # the server acked the oldest ones
                    acked = sorted(self.shown)[:rng.randint(1, 20)]
                    # The ack means the server has them: from here on the outbox may
                    # drop them. They stop being relied on before mark_stored() starts,
                    # not after it returns: its COMMIT makes the deletion durable and
                    # then, inside the same call, may run the WAL checkpoint, so a cut
                    # can land after they are gone and before the call returns.
                    for seq in acked:
                        del self.shown[seq]
                    self.acking = True
                    box.mark_stored(acked)
                    self.acking = False
        finally:
            vfs.on_write = lambda n: None
            box.close()
            vfs.unregister()
        return vfs

    def check(self, files: dict[str, bytes], scratch: Path) -> CutResult:
        result = CutResult(at_risk=len(self.shown))
        _materialise(files, scratch)
        path = scratch / "outbox.sqlite3"
        ok, conn = _integrity(path)
        if not ok:
            result.damaged = True
            return result
        rows = {}
        if conn is not None:
            rows = dict(conn.execute("SELECT seq, body FROM outbox").fetchall())
            conn.close()
        public = self.key.public_key()
        for seq, body in self.shown.items():
            if rows.get(seq) == body:
                protocol.verify_record(json.loads(body), public)  # raises if the signature broke
                result.kept += 1
        # What the station would do next: reopen (the real class, plain sqlite3) and number on.
        box = self.outbox_class()(path, station_id="gate-cut", key=self.key, person_secret=self.secret)
        try:
            if box.set_aside is not None:
                result.damaged = True
            elif box.next_seq() <= self.top_shown:
                result.reused = self.top_shown - box.next_seq() + 1
        finally:
            box.close()
        return result


class StorageRun:
    """The server's ``SqliteStorage.store_records`` through the VFS: acked means stored."""

    name = "server storage"
    db_name = "server.sqlite3"

    def __init__(self, journal_mode: str, synchronous: str, workdir: Path, seed: int, ops: int,
                 restart_every: int = 0):
        if restart_every:
            raise ValueError("restarts are simulated for the station outbox only")
        self.journal_mode, self.synchronous = journal_mode, synchronous
        self.workdir, self.seed, self.ops = workdir, seed, ops
        self.key = Ed25519PrivateKey.generate()

    def fresh_directory(self) -> Path:
        live = self.workdir / "live"
        shutil.rmtree(live, ignore_errors=True)
        live.mkdir(parents=True)
        storage = SqliteStorage(live / "server.sqlite3")  # schema made by the real code
        venue = storage.add_venue("Cổng mất điện")
        storage.add_station("gate-cut", protocol.public_key_to_text(self.key.public_key()), venue)
        self.station = storage.station("gate-cut")
        storage.db.conn.close()
        return live

    def play(self, on_write: Callable[[int], None]) -> PowerCutVFS:
        live = self.fresh_directory()
        vfs = self.vfs = PowerCutVFS(live)
        conn = connect_through(vfs, self.journal_mode)(live / "server.sqlite3")
        # The same pragmas as SqliteStorage.db (tests/test_powercut.py checks they agree).
        conn.execute(f"PRAGMA journal_mode={self.journal_mode}")
        conn.execute(f"PRAGMA synchronous={self.synchronous}")
        conn.execute("PRAGMA foreign_keys=ON")
        storage = SqliteStorage.__new__(SqliteStorage)
        storage.path = live / "server.sqlite3"
        storage._local = SimpleNamespace(db=SimpleNamespace(conn=conn))
        rng = random.Random(self.seed)
        work = Workload(rng, self.key)
        self.shown = {}  # acked to the station: the station forgets these
        self.top_shown = 0
        seq = 0
        vfs.on_write = on_write
        try:
            for _ in range(self.ops):
                batch = []
                for _ in range(rng.randint(1, 8)):
                    seq += 1
                    now = work.now()
                    fields = work.fields(now, rng.randrange(60))
                    batch.append(protocol.sign_record({**fields, "v": protocol.VERSION, "st": "gate-cut", "seq": seq},
                                                      self.key))
                again = rng.randint(1, seq)
                if rng.random() < 0.3 and again in self.shown:  # a resend of a stored record (ack lost)
                    batch.append(json.loads(self.shown[again]))
                result = SqliteStorage.store_records(storage, self.station, batch)
                for rec in batch:
                    if rec["seq"] in result.stored:
                        self.shown[rec["seq"]] = protocol.canonical_json(rec)
        finally:
            vfs.on_write = lambda n: None
            conn.close()
            vfs.unregister()
        return vfs

    def check(self, files: dict[str, bytes], scratch: Path) -> CutResult:
        result = CutResult(at_risk=len(self.shown))
        _materialise(files, scratch)
        ok, conn = _integrity(scratch / "server.sqlite3")
        if not ok:
            result.damaged = True
            return result
        rows = {}
        if conn is not None:
            rows = {seq: rec for seq, rec in conn.execute(
                "SELECT seq, record FROM checkins WHERE station_id = 'gate-cut'")}
            dupes = conn.execute("SELECT count(*) - count(DISTINCT seq) FROM checkins").fetchone()[0]
            result.reused = dupes
            conn.close()
        public = self.key.public_key()
        for seq, body in self.shown.items():
            if seq in rows and rows[seq].encode() == body:
                protocol.verify_record(json.loads(rows[seq]), public)
                result.kept += 1
        return result


# --- running cuts ------------------------------------------------------------------------


@dataclass
class Summary:
    target: str
    journal_mode: str
    synchronous: str
    mode: str
    cuts: int = 0
    writes: int = 0  # writes in one run of the workload (the cut points are drawn from these)
    writes_to: dict[str, int] = field(default_factory=dict)
    at_risk: int = 0  # summed over cuts
    kept: int = 0
    lost: int = 0
    cuts_losing: int = 0
    damaged: int = 0
    reused: int = 0  # outbox: cuts after which a shown number would be handed out again;
    # server: rows with a repeated (station, seq)
    points: str = "random"  # how the cut writes were chosen: "random" or "checkpoints"
    seed: int = 1
    restart_every: int = 0  # outbox closed and reopened every so many scans (0: never)
    cuts_in_checkpoint: int = 0  # cuts at a write to the database file itself (a checkpoint)
    cuts_while_acking: int = 0  # outbox: cuts inside mark_stored() (the ack's commit or its checkpoint)
    seconds: float = 0.0
    examples: list[str] = field(default_factory=list)

    @property
    def setting(self) -> str:
        return f"{self.journal_mode} + synchronous={self.synchronous}"


def run_cuts(target_class, journal_mode: str, synchronous: str, mode: str, cuts: int = 0, *, seed: int = 1,
             ops: int = 400, workdir: Path, points: str = "random", restart_every: int = 0) -> Summary:
    """Cut the workload at chosen writes and check what each cut leaves.

    ``points="random"``: play the workload once to count its writes, then again with
    ``cuts`` snapshots at writes drawn at random. The outbox workload is deterministic,
    so its writes are the same; the server stamps rows with its own clock, so its second
    play may end a few writes early and miss a cut drawn near the end (``Summary.cuts``
    counts those made).

    ``points="checkpoints"``: one play, cut at every write to the database file itself
    (in WAL mode only a checkpoint writes there) and at the WAL's restart after it (its
    new header and the two writes that follow). Random cuts land there rarely: an
    outbox checkpoint is about 13 writes in 2,000.

    ``restart_every``: the outbox is closed and reopened every so many scans (a service
    restart), with the cuts running through the close's checkpoint and the new WAL.
    """
    if points not in ("random", "checkpoints"):
        raise ValueError(f"points must be 'random' or 'checkpoints', not {points!r}")
    started = time.monotonic()
    run = target_class(journal_mode, synchronous, workdir, seed, ops, restart_every)
    summary = Summary(run.name, journal_mode, synchronous, mode, points=points, seed=seed,
                      restart_every=restart_every)
    rng = random.Random(seed * 7919 + len(mode))
    drawn: set[int] = set()
    if points == "random":
        disk = run.play(lambda n: None).disk
        drawn = set(rng.sample(range(1, disk.writes + 1), min(cuts, disk.writes)))
    scratch = workdir / "after-cut"

    def chosen(n: int) -> bool:
        if points == "random":
            return n in drawn
        return in_checkpoint(run.vfs.disk.log, run.db_name)

    def on_write(n: int) -> None:
        if not chosen(n):
            return
        files = run.vfs.disk.after_cut(mode, rng)
        result = run.check(files, scratch)
        summary.cuts += 1
        summary.cuts_in_checkpoint += run.vfs.disk.log[-1][0] == run.db_name
        summary.cuts_while_acking += getattr(run, "acking", False)
        summary.at_risk += result.at_risk
        summary.kept += result.kept
        lost = result.at_risk - result.kept
        summary.lost += lost
        summary.cuts_losing += lost > 0
        summary.damaged += result.damaged
        summary.reused += result.reused > 0 if target_class is OutboxRun else result.reused
        if (lost or result.damaged) and len(summary.examples) < 3:
            summary.examples.append(f"cut at write {n}: {lost} of {result.at_risk} lost"
                                    + (", file damaged" if result.damaged else ""))

    disk = run.play(on_write).disk
    summary.writes, summary.writes_to = disk.writes, dict(disk.writes_to)
    summary.seconds = round(time.monotonic() - started, 1)
    return summary


def in_checkpoint(log: list[tuple[str, int]], db_name: str) -> bool:
    """Whether the write about to land (the last in ``log``) is part of a checkpoint: a
    write to the database file, or the WAL's new header (offset 0) or one of the two
    writes after it (the WAL starts over once a checkpoint has copied everything)."""
    if log[-1][0] == db_name:
        return True
    return any(name == db_name + "-wal" and offset == 0 for name, offset in log[-3:])


def run_all(cuts: int, *, modes=MODES, outbox_settings=OUTBOX_SETTINGS, server_settings=SERVER_SETTINGS,
            ops: int = 400, seeds=(1,), checkpoints: bool = False, restart_every: int = 0,
            workdir: Path | None = None, progress=None) -> list[Summary]:
    """``cuts`` random cuts for every (target, setting, mode, seed); with ``checkpoints``
    also a run cut at every checkpoint write of the same workload; with
    ``restart_every``, the outbox runs again with restarts (both ways of cutting)."""
    out = []
    chosen = ("random", "checkpoints") if checkpoints else ("random",)
    with tempfile.TemporaryDirectory(prefix="powercut-") as tmp:
        base = Path(workdir or tmp)
        restarts = (0, restart_every) if restart_every else (0,)
        for target, settings in ((OutboxRun, outbox_settings), (StorageRun, server_settings)):
            for journal_mode, synchronous in settings:
                for mode in modes:
                    for seed in seeds:
                        for every in restarts if target is OutboxRun else (0,):
                            for points in chosen:
                                summary = run_cuts(target, journal_mode, synchronous, mode, cuts, seed=seed, ops=ops,
                                                   points=points, restart_every=every,
                                                   workdir=base / f"{target.__name__}-{journal_mode}-{synchronous}-"
                                                   f"{mode}-{seed}-{points}-{every}")
                                out.append(summary)
                                if progress:
                                    progress(summary)
    return out


def merged(summaries: list[Summary]) -> list[Summary]:
    """One line per (target, setting, mode): the seeds and the ways of choosing cuts added up."""
    out: dict[tuple, Summary] = {}
    for s in summaries:
        key = (s.target, s.journal_mode, s.synchronous, s.mode)
        total = out.setdefault(key, Summary(*key, points="", seed=0))
        for name in ("cuts", "at_risk", "kept", "lost", "cuts_losing", "damaged", "reused", "cuts_in_checkpoint",
                     "cuts_while_acking", "seconds"):
            setattr(total, name, round(getattr(total, name) + getattr(s, name), 1))
        total.examples += s.examples[:3 - len(total.examples)]
    return list(out.values())


def markdown(summaries: list[Summary]) -> str:
    lines = ["| what | setting | cut | cuts | of which in a checkpoint | records relied on (sum over cuts) | lost "
             "| cuts that lost any | damaged files | numbers reused |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for s in summaries:
        # A rollback journal has no checkpoints: every commit writes the database file.
        checkpoint_cuts = s.cuts_in_checkpoint if s.journal_mode == "WAL" else "-"
        lines.append(f"| {s.target} | {s.setting} | {s.mode} | {s.cuts} | {checkpoint_cuts} | {s.at_risk} "
                     f"| {s.lost} | {s.cuts_losing} | {s.damaged} | {s.reused} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.powercut", description=__doc__.splitlines()[0])
    parser.add_argument("--cuts", type=int, default=200,
                        help="random cuts per setting, cut mode and seed (default 200)")
    parser.add_argument("--ops", type=int, default=400, help="transactions in one workload run (default 400)")
    parser.add_argument("--seed", type=int, action="append", dest="seeds",
                        help="workload seed; repeat for several (default 1)")
    parser.add_argument("--checkpoints", action="store_true",
                        help="also cut at every checkpoint write of each workload (see run_cuts)")
    parser.add_argument("--restart-every", type=int, default=0, metavar="N",
                        help="also run the outbox closed and reopened every N scans (a service restart)")
    parser.add_argument("--settings", choices=("in-use", "all"), default="all",
                        help="in-use: only the settings the outbox and the server run with (WAL + FULL)")
    parser.add_argument("--store", choices=("both", "outbox", "server"), default="both",
                        help="cut the station outbox, the server's database, or both (default)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)

    def progress(s: Summary) -> None:
        restarts = f", restart every {s.restart_every}" if s.restart_every else ""
        print(f"{s.target}, {s.setting}, {s.mode}, seed {s.seed}{restarts}, {s.points} cuts: {s.cuts} cuts "
              f"({s.cuts_in_checkpoint} in a checkpoint, {s.cuts_while_acking} while acking), {s.lost} lost, "
              f"{s.damaged} damaged, {s.reused} reused ({s.seconds} s)", file=sys.stderr, flush=True)

    chosen = {} if args.settings == "all" else {"outbox_settings": OUTBOX_SETTINGS[:1],
                                                 "server_settings": SERVER_SETTINGS[:1]}
    if args.store == "outbox":
        chosen["server_settings"] = ()
    elif args.store == "server":
        chosen["outbox_settings"] = ()
    started = time.monotonic()
    summaries = run_all(args.cuts, ops=args.ops, seeds=args.seeds or (1,), checkpoints=args.checkpoints,
                        restart_every=args.restart_every, progress=progress, **chosen)
    print(markdown(merged(summaries)))
    print(f"\n{round(time.monotonic() - started, 1)} s")
    if args.json:
        args.json.write_text(json.dumps([asdict(s) for s in summaries], indent=2, ensure_ascii=False) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
