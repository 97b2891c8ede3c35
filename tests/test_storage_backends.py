"""The storage port's behaviour, once, on SQLite and on a real PostgreSQL; and what only
PostgreSQL has: migrations under concurrent starts, month partitions, retention by
partition, the bridge end to end through a real Mosquitto."""

from __future__ import annotations

import json
import threading
from datetime import datetime, timezone

import psycopg
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import wait_until
from conftest_pg import pg_dsn  # noqa: F401 (a fixture)
from qrgate import protocol
from qrgate.errors import UserError
from server.storage import SqliteStorage
from server.storage.postgres import PostgresStorage, open_storage_url
from server.storage.postgres_schema import month_bounds, month_of, partition_name
from server.checkins.postgres_tracer import PostgresTracer
from server.checkins.tracing import Tracer, delete_older_than

pytestmark = pytest.mark.timeout(90)

H = 3_600_000
DAY = 24 * H
T0 = 1_789_948_800_000  # 2026-09-21 00:00 UTC
NOW_S = datetime(2026, 11, 22, 12, tzinfo=timezone.utc).timestamp()  # "now" for every storage here


def utc_ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


class Gate:
    """A registered station that signs check-ins with its own key."""

    def __init__(self, storage, station_id: str, venue_id: int):
        self.storage, self.station_id = storage, station_id
        self.key = Ed25519PrivateKey.generate()
        storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()), venue_id)

    def checkin(self, seq, *, at=T0, person_id="079188001234", name="Trần Thu Hà", direction="in", sync=True,
                boot="b", mono=0, kind="cccd"):
        return protocol.sign_record(
            {"v": 1, "type": "checkin", "st": self.station_id, "seq": seq, "ts": at, "mono": mono, "boot": boot,
             "sync": sync, "dir": direction, "kind": kind,
             "person": {"id": person_id, "name": name, "birth": "1988-01-02", "sex": "F"}}, self.key)

    def clock(self, seq, *, boot, base, mono=60_000):
        return protocol.sign_record({"v": 1, "type": "clock", "st": self.station_id, "seq": seq, "ts": base + mono,
                                     "mono": mono, "boot": boot, "sync": True, "base": base}, self.key)

    def store(self, *records):
        return self.storage.store_records(self.storage.station(self.station_id), list(records))


def rows(storage, query: str, params=()) -> list[tuple]:
    """Raw rows from either backend (``?`` placeholders)."""
    return [tuple(r) for r in storage.sql.rows(query, params)]


def open_backend(kind: str, tmp_path, dsn: str | None = None):
    if kind == "sqlite":
        return SqliteStorage(tmp_path / "server.sqlite3")
    return PostgresStorage(dsn, data_dir=tmp_path, clock=lambda: NOW_S)


@pytest.fixture(params=["sqlite", "postgresql"])
def backend(request, tmp_path):
    dsn = request.getfixturevalue("pg_dsn") if request.param == "postgresql" else None
    storage = open_backend(request.param, tmp_path, dsn)
    storage.reopen = lambda: open_backend(request.param, tmp_path, dsn)  # a second worker on the same data
    yield storage
    if isinstance(storage, PostgresStorage):
        storage.close()


@pytest.fixture
def pg(pg_dsn, tmp_path):  # noqa: F811
    storage = PostgresStorage(pg_dsn, data_dir=tmp_path, clock=lambda: NOW_S)
    yield storage
    storage.close()


# --- the port, on both backends ---

def test_a_repeated_record_is_stored_once_and_acked_every_time(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Chợ Bến Thành"))
    first = gate.checkin(1)
    assert gate.store(first, gate.checkin(2)).new == 2
    repeat = gate.store(first, gate.checkin(2))
    assert repeat.stored == (1, 2) and repeat.new == 0 and not repeat.refused
    again = gate.store(first, first, gate.checkin(3), gate.checkin(3))
    assert again.stored == (1, 1, 3, 3) and again.new == 1 and not again.refused
    assert backend.count_checkins() == 3 and backend.count_checkins("gate-1") == 3
    assert backend.count_checkins("gate-2") == 0


def test_a_different_record_under_a_stored_number_is_a_conflict_and_the_first_stays(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Chợ Bến Thành"))
    gate.store(gate.checkin(1, name="Trần Thu Hà"))
    result = gate.store(gate.checkin(1, name="Kẻ Giả Mạo"), gate.checkin(2))
    assert result.refused == {1: "seq_conflict"} and result.stored == (2,)
    # Inside one batch too: the first of two different records under one number wins.
    inside = gate.store(gate.checkin(5, name="Một"), gate.checkin(5, name="Hai"))
    assert inside.stored == (5,) and inside.refused == {5: "seq_conflict"}
    assert sorted(r[0] for r in rows(backend, "SELECT name FROM checkins WHERE seq IN (1, 5)")) == ["Một", "Trần Thu Hà"]
    assert backend.count_checkins() == 3


def test_a_clock_record_corrects_that_boots_unsynced_times_before_and_after_it(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Xe 51B-123.45"))
    stuck = utc_ms(2020, 1, 1)  # the clock a Pi without RTC may boot with
    gate.store(gate.checkin(1, at=stuck, sync=False, boot="boot-x", mono=5_000),
               gate.checkin(2, at=stuck, sync=False, boot="boot-y", mono=5_000))
    base = T0 + 8 * H  # learned at sync: wall = mono + base
    result = gate.store(gate.clock(3, boot="boot-x", base=base),
                        gate.checkin(4, at=stuck + 2_000, sync=False, boot="boot-x", mono=7_000))
    assert result.stored == (3, 4) and result.new == 2
    got = {r[0]: (r[1], bool(r[2]), r[3]) for r in rows(
        backend, "SELECT seq, wall_ms, time_corrected, wall_ms_station FROM checkins")}
    assert got == {1: (base + 5_000, True, stuck), 4: (base + 7_000, True, stuck + 2_000),
                   2: (stuck, False, stuck)}  # another boot: untouched
    repeat = gate.store(gate.clock(3, boot="boot-x", base=base))
    assert repeat.stored == (3,) and repeat.new == 0
    forged_clock = gate.store(gate.clock(3, boot="boot-x", base=base + H))
    assert forged_clock.refused == {3: "seq_conflict"}
    latest = {r["seq"]: r for r in backend.latest_checkins(10)}
    assert latest[1]["wall_ms"] == base + 5_000 and latest[1]["time_corrected"]


def test_key_rotation_keeps_the_history_and_refuses_going_back_or_reusing_a_key(backend):
    venue = backend.add_venue("Nhà máy A")
    gate = Gate(backend, "gate-1", venue)
    first = protocol.public_key_to_text(gate.key.public_key())
    second = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
    backend.rotate_station_key("gate-1", second, 100)
    assert backend.station_keys("gate-1") == [(1, first), (100, second)]
    assert backend.station("gate-1").public_key == second
    with pytest.raises(UserError, match="must start after seq 100, not at 50"):
        backend.rotate_station_key("gate-1", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), 50)
    with pytest.raises(UserError, match="already used"):
        backend.rotate_station_key("gate-1", first, 200)
    backend.add_station("gate-1", first, venue)  # re-registering starts the history afresh
    assert backend.station_keys("gate-1") == [(1, first)]
    assert backend.station("gate-2") is None


def test_bad_registrations_get_clear_answers(backend):
    venue = backend.add_venue("  Cổng <b>1</b> =cmd|' /C calc'!A0  ")
    key = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
    with pytest.raises(UserError, match="must not be empty"):
        backend.add_venue(" \t ")
    with pytest.raises(UserError, match="no venue with id 999"):
        backend.add_station("gate-1", key, 999)
    with pytest.raises(UserError, match="must be 3-63 characters"):
        backend.add_station("Gate 1; DROP TABLE checkins", key, venue)
    with pytest.raises(ValueError):
        backend.add_station("gate-1", "not a key", venue)
    backend.add_station("gate-1", key, venue)
    assert backend.station("gate-1").venue_id == venue


def test_refusals_are_counted_by_reason(backend):
    for station, reason in [("gate-1", "bad_signature"), ("gate-1", "bad_signature"), ("gate-2", "bad_signature"),
                            ("gate-9", "unknown_station"), ("-", "misaddressed")]:
        backend.count_refusal(station, reason)
    assert backend.refusal_counts() == {"bad_signature": 3, "unknown_station": 1, "misaddressed": 1}


def test_latest_checkins_pages_newest_first_with_the_venue_name(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Chợ Bến Thành"))
    gate.store(*[gate.checkin(s, at=T0 + s * 60_000, person_id=f"0790{s:08d}") for s in range(1, 26)])
    pages, before = [], None
    while page := backend.latest_checkins(10, before_id=before):
        pages.append([r["seq"] for r in page])
        before = page[-1]["id"]
    assert pages == [list(range(25, 15, -1)), list(range(15, 5, -1)), list(range(5, 0, -1))]
    row = backend.latest_checkins(1)[0]
    assert (row["venue"], row["name"], row["id_number"], row["direction"]) == (
        "Chợ Bến Thành", "Trần Thu Hà", "079000000025", "in")


def test_two_workers_storing_the_same_batch_at_once_store_each_record_once(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Nhà máy A"))
    batch = [gate.checkin(s, person_id=f"0790{s:08d}") for s in range(1, 201)]
    other = backend.reopen()
    start = threading.Barrier(2)
    results = {}

    def worker(name, storage):
        start.wait()
        results[name] = storage.store_records(storage.station("gate-1"), batch)

    threads = [threading.Thread(target=worker, args=(n, s)) for n, s in (("a", backend), ("b", other))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    if isinstance(other, PostgresStorage):
        other.close()
    assert results["a"].stored == results["b"].stored == tuple(range(1, 201))
    assert results["a"].new + results["b"].new == 200 and not results["a"].refused and not results["b"].refused
    assert backend.count_checkins() == 200
    assert rows(backend, "SELECT count(*), count(DISTINCT seq) FROM checkins") == [(200, 200)]


def test_hostile_text_is_stored_and_the_signed_record_kept_exactly(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Chợ"))
    names = ["=cmd|' /C calc'!A0", "<script>alert(1)</script>", "Nguyễn " + "A" * 4000,
             "Robert'); DROP TABLE checkins;--", "Nul\x00in the middle"]
    result = gate.store(*[gate.checkin(n + 1, name=name) for n, name in enumerate(names)])
    assert result.stored == (1, 2, 3, 4, 5)
    stored = {r["seq"]: r["name"] for r in backend.latest_checkins(10)}
    assert [stored[s] for s in (1, 2, 3, 4)] == names[:4]
    assert stored[5].startswith("Nul") and stored[5].endswith("in the middle")
    record = json.loads(rows(backend, "SELECT record FROM checkins WHERE seq = 5")[0][0])
    assert record["person"]["name"] == names[4]  # the proof keeps every character
    protocol.verify_record(record, gate.key.public_key())


def test_tracing_gives_the_same_answer_on_both_backends(backend):
    factory, bus = backend.add_venue("Nhà máy A"), backend.add_venue("Xe 51B-123.45")
    gate, ride = Gate(backend, "gate-a", factory), Gate(backend, "bus-1", bus)
    seq = iter(range(1, 10_000))
    day = utc_ms(2026, 9, 30)  # the trace crosses from September into October

    def scan(station, person, name, direction, at):
        station.store(station.checkin(next(seq), at=at, person_id=person, name=name, direction=direction))

    scan(gate, "001", "Ca Bệnh", "in", day + 20 * H)  # a night shift across the month's end
    scan(gate, "001", "Ca Bệnh", "out", day + 28 * H)
    scan(ride, "001", "Ca Bệnh", "in", day + 28 * H + 10 * 60_000)
    scan(ride, "001", "Ca Bệnh", "out", day + 28 * H + 50 * 60_000)
    scan(gate, "002", "Đồng Nghiệp", "in", day + 19 * H)
    scan(gate, "002", "Đồng Nghiệp", "out", day + 27 * H)
    scan(gate, "003", "Khách", "in", day + 23 * H + 30 * 60_000)  # no exit scan: the default stay
    scan(gate, "004", "Ca Ngày", "in", day + 31 * H)  # two hours after: beyond the margin
    scan(ride, "005", "Hành Khách", "in", day + 28 * H + 5 * 60_000)
    scan(ride, "005", "Hành Khách", "out", day + 28 * H + 40 * 60_000)
    scan(gate, "006", "Đi Sớm", "out", day + 20 * H + 30 * 60_000)  # only an exit scan
    tracer = PostgresTracer(backend) if isinstance(backend, PostgresStorage) else Tracer(backend)
    result = tracer.trace("cccd:001", day, day + 2 * DAY, margin_s=15 * 60, default_stay_s=3600)
    assert [(v["venue_id"], v["estimated"]) for v in result["visits"]] == [(factory, False), (bus, False)]
    assert [(c["person_key"], c["venues"]) for c in result["contacts"]] == [
        ("cccd:002", [factory]), ("cccd:003", [factory]), ("cccd:006", [factory]), ("cccd:005", [bus])]
    assert result["contacts"][0]["overlap_minutes"] == pytest.approx(7 * 60 + 15, abs=1)
    assert result["contacts"][0]["name"] == "Đồng Nghiệp"
    nobody = tracer.trace("cccd:404", day, day + 2 * DAY)
    assert nobody["visits"] == [] and nobody["contacts"] == []


def test_retention_deletes_the_same_check_ins_on_both_backends(backend):
    gate = Gate(backend, "gate-1", backend.add_venue("Nhà máy A"))
    now = int(NOW_S * 1000)
    ages = [200, 95, 61, 60.5, 59, 10, 0.5]  # days
    gate.store(*[gate.checkin(n + 1, at=int(now - a * DAY), person_id=f"0790{n:08d}") for n, a in enumerate(ages)])
    with pytest.raises(ValueError, match="at least one day"):
        delete_older_than(backend, 0, now_ms=now)
    assert delete_older_than(backend, 60, now_ms=now) == 4
    assert sorted(r["seq"] for r in backend.latest_checkins(10)) == [5, 6, 7]
    assert backend.count_checkins() == 3
    # After retention a replayed old record is a new record again, as on SQLite.
    assert gate.store(gate.checkin(1, at=int(now - 200 * DAY), person_id="079000000000")).new == 1


# --- PostgreSQL only ---

def test_several_workers_starting_at_once_migrate_the_schema_once(pg_dsn, tmp_path):  # noqa: F811
    start = threading.Barrier(4)
    opened, errors = [], []

    def worker():
        start.wait()
        try:
            opened.append(PostgresStorage(pg_dsn, clock=lambda: NOW_S))
        except Exception as exc:  # noqa: BLE001 (reported below)
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    try:
        assert errors == [] and len(opened) == 4
        assert opened[0].schema_versions() == [1, 2]
        assert opened[0].migrate() == []  # nothing left to do
        names = [p[0] for p in opened[0].partitions()]
        assert names == ["checkins_2026_11", "checkins_2026_12", "checkins_2027_01"]  # this month and two ahead
    finally:
        for storage in opened:
            storage.close()


def where(pg, seq: int) -> str:
    return rows(pg, "SELECT tableoid::regclass::text FROM checkins WHERE seq = ?", [seq])[0][0]


def test_each_month_gets_its_partition_and_stuck_clocks_wait_in_the_default_one(pg):
    gate = Gate(pg, "gate-1", pg.add_venue("Nhà máy A"))
    august, stuck, far = utc_ms(2026, 8, 15), utc_ms(1970, 1, 1, 0, 5), utc_ms(2031, 1, 1)
    gate.store(gate.checkin(1, at=T0), gate.checkin(2, at=august), gate.checkin(3, at=far),
               gate.checkin(4, at=stuck, sync=False, boot="boot-x", mono=300_000))
    assert [where(pg, s) for s in (1, 2, 3, 4)] == [
        "checkins_2026_09", "checkins_2026_08", "checkins_default", "checkins_default"]
    # The clock syncs: the record of 1970 takes its true time and moves to November.
    base = utc_ms(2026, 11, 22, 8)
    gate.store(gate.clock(5, boot="boot-x", base=base))
    assert where(pg, 4) == "checkins_2026_11"
    assert rows(pg, "SELECT wall_ms FROM checkin_keys WHERE seq = 4") == [(base + 300_000,)]
    # A month first seen while its partition is missing takes its rows from the default.
    with pg.pool.connection() as conn:
        conn.execute(
            "INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key, wall_ms, mono_ms, boot_id,"
            " clock_synced, wall_ms_station, received_ms, sig, record) SELECT station_id, 99, venue_id, direction,"
            " kind, person_key, %s, 0, 'b', true, 0, 0, 'x', '{}' FROM checkins WHERE seq = 1",
            [utc_ms(2026, 6, 3)])
    other = PostgresStorage(pg.dsn, clock=lambda: NOW_S)  # another worker, its own view of the partitions
    try:
        assert where(other, 99) == "checkins_default"
        assert other.ensure_partitions([month_of(utc_ms(2026, 6, 3))]) == ["checkins_2026_06"]
        assert where(other, 99) == "checkins_2026_06"
        assert other.ensure_partitions([month_of(T0)]) == []  # made by the first worker already
    finally:
        other.close()
    assert month_bounds(month_of(T0)) == (utc_ms(2026, 9, 1), utc_ms(2026, 10, 1))
    assert partition_name(month_of(T0)) == "checkins_2026_09"


def test_a_record_waiting_for_another_writers_commit_is_answered_by_that_commit(pg, pg_dsn, tmp_path):  # noqa: F811
    """The exact race: worker A has inserted (station, seq) and not committed; B stores
    the same record and must wait, then answer "stored" with one row in the end; if A
    rolls back instead, B's copy is the one stored."""
    gate = Gate(pg, "gate-1", pg.add_venue("Nhà máy A"))
    b = PostgresStorage(pg_dsn, clock=lambda: NOW_S)
    info = pg.station("gate-1")

    def blocked_writers() -> int:
        with pg.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND wait_event_type = 'Lock'").fetchone()[0]

    try:
        for a_commits, seq in ((True, 1), (False, 2)):
            record = gate.checkin(seq)
            answer = {}
            waiter = threading.Thread(target=lambda: answer.setdefault("b", b.store_records(info, [record])))
            a = psycopg.connect(pg_dsn)
            try:
                a.execute("INSERT INTO checkin_keys VALUES (%s, %s, %s, %s)", ["gate-1", seq, record["sig"], T0])
                waiter.start()
                wait_until(lambda: blocked_writers() == 1, 20, "worker B waiting for A's key")
                assert "b" not in answer
                if a_commits:
                    a.execute("INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key,"
                              " wall_ms, mono_ms, boot_id, clock_synced, wall_ms_station, received_ms, sig, record)"
                              " VALUES ('gate-1', %s, %s, 'in', 'cccd', 'cccd:1', %s, 0, 'b', true, %s, 0, %s, '{}')",
                              [seq, info.venue_id, T0, T0, record["sig"]])
                    a.commit()
                else:
                    a.rollback()
            finally:
                a.close()
            waiter.join(20)
            assert answer["b"].stored == (seq,) and answer["b"].new == (0 if a_commits else 1)
            assert rows(pg, "SELECT count(*) FROM checkins WHERE seq = ?", [seq]) == [(1,)]
    finally:
        b.close()


def test_a_partition_attached_under_a_running_store_costs_a_retry_not_the_batch(pg, pg_dsn):  # noqa: F811
    """Worker A attaches the partition of a month while worker B's batch of that month is
    on its way to the default partition: B's statement fails the partition check, and
    B stores the batch again, into the new partition, instead of failing it."""
    gate = Gate(pg, "gate-1", pg.add_venue("Nhà máy A"))
    b = PostgresStorage(pg_dsn, clock=lambda: NOW_S)
    info = pg.station("gate-1")
    march = month_of(utc_ms(2026, 3, 10))
    name, (lo, hi) = partition_name(march), month_bounds(march)
    records = [gate.checkin(seq, at=utc_ms(2026, 3, 10, 8) + seq) for seq in (1, 2, 3)]
    answer = {}

    def blocked_writers() -> int:
        with pg.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND wait_event_type = 'Lock'").fetchone()[0]

    a = psycopg.connect(pg_dsn)
    try:
        a.execute("LOCK TABLE checkins_default IN ACCESS EXCLUSIVE MODE")
        a.execute(f"CREATE TABLE {name} (LIKE checkins INCLUDING DEFAULTS INCLUDING CONSTRAINTS)")
        a.execute(f"ALTER TABLE checkins ATTACH PARTITION {name} FOR VALUES FROM ({lo}) TO ({hi})")
        waiter = threading.Thread(target=lambda: answer.setdefault("b", b.store_records(info, records)))
        waiter.start()
        wait_until(lambda: blocked_writers() == 1, 20, "worker B waiting for the default partition")
        a.commit()
        waiter.join(20)
    finally:
        a.close()
        b.close()
    assert answer["b"].stored == (1, 2, 3) and answer["b"].new == 3
    assert {where(pg, seq) for seq in (1, 2, 3)} == {name}


def test_a_deadlock_on_the_dashboards_counts_costs_a_retry_not_the_batch(pg, pg_dsn):  # noqa: F811
    """Every stored check-in adds one to its (venue, day) row of the dashboards' roll-up,
    locked until the commit. Worker A holds day 2's row and asks for day 1's while
    worker B's batch (day 1, then day 2) holds day 1's and waits for day 2's: PostgreSQL
    rolls one of them back. B, which waited first, is the one; it stores the batch again
    once A is through, and the counts stay exact."""
    from zoneinfo import ZoneInfo

    from server.reports.dashboard import ensure_rollup

    ensure_rollup(pg, ZoneInfo("Asia/Ho_Chi_Minh"))
    venue = pg.add_venue("Nhà máy A")
    gate = Gate(pg, "gate-1", venue)
    day1, day2 = utc_ms(2026, 11, 20, 3), utc_ms(2026, 11, 21, 3)
    gate.store(gate.checkin(1, at=day1), gate.checkin(2, at=day2))  # both rows exist
    b = PostgresStorage(pg_dsn, clock=lambda: NOW_S)
    info = pg.station("gate-1")
    answer = {}

    def blocked_writers() -> int:
        with pg.pool.connection() as conn:
            return conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database()"
                                " AND wait_event_type = 'Lock'").fetchone()[0]

    def day_of(ms: int) -> int:
        return (ms + 7 * 3_600_000) // 86_400_000

    a = psycopg.connect(pg_dsn)
    try:
        a.execute("UPDATE dashboard_daily SET scans = scans WHERE venue_id = %s AND day = %s", [venue, day_of(day2)])
        waiter = threading.Thread(target=lambda: answer.setdefault(
            "b", b.store_records(info, [gate.checkin(3, at=day1 + 1), gate.checkin(4, at=day2 + 1)])))
        waiter.start()
        wait_until(lambda: blocked_writers() == 1, 20, "worker B waiting for day 2's row")
        a.execute("UPDATE dashboard_daily SET scans = scans WHERE venue_id = %s AND day = %s", [venue, day_of(day1)])
        a.commit()
        waiter.join(20)
    finally:
        a.close()
        b.close()
    assert answer["b"].stored == (3, 4) and answer["b"].new == 2
    assert rows(pg, "SELECT day, scans FROM dashboard_daily WHERE venue_id = ? ORDER BY day", [venue]) == [
        (day_of(day1), 2), (day_of(day2), 2)]


def test_retention_drops_whole_months_and_trims_the_boundary_month(pg):
    gate = Gate(pg, "gate-1", pg.add_venue("Nhà máy A"))
    now = int(NOW_S * 1000)  # 2026-11-22 12:00
    at = [utc_ms(2026, 7, 4), utc_ms(2026, 8, 10), utc_ms(2026, 9, 1), utc_ms(2026, 9, 30), utc_ms(2026, 10, 5),
          utc_ms(1970, 1, 2)]
    gate.store(*[gate.checkin(n + 1, at=a, person_id=f"0790{n:08d}") for n, a in enumerate(at)])
    before = [p[0] for p in pg.partitions()]
    assert {"checkins_2026_07", "checkins_2026_08", "checkins_2026_09"} <= set(before)
    cutoff_days = (now - utc_ms(2026, 9, 15)) // DAY  # the cut falls in mid-September
    assert pg.delete_older_than(cutoff_days, now_ms=now) == 4  # July, August, 1 September, 1970
    after = [p[0] for p in pg.partitions()]
    assert "checkins_2026_07" not in after and "checkins_2026_08" not in after
    assert "checkins_2026_09" in after  # the boundary month keeps its newer rows
    assert sorted(r["seq"] for r in pg.latest_checkins(10)) == [4, 5]
    assert pg.count_checkins() == 2
    run = pg.retention_runs()[-1]
    assert run["rows_deleted"] == 4 and sorted(run["partitions_dropped"]) == ["checkins_2026_07", "checkins_2026_08"]
    assert run["cutoff_ms"] == now - cutoff_days * DAY
    # A later record of a dropped month is stored again: its partition comes back.
    assert gate.store(gate.checkin(10, at=utc_ms(2026, 8, 11))).new == 1
    assert where(pg, 10) == "checkins_2026_08"


def test_the_setting_opens_the_backend_it_names(pg_dsn, tmp_path):  # noqa: F811
    assert isinstance(open_storage_url(tmp_path / "a.sqlite3"), SqliteStorage)
    assert open_storage_url(f"sqlite:///{tmp_path}/b.sqlite3").path == tmp_path / "b.sqlite3"
    url = psycopg.conninfo.conninfo_to_dict(pg_dsn)
    host = url.get("host", "")
    if host.startswith("/") or not host:
        as_url = f"postgresql:///{url['dbname']}" + (f"?host={host}" if host else "")
    else:
        as_url = f"postgresql://{url.get('user', '')}@{host}:{url.get('port', 5432)}/{url['dbname']}"
    folder = tmp_path / "pg-data"
    storage = open_storage_url(as_url, data_dir=folder)
    try:
        assert isinstance(storage, PostgresStorage) and storage.schema_versions() == [1, 2]
        assert storage.data_dir == folder and not list(folder.glob("*.sqlite3*"))  # no SQLite file on the side
    finally:
        storage.close()
    with pytest.raises(UserError, match="use a file path, sqlite:///path or postgresql://"):
        open_storage_url("mysql://root:hunter2@db/qrgate")
    with pytest.raises(UserError) as refused:
        open_storage_url("postgresql://qrgate:hunter2@127.0.0.1:1/qrgate")
    assert "cannot connect to PostgreSQL" in str(refused.value) and "hunter2" not in str(refused.value)


# --- the bridge on PostgreSQL, through a real broker ---

@pytest.mark.timeout(180)
def test_two_bridge_workers_on_postgresql_store_a_stations_backlog_once(tmp_path, broker, pg_dsn):  # noqa: F811
    from edge.policy import Instant
    from edge.queue.outbox import Outbox
    from edge.queue.publisher import Publisher
    from provisioning.broker import SERVER_USER
    from provisioning.station import server_public_keys, write_server_config
    from qrgate.config import MqttSettings
    from qrgate.sealing import PersonSealer, x25519_public_from_text
    from server.ingest.bridge import Bridge
    from server.cli import open_sealing
    from server.config import load_server_config

    password = broker.files.add_user(SERVER_USER)
    station_pw = broker.files.add_user("gate-pg")
    broker.reload()
    cfg = load_server_config(write_server_config(tmp_path / "server" / "server.toml", broker=broker.files,
                                                 password=password, web_port=1))
    _, sealing_text = server_public_keys(cfg)
    storages = [PostgresStorage(pg_dsn, data_dir=cfg.data_dir) for _ in range(2)]
    key = Ed25519PrivateKey.generate()
    storages[0].add_station("gate-pg", protocol.public_key_to_text(key.public_key()),
                            storages[0].add_venue("Cổng PostgreSQL"))
    bridges = [Bridge(s, cfg.mqtt, cfg.base, client_id=f"qrgate-bridge-pg-{n}", opener=open_sealing(cfg))
               for n, s in enumerate(storages, 1)]
    box = Outbox(tmp_path / "outbox.sqlite3", station_id="gate-pg", key=key, person_secret=b"p" * 32)
    sealer = PersonSealer(x25519_public_from_text(sealing_text), "gate-pg")
    now = Instant(1_790_000_000.0, 1.0, "pg-boot")
    for i in range(120):
        person = {"id": f"0790{i:08d}", "name": f"Lê Thị Công Nhân {i}", "birth": "1992-03-04", "sex": "F"}
        box.append({"type": "checkin", "ts": 1_790_000_000_000 + i * 1000, "mono": i, "boot": "pg-boot",
                    "sync": True, "dir": "in", "kind": "cccd", "sealed": sealer.seal(person)},
                   person_hash=f"h{i}", now=now)
    (tmp_path / "station.pw").write_text(station_pw)
    settings = MqttSettings(host=broker.files.host, port=broker.files.port, ca_file=str(broker.files.ca_cert),
                            username="gate-pg", password_file=str(tmp_path / "station.pw"))
    publisher = Publisher(box, settings, tmp_path, batch_size=10)
    try:
        for bridge in bridges:
            bridge.start()
        for bridge in bridges:
            assert bridge.wait_subscribed(30), f"{bridge.client_id} never got its SUBACK"
        publisher.start()
        assert publisher.wait_drained(90), f"backlog left: {box.backlog()}"
    finally:
        publisher.close()
        for bridge in bridges:
            bridge.close()
        box.close()
    check = storages[0]
    try:
        assert check.count_checkins("gate-pg") == 120
        got = rows(check, "SELECT seq, name, record FROM checkins ORDER BY seq")
        assert [r[0] for r in got] == list(range(1, 121))  # every record, exactly once
        assert {r[1] for r in got} == {f"Lê Thị Công Nhân {i}" for i in range(120)}
        for _, _, body in got[:5]:
            protocol.verify_record(protocol.validate_record(json.loads(body)), key.public_key())
        share = [b.counters["stored"] for b in bridges]
        assert sum(share) == 120 and all(n > 0 for n in share), f"not shared: {share}"
    finally:
        for s in storages:
            s.close()
