"""The station pipeline on its own (no broker): decisions, debouncing, faults, listeners."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result, StationState
from edge.policy import Instant
from provisioning.broker import free_port
from qrgate.samples import cccd, demo_samples
from qrgate.sealing import PersonOpener, x25519_public_to_text

SERVER_SEALING = X25519PrivateKey.generate()

PERSON = cccd("024083123451", "", "Nguyễn Gia Mạnh", "21031983", "Nam", "Quận 3, TP Hồ Chí Minh", "06042021")


class FakeClock:
    """A station clock the test moves by hand."""

    def __init__(self):
        self.t = 1000.0
        self.boot_id = "boot-test"
        self.is_synced = True

    def now(self):
        return Instant(1_790_000_000.0 + self.t, self.t, self.boot_id)

    def synced(self):
        return self.is_synced

    def advance(self, seconds):
        self.t += seconds


@pytest.fixture
def station(tmp_path):
    cfg = tmp_path / "station.toml"
    # A broker that is not there: the station must work offline.
    cfg.write_text(f"""
[station]
id = "gate-1"
server_key = "{x25519_public_to_text(SERVER_SEALING.public_key())}"
[policy]
mode = "toggle"
repeat_window_s = 30
[mqtt]
port = {free_port()}
tls = false
[source]
kind = "list"
""")
    clock = FakeClock()
    events = []
    st = Station(load_station_config(cfg), clock=clock, source=ListSource([]), decoder=object(),
                 listeners=[events.append])
    st.clock_fake, st.events = clock, events
    yield st
    st.close()


def test_offline_station_accepts_and_keeps_the_signed_record(station):
    outcome = station.handle_text(PERSON)
    assert outcome.result is Result.ACCEPTED_OFFLINE and outcome.direction == "in"
    assert outcome.masked_name == "Nguyễn G** M***"
    (seq, body), = station.outbox.pending(10)
    record = json.loads(body)
    assert record["sync"] is True and record["dir"] == "in"
    assert "Nguy".encode() not in body and b"024083123451" not in body  # sealed before it reaches the disk
    person = PersonOpener(SERVER_SEALING).open(record["sealed"], "gate-1")
    assert person == {"id": "024083123451", "name": "Nguyễn Gia Mạnh", "birth": "1983-03-21", "sex": "M"}


def test_no_name_or_id_is_written_to_the_station_disk_in_the_clear(station, tmp_path):
    station.handle_text(PERSON)
    files = [p for p in tmp_path.rglob("*") if p.is_file()]
    assert any(p.name.startswith("outbox.sqlite3") for p in files)  # the database and its WAL
    for path in files:
        data = path.read_bytes()
        assert "Mạnh".encode() not in data and b"024083123451" not in data, path


def test_card_held_up_is_one_silent_decision_then_already_counted(station):
    assert station.handle_text(PERSON).result is Result.ACCEPTED_OFFLINE
    station.clock_fake.advance(0.5)
    assert station.handle_text(PERSON) is None  # same card still in front of the camera
    station.clock_fake.advance(5)
    assert station.handle_text(PERSON).result is Result.ALREADY_COUNTED
    station.clock_fake.advance(40)
    out = station.handle_text(PERSON)
    assert (out.result, out.direction) == (Result.ACCEPTED_OFFLINE, "out")
    assert station.outbox.backlog() == 2


def test_every_demo_sample_gets_its_documented_verdict(station):
    for sample in demo_samples():
        station.clock_fake.advance(2)
        out = station.handle_text(sample.text)
        expected = sample.expect
        got = "accepted" if out.result is Result.ACCEPTED_OFFLINE else out.reason
        assert got == expected, sample.name


def test_raw_bytes_from_a_serial_scanner_with_bad_utf8_are_refused(station):
    out = station.handle_text(b"024083123451||Nguy\xff\xfen|21031983|Nam|x|06042021")
    assert (out.result, out.reason) == (Result.REFUSED, "bad_encoding")


def test_full_disk_shows_a_fault_and_recovers_by_itself(station):
    db = station.outbox._db
    pages = db.execute("PRAGMA page_count").fetchone()[0]
    db.execute(f"PRAGMA max_page_count={pages + 2}")  # the "disk" fills after a few records
    accepted = 0
    for i in range(500):
        station.clock_fake.advance(60)
        out = station.handle_text(PERSON.replace("024083123451", f"0240831{i:05d}"))
        if out.result is Result.FAULT:
            break
        accepted += 1
    assert (out.result, out.reason) == (Result.FAULT, "storage")
    assert [e.fault for e in station.events if isinstance(e, StationState)][-1] == "storage"
    assert station.outbox.backlog() == accepted  # nothing shown green was lost
    db.execute("PRAGMA max_page_count=1073741823")
    station.clock_fake.advance(60)
    assert station.handle_text(PERSON.replace("024083123451", "024083199999")).result is Result.ACCEPTED_OFFLINE
    assert [e.fault for e in station.events if isinstance(e, StationState)][-1] == ""
    assert station.outbox.backlog() == accepted + 1


def test_a_broken_listener_does_not_stop_the_gate(station):
    station.listeners.insert(0, lambda e: 1 / 0)
    assert station.handle_text(PERSON).result is Result.ACCEPTED_OFFLINE
    assert any(getattr(e, "result", None) is Result.ACCEPTED_OFFLINE for e in station.events)


def test_times_from_an_unsynced_boot_get_a_clock_record_once_the_clock_syncs(station):
    station.clock_fake.is_synced = False
    station.handle_text(PERSON)
    assert json.loads(station.outbox.pending(1)[0][1])["sync"] is False
    assert not station.check_clock()  # still unsynced: nothing to say yet
    station.clock_fake.is_synced = True
    station.clock_fake.advance(90)
    assert station.check_clock()
    clock = json.loads(station.outbox.pending(10)[-1][1])
    now = station.clock_fake.now()
    assert clock["type"] == "clock" and clock["boot"] == "boot-test"
    assert clock["base"] == int(now.wall_s * 1000) - int(now.mono_s * 1000)
    assert not station.check_clock()  # said once


def test_low_disk_space_refuses_before_a_write_can_fail_and_recovers(station, monkeypatch):
    import shutil as real_shutil

    free = {"mb": 10}
    usage = real_shutil.disk_usage(station.config.state_dir)
    monkeypatch.setattr("edge.housekeeping.shutil.disk_usage",
                        lambda path: usage._replace(free=free["mb"] * 1024 * 1024))
    assert station.check_free_space()
    out = station.handle_text(PERSON)
    assert (out.result, out.reason) == (Result.FAULT, "storage")
    assert station.outbox.backlog() == 0
    free["mb"] = 500
    assert not station.check_free_space()
    assert [e.fault for e in station.events if isinstance(e, StationState)][-1] == ""
    station.clock_fake.advance(5)
    assert station.handle_text(PERSON).result is Result.ACCEPTED_OFFLINE


@pytest.fixture
def server_side(tmp_path, station):
    """The real server code that builds and signs station configs, for this station."""
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qrgate import protocol
    from server.ingest.stationconfig import StationConfigStore
    from conftest import new_storage

    storage = new_storage(tmp_path / "server.sqlite3")
    venue = storage.add_venue("Xe 51B-123.45")
    storage.add_station("gate-1", protocol.public_key_to_text(station.key.public_key()), venue)
    key = Ed25519PrivateKey.generate()
    station.pass_keys["server"] = key.public_key()
    return StationConfigStore(storage), key


def test_pushed_block_list_and_mode_apply_at_once_and_survive_a_restart(station, server_side, tmp_path):
    from server.ingest.stationconfig import StationSettings

    store, key = server_side
    store.block("cccd:024083123451", "quarantine order")
    store.set_settings("gate-1", StationSettings(mode="entry", repeat_window_s=10))
    assert station.apply_config(json.dumps(store.build("gate-1", key)).encode())
    out = station.handle_text(PERSON)
    assert (out.result, out.reason) == (Result.REFUSED, "blocked")
    assert out.masked_name == ""  # the queue is not told who
    assert station.outbox.backlog() == 0
    states = [e for e in station.events if isinstance(e, StationState)]
    assert (states[-1].venue, states[-1].mode) == ("Xe 51B-123.45", "entry")
    # Reboot with no network: the kept config still applies.
    station.close()
    again = Station(station.config, clock=station.clock_fake, source=ListSource([]), decoder=object())
    again.pass_keys["server"] = key.public_key()
    again._use_pushed(again._pushed.load_stored())
    assert again.handle_text(PERSON).reason == "blocked"
    assert again.policy.mode == "entry"
    again.close()


def test_forged_old_or_misaddressed_configs_are_ignored(station, server_side):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    store, key = server_side
    good = store.build("gate-1", key, now_ms=2_000_000)
    assert station.apply_config(json.dumps(good).encode())
    older = store.build("gate-1", key, now_ms=1_000_000)
    assert not station.apply_config(json.dumps(older).encode())
    forged = store.build("gate-1", Ed25519PrivateKey.generate(), now_ms=3_000_000)
    assert not station.apply_config(json.dumps(forged).encode())
    tampered = dict(store.build("gate-1", key, now_ms=4_000_000), mode="exit")
    assert not station.apply_config(json.dumps(tampered).encode())
    for junk in (b"", b"\xff", b"[]", b'{"v": 1}'):
        assert not station.apply_config(junk)
    assert station.pushed.version == good["version"]


def test_a_failing_camera_is_shown_as_a_fault_and_reopened(station, monkeypatch):
    from edge.drivers.ports import ScannedText
    from qrgate.errors import DriverError

    class FlakyCamera:
        name = "flaky"

        def __init__(self, fail):
            self.fail = fail

        def captures(self):
            if self.fail:
                raise DriverError("camera /dev/video0 vanished")
            yield ScannedText(PERSON, 0)

        def close(self):
            pass

    station.source = FlakyCamera(fail=True)
    monkeypatch.setattr(station, "_open_source", lambda: FlakyCamera(fail=False))
    monkeypatch.setattr(station._stop, "wait", lambda delay: False)  # no real pause in the test
    station.run()
    faults = [e.fault for e in station.events if isinstance(e, StationState)]
    assert faults == ["camera", ""]  # shown, then cleared when frames came back
    assert station.outbox.backlog() == 1  # and scanning went on


def test_a_pass_is_checked_on_the_venues_calendar_not_the_systems(station, monkeypatch):
    """A pass handed out at 01:30 in Vietnam carries that day's date; a station whose
    system zone is UTC (a fresh image) still reads the day before there."""
    import datetime as dt
    import time

    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from qrgate.personal_pass import issue_pass, key_id

    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    try:
        key = Ed25519PrivateKey.generate()
        station.pass_keys[key_id(key.public_key())] = key.public_key()
        # 2026-09-21 18:30 UTC is 2026-09-22 01:30 in Asia/Ho_Chi_Minh (the default zone).
        station.clock_fake.t = 1_789_948_800 + 18 * 3600 + 1800 - 1_790_000_000
        assert dt.date.fromtimestamp(station.clock_fake.now().wall_s) == dt.date(2026, 9, 21)
        fresh = issue_pass(key, pid="NV0000AB", name="Trần Thị Mai", issued=dt.date(2026, 9, 22),
                           expires=dt.date(2026, 10, 21))
        out = station.handle_text(fresh)
        assert out.result is Result.ACCEPTED_OFFLINE, out.reason
        station.clock_fake.advance(60)
        ended = issue_pass(key, pid="NV0000CD", name="Lê Văn Tám", issued=dt.date(2026, 9, 1),
                           expires=dt.date(2026, 9, 21))
        out = station.handle_text(ended)
        assert (out.result, out.reason) == (Result.REFUSED, "expired")
    finally:
        monkeypatch.delenv("TZ")
        time.tzset()
