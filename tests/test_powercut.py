"""Power cuts, not kills: every write not yet synced is lost (or torn, or scattered) at a
random write, and at every write of a WAL checkpoint; the files are then reopened with
the standard sqlite3. The station outbox with its settings in use keeps every record
whose green light was shown, and the server keeps every record it acked; weaker settings
lose some, which is why they are not used.

The short version CI runs; the long one, over several seeds, is in docs/reliability.md
(`python -m bench.powercut --settings in-use --checkpoints --seed 1 --seed 777 ...`).
"""

from __future__ import annotations

import random
import sqlite3

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bench.powercut import Disk, OutboxRun, PowerCutVFS, StorageRun, connect_through, run_cuts
from edge.queue.outbox import Outbox
from server.storage import SqliteStorage

pytestmark = pytest.mark.timeout(120)


@pytest.mark.parametrize("mode", ["drop", "tear", "scatter"])
def test_outbox_as_configured_keeps_every_green_lit_record_through_power_cuts(tmp_path, mode):
    result = run_cuts(OutboxRun, Outbox.JOURNAL_MODE, Outbox.SYNCHRONOUS, mode, 40, ops=350, workdir=tmp_path)
    assert result.cuts == 40 and result.at_risk > 100
    assert result.writes_to.get("outbox.sqlite3", 0) > 0  # the run went through a WAL checkpoint
    assert (result.lost, result.damaged, result.reused) == (0, 0, 0), result.examples


@pytest.mark.parametrize("mode", ["drop", "tear", "scatter"])
def test_a_cut_inside_the_checkpoint_after_an_ack_takes_no_record_still_waiting(tmp_path, mode):
    # Seed 777 is the workload where `python -m bench.powercut --cuts 400 --seed 777`
    # counted 10 of 13 records lost at write 4027: its second WAL checkpoint runs inside
    # the COMMIT of mark_stored(), after the deletion of the 10 acked records is synced.
    # Those are the server's to keep (it acked them); every record still waiting must
    # survive a cut at any write of the checkpoint and of the WAL's restart after it.
    result = run_cuts(OutboxRun, Outbox.JOURNAL_MODE, Outbox.SYNCHRONOUS, mode, seed=777, ops=400,
                      points="checkpoints", workdir=tmp_path)
    assert result.cuts_in_checkpoint >= 2 * 13  # the two checkpoints of the run, 13 page writes each
    assert result.cuts_while_acking >= 13  # the one that runs inside an ack's commit, at every write
    assert result.at_risk > 100
    assert (result.lost, result.damaged, result.reused) == (0, 0, 0), result.examples


def test_outbox_restarted_now_and_then_keeps_every_green_lit_record_through_cuts_at_its_checkpoints(tmp_path):
    # A service restart closes the outbox: the last connection checkpoints and deletes the
    # WAL without syncing the directory, and the next one makes a new WAL of the same name.
    result = run_cuts(OutboxRun, Outbox.JOURNAL_MODE, Outbox.SYNCHRONOUS, "scatter", seed=777, ops=400,
                      points="checkpoints", restart_every=50, workdir=tmp_path)
    assert result.cuts_in_checkpoint > 7 * 10  # the closes' checkpoints among them
    assert (result.lost, result.damaged, result.reused) == (0, 0, 0), result.examples


def test_outbox_really_runs_with_the_settings_the_simulation_checked(tmp_path):
    box = Outbox(tmp_path / "o.sqlite3", station_id="gate-1", key=Ed25519PrivateKey.generate(),
                 person_secret=b"s" * 32)
    try:
        assert box._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert box._db.execute("PRAGMA synchronous").fetchone()[0] == 2  # FULL
    finally:
        box.close()


@pytest.mark.parametrize(("journal_mode", "synchronous"), [("WAL", "NORMAL"), ("WAL", "OFF"), ("DELETE", "FULL")])
def test_weaker_settings_lose_records_that_were_shown_green(tmp_path, journal_mode, synchronous):
    # The simulation can fail: these settings return from COMMIT before the record (or
    # the journal's deletion) is on disk, and the next boot hands out its number again.
    result = run_cuts(OutboxRun, journal_mode, synchronous, "drop", 30, ops=150, workdir=tmp_path)
    assert result.lost > 0 and result.reused > 0


def test_server_storage_keeps_every_record_it_acked_through_power_cuts(tmp_path):
    result = run_cuts(StorageRun, "WAL", "FULL", "tear", 25, ops=120, workdir=tmp_path)
    # The server stamps rows with its own clock, so the second play may be a few writes
    # shorter than the one that counted them: nearly every drawn cut is reached.
    assert result.cuts >= 20 and result.at_risk > 100
    assert (result.lost, result.damaged, result.reused) == (0, 0, 0), result.examples
    weaker = run_cuts(StorageRun, "WAL", "NORMAL", "drop", 15, ops=120, workdir=tmp_path / "weaker")
    assert weaker.lost > 0


def test_server_storage_keeps_every_acked_record_through_cuts_inside_its_checkpoints(tmp_path):
    # Random cuts land in a checkpoint a few times in a hundred; here every write of
    # the one checkpoint this workload makes is cut, torn at a random sector.
    result = run_cuts(StorageRun, "WAL", "FULL", "tear", ops=120, points="checkpoints", workdir=tmp_path)
    assert result.cuts_in_checkpoint > 50 and result.at_risk > 10_000
    assert (result.lost, result.damaged, result.reused) == (0, 0, 0), result.examples


def test_server_storage_really_runs_with_the_pragmas_the_simulation_used(tmp_path):
    conn = SqliteStorage(tmp_path / "s.sqlite3").db.conn
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("PRAGMA synchronous").fetchone()[0] == 2
    assert conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_the_disk_model_loses_unsynced_writes_and_tears_at_sectors(tmp_path):
    vfs = PowerCutVFS(tmp_path)
    try:
        conn = connect_through(vfs, "DELETE")(tmp_path / "t.db")
        conn.execute("PRAGMA synchronous=OFF")  # nothing is ever synced
        conn.execute("CREATE TABLE t (x)")
        conn.execute("INSERT INTO t VALUES (zeroblob(5000))")
        assert vfs.disk.after_cut("drop", random.Random(1)) == {}  # not even the name is on disk
        conn.execute("PRAGMA synchronous=FULL")
        conn.execute("INSERT INTO t VALUES (1)")  # synced, and the directory with the journal
        kept = vfs.disk.after_cut("drop", random.Random(1))["t.db"]
        conn.close()
    finally:
        vfs.unregister()
    (tmp_path / "copy.db").write_bytes(kept)
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("SELECT count(*) FROM t").fetchone()[0] == 2
    copy.close()
    disk = Disk(tmp_path)
    inode = disk.inode("new", syncs_directory=False)
    inode.pending.append((0, b"a" * 1500))  # three sectors: 512 + 512 + 476
    torn = {len(inode.after_cut("tear", random.Random(seed))) for seed in range(40)}
    assert torn == {0, 512, 1024, 1500}
