"""The station outbox: durable, signed, numbered once, private on disk."""

from __future__ import annotations

import json
import os
import stat

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.policy import Instant
from edge.queue.outbox import Outbox, OutboxError
from qrgate import protocol

NOW = Instant(1_790_000_000.0, 10.0, "boot-a")


def fields(name="Nguyễn Gia Mạnh", direction="in"):
    return {"type": "checkin", "ts": 1_790_000_000_000, "mono": 10_000, "boot": "boot-a", "sync": True, "dir": direction,
            "kind": "cccd", "person": {"id": "024083123451", "name": name, "birth": "1983-03-21", "sex": "M"}}


@pytest.fixture
def key():
    return Ed25519PrivateKey.generate()


def open_outbox(tmp_path, key, secret=b"s" * 32):
    return Outbox(tmp_path / "outbox.sqlite3", station_id="gate-1", key=key, person_secret=secret)


def test_appended_record_is_signed_valid_and_pending(tmp_path, key):
    box = open_outbox(tmp_path, key)
    done = box.append(fields(), person_hash="h1", now=NOW)
    record = protocol.validate_record(json.loads(done.body))
    protocol.verify_record(record, key.public_key())
    assert record["seq"] == 1 and record["st"] == "gate-1"
    assert box.pending(10) == [(1, done.body)]
    assert box.backlog() == 1


def test_sequence_numbers_are_never_reused_after_ack_and_reopen(tmp_path, key):
    box = open_outbox(tmp_path, key)
    for _ in range(3):
        box.append(fields(), person_hash="h", now=NOW)
    assert box.mark_stored([1, 2, 3]) == 3
    assert box.backlog() == 0
    box.close()
    again = open_outbox(tmp_path, key)
    assert again.append(fields(), person_hash="h", now=NOW).seq == 4


def test_records_survive_a_reopen_and_presence_is_remembered(tmp_path, key):
    box = open_outbox(tmp_path, key)
    h = box.person_hash("cccd:024083123451")
    box.append(fields(direction="in"), person_hash=h, now=NOW)
    box.close()
    again = open_outbox(tmp_path, key)
    assert again.backlog() == 1
    last = again.last_checkin(h)
    assert last.direction == "in" and last.at == NOW


def test_presence_is_kept_under_a_keyed_hash_not_the_id(tmp_path, key):
    box = open_outbox(tmp_path, key)
    h = box.person_hash("cccd:024083123451")
    assert "024083123451" not in h
    assert h != open_outbox(tmp_path / "other", key, secret=b"t" * 32).person_hash("cccd:024083123451")


def test_outbox_file_is_private_to_the_station_user(tmp_path, key):
    open_outbox(tmp_path, key)
    mode = stat.S_IMODE(os.stat(tmp_path / "outbox.sqlite3").st_mode)
    assert mode & 0o077 == 0


def test_refused_records_are_set_aside_not_lost(tmp_path, key):
    box = open_outbox(tmp_path, key)
    box.append(fields(), person_hash="h", now=NOW)
    box.append(fields(), person_hash="h", now=NOW)
    box.mark_refused({1: "seq_conflict"}, 0)
    assert [seq for seq, _ in box.pending(10)] == [2]
    assert box.refused_count() == 1


def test_pending_is_in_order_and_pages(tmp_path, key):
    box = open_outbox(tmp_path, key)
    for _ in range(5):
        box.append(fields(), person_hash="h", now=NOW)
    assert [s for s, _ in box.pending(2)] == [1, 2]
    assert [s for s, _ in box.pending(2, after_seq=2)] == [3, 4]


def test_a_full_or_readonly_disk_is_a_clear_error_not_a_silent_loss(tmp_path, key):
    box = open_outbox(tmp_path, key)
    box.append(fields(), person_hash="h", now=NOW)
    # Shrink SQLite's page limit to the current size: the next insert cannot fit.
    pages = box._db.execute("PRAGMA page_count").fetchone()[0]
    box._db.execute(f"PRAGMA max_page_count={pages}")
    with pytest.raises(OutboxError) as err:
        box.append(fields(name="X" * 6000), person_hash="h2", now=NOW)
    assert "outbox.sqlite3" in str(err.value)
    assert box.backlog() == 1  # the earlier record is still there


def test_a_damaged_outbox_is_set_aside_kept_and_numbering_never_collides(tmp_path, key):
    box = open_outbox(tmp_path, key)
    for _ in range(3):
        box.append(fields(), person_hash="h", now=NOW)
    box.close()
    path = tmp_path / "outbox.sqlite3"
    data = bytearray(path.read_bytes())
    data[100:4096] = b"\x00garbage" * ((4096 - 100) // 8)  # a card that lost a sector
    path.write_bytes(bytes(data))
    for suffix in ("-wal", "-shm"):
        (tmp_path / f"outbox.sqlite3{suffix}").unlink(missing_ok=True)
    again = open_outbox(tmp_path, key)
    assert again.set_aside is not None and again.set_aside.exists()  # kept for recovery by hand
    assert again.set_aside.read_bytes() == bytes(data)
    assert again.backlog() == 0
    seq = again.append(fields(), person_hash="h", now=NOW).seq
    assert seq > 1_000_000_000_000  # above any number the old outbox can have used
