"""The server bridge's decisions: verify, store once, refuse forgeries and replays."""

from __future__ import annotations

import json
import threading

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from qrgate import protocol
from qrgate.sealing import PersonOpener, PersonSealer
from conftest import new_storage
from server.ingest.bridge import Bridge

pytestmark = pytest.mark.timeout(60)


def make_record(key, seq, name="Trần Thu Hà", station="gate-1"):
    return protocol.sign_record(
        {"v": 1, "type": "checkin", "st": station, "seq": seq, "ts": 1_790_000_000_000 + seq, "mono": seq, "boot": "b",
         "sync": True, "dir": "in", "kind": "cccd",
         "person": {"id": "079188001234", "name": name, "birth": "1988-01-02", "sex": "F"}},
        key,
    )


def batch(*records):
    return protocol.encode_batch(protocol.canonical_json(r) for r in records)


@pytest.fixture
def env(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    venue = storage.add_venue("Chợ Bến Thành")
    key = Ed25519PrivateKey.generate()
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    return Bridge(storage, opener=PersonOpener(SEALING)), storage, key


TOPIC = protocol.records_topic("gate-1")
SEALING = X25519PrivateKey.generate()


def sealed_record(key, seq, name="Võ Thị Hoa", sealer=None, boot="b", sync=True, ts=None, mono=None):
    sealer = sealer or PersonSealer(SEALING.public_key(), "gate-1")
    return protocol.sign_record(
        {"v": 1, "type": "checkin", "st": "gate-1", "seq": seq, "ts": ts or 1_790_000_000_000 + seq,
         "mono": mono if mono is not None else seq, "boot": boot, "sync": sync, "dir": "in", "kind": "cccd",
         "sealed": sealer.seal({"id": "079188005678", "name": name, "birth": "1979", "sex": "F"})},
        key,
    )


def test_sealed_record_is_opened_stored_in_full_and_kept_sealed_as_proof(env):
    bridge, storage, key = env
    ack = bridge.handle(TOPIC, batch(sealed_record(key, 1)))
    assert ack.stored == (1,)
    row = storage.sql.one("SELECT name, id_number, record FROM checkins")
    assert row[:2] == ("Võ Thị Hoa", "079188005678")
    proof = json.loads(row[2])
    assert "person" not in proof and "Võ" not in row[2]
    protocol.verify_record(proof, key.public_key())  # the stored record still verifies


def test_record_sealed_to_another_server_is_refused_for_good(env):
    bridge, storage, key = env
    other = PersonSealer(X25519PrivateKey.generate().public_key(), "gate-1")
    ack = bridge.handle(TOPIC, batch(sealed_record(key, 1, sealer=other)))
    assert ack.refused == {1: "bad_sealed"} and storage.count_checkins() == 0


def test_clock_record_corrects_that_boots_unsynced_times_before_and_after_it(env):
    bridge, storage, key = env
    # Booted with the clock stuck in 2020; mono 5 s and 7 s into the boot.
    early = sealed_record(key, 1, boot="boot-x", sync=False, ts=1_577_836_800_000, mono=5_000)
    other_boot = sealed_record(key, 2, boot="boot-y", sync=False, ts=1_577_836_800_000, mono=5_000)
    bridge.handle(TOPIC, batch(early, other_boot))
    base = 1_790_000_000_000  # learned at sync: wall = mono + base
    clock = protocol.sign_record({"v": 1, "type": "clock", "st": "gate-1", "seq": 3, "ts": base + 60_000,
                                  "mono": 60_000, "boot": "boot-x", "sync": True, "base": base}, key)
    late = sealed_record(key, 4, boot="boot-x", sync=False, ts=1_577_836_802_000, mono=7_000)
    ack = bridge.handle(TOPIC, batch(clock, late))
    assert ack.stored == (3, 4)
    rows = {r[0]: r[1:] for r in storage.sql.rows(
        "SELECT seq, wall_ms, time_corrected, wall_ms_station FROM checkins")}
    assert rows[1] == (base + 5_000, 1, 1_577_836_800_000)
    assert rows[4] == (base + 7_000, 1, 1_577_836_802_000)
    assert rows[2] == (1_577_836_800_000, 0, 1_577_836_800_000)  # another boot: untouched
    assert bridge.handle(TOPIC, batch(clock)).stored == (3,)  # a repeated clock record is harmless


def test_valid_batch_is_stored_and_acked(env):
    bridge, storage, key = env
    ack = bridge.handle(TOPIC, batch(make_record(key, 1), make_record(key, 2)))
    assert ack.stored == (1, 2) and not ack.refused
    assert storage.count_checkins("gate-1") == 2


def test_replayed_record_is_stored_once_and_acked_again(env):
    bridge, storage, key = env
    rec = make_record(key, 1)
    bridge.handle(TOPIC, batch(rec))
    ack = bridge.handle(TOPIC, batch(rec, rec))
    assert ack.stored == (1, 1)
    assert storage.count_checkins() == 1
    assert bridge.counters["duplicate"] == 2


def test_different_record_under_a_stored_number_is_a_conflict(env):
    bridge, storage, key = env
    bridge.handle(TOPIC, batch(make_record(key, 1)))
    ack = bridge.handle(TOPIC, batch(make_record(key, 1, name="Someone Else")))
    assert ack.refused == {1: "seq_conflict"} and ack.stored == ()
    assert storage.count_checkins() == 1
    assert storage.refusal_counts()["seq_conflict"] == 1


def test_forged_record_is_not_stored_and_not_acked(env):
    bridge, storage, key = env
    forged = make_record(Ed25519PrivateKey.generate(), 1)
    ack = bridge.handle(TOPIC, batch(forged))
    assert ack.stored == () and ack.refused == {}  # the genuine seq 1 must stay on the station
    assert storage.count_checkins() == 0
    assert bridge.counters["refused.bad_signature"] == 1


def test_record_of_another_station_on_this_topic_is_refused(env):
    bridge, storage, key = env
    ack = bridge.handle(TOPIC, batch(make_record(key, 1, station="gate-2")))
    assert ack.stored == () and storage.count_checkins() == 0
    assert storage.refusal_counts() == {"misaddressed": 1}


def test_unknown_station_gets_no_ack(env):
    bridge, storage, key = env
    assert bridge.handle(protocol.records_topic("gate-9"), batch(make_record(key, 1, station="gate-9"))) is None
    assert storage.refusal_counts() == {"unknown_station": 1}


@pytest.mark.parametrize("payload", [b"", b"\xff" * 10, b"{}", b'{"records":[1,"x",null]}',
                                     b'{"records":[' + b"{}," * 600 + b"{}]}"])
def test_garbage_messages_never_crash_the_bridge(env, payload):
    bridge, storage, key = env
    bridge.handle(TOPIC, payload)
    assert storage.count_checkins() == 0


@pytest.mark.parametrize("field,value", [("ts", 2**63 - 1000), ("ts", -(2**63) + 5), ("mono", 2**53 + 1),
                                         ("ts", 2**64), ("seq", 2**63)])
def test_times_and_numbers_beyond_the_limits_are_refused_alone_and_the_batch_is_stored(env, field, value):
    # A time near the 64-bit limit would overflow the local day (or mono + base) in the
    # database and fail the whole batch for ever: the protocol refuses it as malformed.
    bridge, storage, key = env
    good = make_record(key, 2)
    # Written into the JSON text: no signer makes (nor json.dumps of Python would refuse)
    # a number beyond 64 bits, but a hostile station can send one.
    odd = protocol.canonical_json(good).replace(f'"{field}":{good[field]},'.encode(), f'"{field}":{value},'.encode())
    assert odd != protocol.canonical_json(good)
    payload = protocol.encode_batch([protocol.canonical_json(make_record(key, 1)), odd,
                                     protocol.canonical_json(make_record(key, 3))])
    ack = bridge.handle(TOPIC, payload)
    assert ack.stored == (1, 3)
    # Changed after signing: its signature fails, so its number is never acked (issue #19).
    assert ack.refused == {}
    assert storage.count_checkins() == 2


@pytest.mark.parametrize("name", ["=cmd|' /C calc'!A0", "<script>alert(1)</script>", "Nguyễn " + "A" * 600,
                                  "Robert'); DROP TABLE checkins;--"])
def test_hostile_names_are_stored_exactly_and_safely(env, name):
    bridge, storage, key = env
    ack = bridge.handle(TOPIC, batch(make_record(key, 1, name=name)))
    assert ack.stored == (1,)
    row = storage.latest_checkins(1)[0]
    assert row["name"] == name
    assert json.loads(storage.sql.value("SELECT record FROM checkins"))["person"]["name"] == name


def test_two_workers_storing_the_same_batches_at_once_store_each_record_once(tmp_path):
    """A redelivered batch and the station's resend can reach two workers together: both
    must ack every record as stored, and neither may see a conflict."""
    path = tmp_path / "shared.sqlite3"
    setup = new_storage(path)
    key = Ed25519PrivateKey.generate()
    setup.add_station("gate-1", protocol.public_key_to_text(key.public_key()), setup.add_venue("Cảng Cát Lái"))
    opener = PersonOpener(SEALING)
    workers = [Bridge(new_storage(path), opener=opener, check_threads=1) for _ in range(2)]
    batches = [batch(*(sealed_record(key, seq) for seq in range(first, first + 20))) for first in range(1, 401, 20)]
    acks: list[list] = [[], []]
    start = threading.Barrier(2)

    def work(n: int) -> None:
        for payload in batches:
            start.wait(timeout=30)  # both take the same batch at the same moment
            acks[n].append(workers[n].handle(TOPIC, payload))

    threads = [threading.Thread(target=work, args=(n,)) for n in (0, 1)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for n in (0, 1):
        assert [a.stored for a in acks[n]] == [tuple(range(f, f + 20)) for f in range(1, 401, 20)]
        assert all(not a.refused for a in acks[n])
    assert setup.count_checkins("gate-1") == 400
    assert setup.refusal_counts() == {}
    assert workers[0].counters["stored"] + workers[1].counters["stored"] == 400


@pytest.mark.timeout(120)
def test_a_stream_of_batches_through_the_broker_is_stored_and_acked_in_full(server_env, tmp_path):
    # Through a broker the bridge verifies the next messages while it stores one, and
    # quick batches finish their checks before slow ones sent earlier. Every record is
    # stored once and acked, and a check-in made before its boot's clock synced is
    # corrected whichever of the two batches is stored first.
    from conftest import wait_until
    from server.cli import open_sealing
    from test_workers import StationLink, TestStation

    storage = server_env.storage
    gate = TestStation(server_env, "gate-7", tmp_path / "gate-7")
    key = gate.key
    bridge = Bridge(storage, server_env.config.mqtt, server_env.config.base, check_threads=2,
                    opener=open_sealing(server_env.config))
    bridge.start()
    link = None
    try:
        assert bridge.wait_subscribed(30)
        link = StationLink(gate)
        seq, boots, payloads = 0, 12, []
        for b in range(boots):
            # A big batch of the boot's clock record first (slow to check), then a small
            # one with a check-in made before the sync, also sent after it (quick to check).
            filler = []
            for _ in range(150):
                seq += 1
                filler.append(protocol.sign_record({**gate.fields(seq), "v": 1, "st": "gate-7", "seq": seq}, key))
            seq += 1
            clock = protocol.sign_record({"v": 1, "type": "clock", "st": "gate-7", "seq": seq, "ts": 1_790_000_100_000,
                                          "mono": 100_000, "boot": f"boot-{b}", "sync": True,
                                          "base": 1_790_000_000_000}, key)
            seq += 1
            early = protocol.sign_record({**gate.fields(seq), "v": 1, "st": "gate-7", "seq": seq, "sync": False,
                                          "ts": 5_000, "mono": 5_000, "boot": f"boot-{b}"}, key)
            payloads += [batch(*filler, clock), batch(early)]
        for payload in payloads:
            link.publish_payload(payload)
        wait_until(lambda: len(link.acked) == seq, 60, "every record acked")
        walls = storage.sql.rows("SELECT wall_ms, time_corrected FROM checkins WHERE station_id = 'gate-7'"
                                 " AND clock_synced = ?", [False])
        assert walls == [(1_790_000_005_000, True)] * boots
        assert storage.count_checkins("gate-7") == seq - boots
        assert bridge.alive()
    finally:
        if link is not None:
            link.close()
        bridge.close()


@pytest.mark.timeout(60)
def test_bridge_log_says_it_subscribed_but_never_names_the_shared_group(server_env, caplog):
    # The group's name is what keeps stations out of the group (share_group_for); logs
    # go to journald, the demo's terminal and bug reports, so not even DEBUG may hold it.
    import logging

    from server.ingest.bridge import share_group_for
    from server.ingest.workers import make_worker

    config = server_env.config
    group = share_group_for(config.mqtt, config.base)
    caplog.set_level(logging.DEBUG)
    bridges = [Bridge(server_env.storage, config.mqtt, config.base),
               make_worker(server_env.storage, config.mqtt, config.base, 2)]
    try:
        for bridge in bridges:
            bridge.start()
        for bridge in bridges:
            assert bridge.wait_subscribed(30)
            assert bridge.share_group == group  # the name checked below is the one in use
    finally:
        for bridge in bridges:
            bridge.close()
    subscribed = [r.getMessage() for r in caplog.records if "subscribed" in r.getMessage()]
    assert len(subscribed) == 2, subscribed
    digest = group.rsplit("-", 1)[1]
    assert digest not in caplog.text
