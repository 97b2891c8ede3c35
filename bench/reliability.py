"""Both tables of docs/reliability.md, measured: faults injected and hostile input tried.

    python -m bench.reliability [--quick] [--json PATH]     both tables (about 5 minutes)
    python -m bench.reliability kills --kills 500            the long kill run alone
    python -m bench.reliability powercut --cuts 2000         the long power-cut run alone

Faults: station, bridge and broker killed with SIGKILL while a station scans an endless
queue of people (the same run as tests/test_chaos.py), power cuts (bench/powercut.py), a
week with no broker (accelerated clock) and a disk that fills again and again. For each:
how many times it was injected, records accepted (green light shown), stored, lost,
duplicated.

Hostile input: QR payloads, MQTT records messages and every operation of the web API
(schemathesis, from the OpenAPI document). For each: inputs tried, crashes (an exception
other than the documented refusal), 5xx answers, wrong accepts (a forged or altered
input taken as valid, or a state change without the CSRF token).
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import random
import re
import select
import signal
import struct
import subprocess
import sys
import tempfile
import termios
import threading
import time
import tty
from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from bench import powercut
from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
from provisioning.station import enroll_local, server_public_keys, write_server_config
from server.config import ServerConfig, load_server_config
from server.storage import SqliteStorage

REPO = Path(__file__).resolve().parents[1]


# --- a server, a broker and stations, as the tests set them up ---------------------------


@dataclass
class ServerRig:
    """A real Mosquitto (the project's config), a server config and its database."""

    config: ServerConfig
    storage: SqliteStorage
    venue_id: int
    pass_key_text: str
    sealing_key_text: str
    broker: BrokerProcess

    @classmethod
    def start(cls, directory: Path) -> ServerRig:
        files = BrokerFiles.create(directory / "broker", port=free_port())
        broker = BrokerProcess(files)
        broker.start()
        password = files.add_user(SERVER_USER)
        broker.reload()
        config = load_server_config(write_server_config(directory / "server" / "server.toml", broker=files,
                                                        password=password, web_port=free_port()))
        storage = SqliteStorage(config.database)
        venue = storage.add_venue("Nhà máy Thử - Cổng 1", "factory gate")
        pass_key, sealing_key = server_public_keys(config)
        return cls(config, storage, venue, pass_key, sealing_key, broker)

    def add_station(self, station_id: str, directory: Path, **kwargs):
        setup = enroll_local(storage=self.storage, broker=self.broker.files, station_id=station_id,
                             venue_id=self.venue_id, station_dir=directory, venue_name="Cổng Thử",
                             pass_keys=(self.pass_key_text,), server_key=self.sealing_key_text, **kwargs)
        self.broker.reload()
        return setup

    def close(self) -> None:
        self.broker.stop()


class ServerProcess:
    """`qrgate-server run` (or another ``command`` of it) as a child process, so it can be
    killed."""

    def __init__(self, config_path: Path, log: Path, command: tuple[str, ...] = ("run",)):
        self.config_path = config_path
        self.log = log
        self.command = command
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        with open(self.log, "ab") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())",
                 "-v", *self.command, "--config", str(self.config_path)],
                stdout=log, stderr=log, cwd=REPO, env={**os.environ, "PYTHONUNBUFFERED": "1"})

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.kill()


# --- faults -----------------------------------------------------------------------------


@dataclass
class FaultRow:
    fault: str
    injected: str
    accepted: int
    stored: int
    lost: int
    duplicated: int
    seconds: float
    note: str = ""


class PeopleAtTheScanner:
    """A USB scanner in serial mode (docs/scanners.md) in front of a queue of people that
    never ends, so a station is scanning whenever it is killed.

    A pseudo-terminal stands in for ``/dev/ttyACM0``: the station opens ``path`` (the
    slave) with its own serial driver, and a thread writes one person's CCCD code after
    another, CR-terminated, as fast as the station reads them; a share ``repeat`` of the
    codes (one in five) is someone sent a little earlier (maybe before the last kill),
    who must not be counted twice. The slave is kept open here as well, so the terminal
    outlives every station killed; pyserial empties the input queue when the next
    station opens it (codes sent to a dead station were never scanned), and a code cut
    in half by that lands as one refused scan.
    """

    def __init__(self, seed: int, *, repeat: float = 0.2, recent: int = 40):
        self.master, self._slave = os.openpty()
        tty.setraw(self._slave)  # no echo back to the master before a station sets it up
        self.path = os.ttyname(self._slave)
        os.set_blocking(self.master, False)
        self._rng = random.Random(seed)
        self.repeat, self.recent = repeat, recent
        self.people = 0  # distinct people whose code was written
        self.codes = 0  # codes written, repeats included
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._feed, name="people-at-the-scanner", daemon=True)

    @staticmethod
    def code(person: int) -> bytes:
        from qrgate.samples import cccd

        return cccd(f"0793{person:08d}", "", f"Vũ Thị Ngọc {person}", "01011995", "Nữ", "Nam Định",
                    "01012022").encode("utf-8") + b"\r"

    def start(self) -> None:
        self._thread.start()

    def waiting(self) -> int:
        """Bytes sent that no station has read yet: more than 0 means a station has work."""
        return struct.unpack("i", fcntl.ioctl(self._slave, termios.FIONREAD, b"\0\0\0\0"))[0]

    def _feed(self) -> None:
        while not self._stop.is_set():
            if self.people and self._rng.random() < self.repeat:
                person = self._rng.randrange(max(0, self.people - self.recent), self.people)
            else:
                person, self.people = self.people, self.people + 1
            data = memoryview(self.code(person))
            while data and not self._stop.is_set():
                select.select([], [self.master], [], 0.1)  # until the station has read some
                try:
                    data = data[os.write(self.master, data):]
                except BlockingIOError:
                    continue
            self.codes += 1

    def close(self) -> None:
        """Stop sending and close the terminal; safe to call twice."""
        if self._stop.is_set():
            return
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(10)
        for fd in (self.master, self._slave):
            os.close(fd)


class StationProcess:
    """`qrgate-edge -v run` as a child whose log arrives through a pipe, line by line, so
    the run can wait for the station's records instead of sleeping. Each "recorded seq N"
    line (logged after the commit, before the green light) is kept with the station's
    own time stamp on it; a line written before a SIGKILL is still read from the pipe."""

    RECORDED = re.compile(rb"recorded seq (\d+)")

    def __init__(self, config_path: Path, log: Path):
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        env.pop("JOURNAL_STREAM", None)  # keep the time stamp on each line
        self.log = log
        self.records: list[tuple[int, float]] = []  # (seq, wall time the station logged it)
        self.ended = False
        self._changed = threading.Condition()
        self.proc = subprocess.Popen(
            [str(Path(sys.executable).parent / "qrgate-edge"), "-v", "run", "--config", str(config_path)],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env)
        self._reader = threading.Thread(target=self._read, name="station-log", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        with open(self.log, "ab") as out:
            for line in self.proc.stdout:
                out.write(line)
                found = self.RECORDED.search(line)
                if found:
                    with self._changed:
                        self.records.append((int(found[1]), _logged_at(line)))
                        self._changed.notify_all()
        with self._changed:
            self.ended = True
            self._changed.notify_all()

    def wait_records(self, count: int, timeout: float) -> bool:
        """Wait until the station has logged ``count`` records; False if it ended or timed out."""
        with self._changed:
            self._changed.wait_for(lambda: len(self.records) >= count or self.ended, timeout)
            return len(self.records) >= count

    def shown(self) -> set[int]:
        with self._changed:
            return {seq for seq, _ in self.records}

    def kill(self) -> float:
        """SIGKILL now; returns the wall time it was sent, once the log is read to its end."""
        sent = time.time()
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=30)
        self._reader.join(30)
        return sent

    def tail(self) -> str:
        return self.log.read_bytes()[-3000:].decode("utf-8", "replace")


def _logged_at(line: bytes) -> float:
    """The wall time of a log line ("2026-11-22 17:49:11,123 INFO ..."), or now."""
    try:
        return datetime.strptime(line[:23].decode(), "%Y-%m-%d %H:%M:%S,%f").timestamp()
    except ValueError:
        return time.time()


@dataclass
class ChaosResult:
    station_kills: int  # SIGKILLs sent to a scanning station
    station_kills_landed: int  # of those: it died of it, a record logged just before, codes still waiting
    exits_by_itself: list[int]  # return codes of stations that ended some other way (must be none)
    bridge_kills: int
    bridge_kills_landed: int  # the server had stored records just before it died, and more were on their way
    broker_kills: int
    broker_kills_landed: int
    shown: set[int]  # seqs logged as "recorded seq N" (the green light followed)
    stored_seqs: list[int]
    committed: int  # the highest seq the station's outbox ever committed (all below it too)
    names: int  # distinct people among the stored rows
    refusals: dict[str, int]  # what the server refused, by reason (must be none)
    people: int  # distinct people whose codes were sent to the scanner
    log: list[dict]  # one entry per kill (see chaos_run)
    seconds: float = 0.0

    @property
    def lost(self) -> set[int]:
        return self.shown - set(self.stored_seqs)

    @property
    def missing(self) -> set[int]:
        """Committed to the outbox (shown or not: a kill can land between the commit and
        the green light) but not at the server."""
        return set(range(1, self.committed + 1)) - set(self.stored_seqs)

    @property
    def committed_not_shown(self) -> int:
        """Records stored whose green light the kill prevented: kills between commit and light."""
        return len(set(self.stored_seqs) - self.shown)

    @property
    def duplicated(self) -> int:
        # A record stored twice, or one person counted twice within the hour's window.
        return (len(self.stored_seqs) - len(set(self.stored_seqs))) + (len(self.stored_seqs) - self.names)


def chaos_run(env, workdir: Path, kills: int, *, seed: int = 20211, server_process=ServerProcess,
              progress=None) -> ChaosResult:
    """Kill a scanning station with SIGKILL ``kills`` times, and the server (bridge)
    during every 4th station run and the broker during every 6th; then let the station
    deliver everything and count what the server stored.

    ``env`` is a ``ServerRig`` (or the tests' equivalent fixture). The station reads an
    endless queue of people from a serial scanner (``PeopleAtTheScanner``), so it is
    recording when each kill comes. The moment of each kill is drawn at random as a
    number of records: the station is killed as soon as it has logged k more (k from 1
    to 12). A kill counts as landed when the station died of it (exit by signal 9), had
    logged a record within the second before and had codes waiting unread. A bridge or
    broker kill counts as landed when the server had stored a record of this station in
    the half second before and records shown green before the kill were not stored yet.
    "Shown" records are those the station logged as "recorded seq N": the line follows
    the commit and comes before the green light.
    """
    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource

    started = time.monotonic()
    rng = random.Random(seed)
    workdir.mkdir(parents=True, exist_ok=True)
    scanner = PeopleAtTheScanner(seed)
    setup = env.add_station("gate-chaos", workdir / "st",
                            source={"kind": "serial", "url_or_path": scanner.path, "baudrate": 115200},
                            feedback={"indicators": "gpio", "pin_factory": "mock", "panel": "dummy"},
                            mode="entry", station_options={"resend_after_s": 1.0})
    text = setup.config_path.read_text().replace("repeat_window_s = 30.0", "repeat_window_s = 3600.0")
    setup.config_path.write_text(text)

    def stored() -> list[tuple[int, int]]:
        return [(r[0], r[1]) for r in env.storage.sql.rows(
            "SELECT seq, received_ms FROM checkins WHERE station_id = 'gate-chaos'")]

    def mid_batch(what: str, run: int, shown_before: set[int], died_ms: int, since_ms: int) -> bool:
        rows = stored()
        latest = max((ms for _, ms in rows if ms >= since_ms), default=0)
        in_flight = len(shown_before - {seq for seq, _ in rows})
        landed = died_ms - latest <= 500 and in_flight > 0
        log.append({"kill": what, "run": run, "last_stored_ms_before": died_ms - latest, "in_flight": in_flight,
                    "landed": landed})
        return landed

    def wait_for_server_at_work(station: StationProcess, run: int, timeout: float = 60) -> None:
        """Until the server (since its last start) has stored a record in the last 0.2 s
        and records the station showed green are still on their way to it."""
        deadline = time.monotonic() + timeout
        while True:
            rows = stored()
            recent = max(server_since_ms, int(time.time() * 1000) - 200)
            if any(ms >= recent for _, ms in rows) and station.shown() - {seq for seq, _ in rows}:
                return
            if station.proc.poll() is not None:
                raise AssertionError(f"station run {run} ended by itself:\n{station.tail()}")
            if time.monotonic() > deadline:
                raise AssertionError(f"the server was not storing for {timeout} s; see {server.log}")
            time.sleep(0.02)  # polling the database for a condition, with a deadline

    server = server_process(env.config.path, workdir / "server.log")
    shown: set[int] = set()
    exits: list[int] = []
    log: list[dict] = []  # one line per kill: what, when, and why it counts as landed or not
    counts = dict.fromkeys(("station", "station_landed", "bridge", "bridge_landed", "broker", "broker_landed"), 0)
    server.start()
    server_since_ms = int(time.time() * 1000)
    scanner.start()
    try:
        for kill in range(kills):
            station = StationProcess(setup.config_path, workdir / "station.log")
            try:
                if not station.wait_records(1, 90):
                    raise AssertionError(f"station run {kill} recorded nothing:\n{station.tail()}")
                for what, due in (("bridge", kill % 4 == 2), ("broker", kill % 6 == 5)):
                    if not due:
                        continue
                    # Kill it while the server is at work: it stored one of this station's
                    # records a moment ago, and more are on their way.
                    wait_for_server_at_work(station, kill)
                    before = shown | station.shown()
                    if what == "bridge":
                        server.kill()  # wherever it is: mid-batch, between a commit and its ack
                    else:
                        env.broker.stop(kill=True)
                    died_ms = int(time.time() * 1000)
                    counts[what] += 1
                    counts[f"{what}_landed"] += mid_batch(what, kill, before, died_ms, server_since_ms)
                    if what == "bridge":
                        server.start()
                    else:
                        env.broker.start()
                    server_since_ms = int(time.time() * 1000)
                # The moment of the kill: as soon as it has logged k more records, k at random.
                if not station.wait_records(len(station.records) + rng.randint(1, 12), 90):
                    raise AssertionError(f"station run {kill} stopped recording:\n{station.tail()}")
                waiting = scanner.waiting()
                sent_at = station.kill()
            finally:
                if station.proc.poll() is None:
                    station.kill()
            counts["station"] += 1
            since_record = sent_at - max(t for _, t in station.records)
            landed = station.proc.returncode == -signal.SIGKILL and since_record <= 1.0 and waiting > 0
            if station.proc.returncode != -signal.SIGKILL:
                exits.append(station.proc.returncode)
            counts["station_landed"] += landed
            log.append({"kill": "station", "run": kill, "returncode": station.proc.returncode,
                        "records": len(station.records), "s_since_last_record": round(since_record, 3),
                        "bytes_waiting": waiting, "landed": landed})
            shown |= station.shown()
            if progress:
                progress(kill, counts, len(shown))
        scanner.close()
        last = Station(load_station_config(setup.config_path), source=ListSource([]))
        last.start()
        try:
            if not last.publisher.wait_drained(180):
                raise AssertionError(f"the station could not deliver: {last.outbox.backlog()} left")
            committed = last.outbox.next_seq() - 1
        finally:
            last.close()
    finally:
        scanner.close()
        server.stop()
    rows = stored()
    names = env.storage.sql.value("SELECT count(DISTINCT name) FROM checkins WHERE station_id = 'gate-chaos'")
    return ChaosResult(counts["station"], counts["station_landed"], exits, counts["bridge"], counts["bridge_landed"],
                       counts["broker"], counts["broker_landed"], shown, [seq for seq, _ in rows], committed, names,
                       env.storage.refusal_counts(), scanner.people, log, round(time.monotonic() - started, 1))


class WeekClock:
    """Wall and monotonic time a test or benchmark moves: one boot, clock synced."""

    def __init__(self):
        self.t = 0.0
        self.boot_id = "bus-boot"

    def now(self):
        from edge.policy import Instant

        return Instant(1_790_000_000.0 + self.t, 100.0 + self.t, self.boot_id)

    def synced(self):
        return True


def broker_gone_for_a_week(env, workdir: Path, *, workers: int = 150, days: int = 7) -> FaultRow:
    """A station in a bus: a week of shuttles with no broker, then back at the depot."""
    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource
    from edge.outcome import Result
    from qrgate.samples import cccd
    from server.ingest.bridge import Bridge
    from server.cli import open_sealing

    started = time.monotonic()
    setup = env.add_station("bus-51b12345", workdir / "bus", source={"kind": "list"},
                            feedback={"indicators": "none", "panel": "none"}, station_options={"resend_after_s": 5.0})
    clock = WeekClock()
    station = Station(load_station_config(setup.config_path), source=ListSource([]), decoder=object(), clock=clock)
    people = [cccd(f"0791{i:08d}", "", f"Phạm Thị Lụa {i}", "01011990", "Nữ", "Thủ Đức", "01012022")
              for i in range(workers)]
    accepted = 0
    try:
        for day in range(days):
            for hour in (6, 17):
                clock.t = day * 86400 + hour * 3600
                for person in people:
                    clock.t += 4
                    if station.handle_text(person).result in (Result.ACCEPTED, Result.ACCEPTED_OFFLINE):
                        accepted += 1
            station.housekeeping()
        bridge = Bridge(env.storage, env.config.mqtt, env.config.base, opener=open_sealing(env.config))
        bridge.start()
        try:
            bridge.wait_connected(30)
            station.publisher.start()
            station.publisher.wait_drained(180)
        finally:
            station.publisher.close()
            bridge.close()
    finally:
        station.close()
    rows = [r[0] for r in env.storage.sql.rows("SELECT seq FROM checkins WHERE station_id = 'bus-51b12345'")]
    stored = len(set(rows) & set(range(1, accepted + 1)))
    return FaultRow("broker unreachable for a week (accelerated clock), then back", f"{days} days",
                    accepted, stored, accepted - stored, len(rows) - len(set(rows)),
                    round(time.monotonic() - started, 1), f"{workers} workers, two trips a day")


def disk_fills_up(workdir: Path, *, fills: int = 20) -> FaultRow:
    """The outbox's disk fills (SQLite's page limit set just above the file) again and
    again: the station shows a fault, never green for a record it could not keep."""
    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource
    from edge.outcome import Result
    from qrgate.samples import cccd
    from qrgate.sealing import x25519_public_to_text

    started = time.monotonic()
    workdir.mkdir(parents=True, exist_ok=True)
    cfg = workdir / "station.toml"
    cfg.write_text(f"""
[station]
id = "gate-full"
server_key = "{x25519_public_to_text(X25519PrivateKey.generate().public_key())}"
[policy]
mode = "toggle"
repeat_window_s = 30
[mqtt]
port = {free_port()}
tls = false
[source]
kind = "list"
""")
    clock = WeekClock()
    station = Station(load_station_config(cfg), clock=clock, source=ListSource([]), decoder=object())
    accepted = faults = 0
    person = 0
    try:
        db = station.outbox._db
        for _ in range(fills):
            pages = db.execute("PRAGMA page_count").fetchone()[0]
            db.execute(f"PRAGMA max_page_count={pages + 2}")
            for _ in range(500):
                clock.t += 60
                person += 1
                out = station.handle_text(cccd(f"0240{person:08d}", "", f"Đỗ Văn Hùng {person}", "21031983", "Nam",
                                               "Quận 3", "06042021"))
                if out.result is Result.FAULT:
                    faults += 1
                    break
                accepted += out.result in (Result.ACCEPTED, Result.ACCEPTED_OFFLINE)
            db.execute("PRAGMA max_page_count=1073741823")  # space freed
        stored = station.outbox.backlog()  # nothing is acked: no broker
    finally:
        station.close()
    # Fewer rows than green lights: a record was lost. More: a scan shown red was kept
    # anyway, and the person's second try would count them twice.
    return FaultRow("disk full under the outbox", f"{faults} fills", accepted, min(stored, accepted),
                    max(0, accepted - stored), max(0, stored - accepted), round(time.monotonic() - started, 1),
                    "each fill: a fault shown, no green light, then the fault clears by itself")


def power_cut_rows(cuts: int, ops: int) -> tuple[list[FaultRow], list[powercut.Summary]]:
    summaries = powercut.run_all(cuts, ops=ops, progress=_progress_cut)
    rows = []
    for target, setting in (("station outbox", ("WAL", "FULL")), ("server storage", ("WAL", "FULL"))):
        mine = [s for s in summaries if s.target == target and (s.journal_mode, s.synchronous) == setting]
        rows.append(FaultRow(
            f"power cut at a random write ({target}, {setting[0]} + synchronous={setting[1]}; "
            "unsynced writes dropped, torn or scattered)",
            f"{sum(s.cuts for s in mine)} cuts", sum(s.at_risk for s in mine), sum(s.kept for s in mine),
            sum(s.lost for s in mine), sum(s.reused for s in mine), round(sum(s.seconds for s in mine), 1),
            "records relied on at each cut, summed over cuts"))
    return rows, summaries


def _progress_cut(s: powercut.Summary) -> None:
    print(f"  power cut: {s.target}, {s.setting}, {s.mode}: {s.cuts} cuts, {s.lost} lost, {s.damaged} damaged",
          file=sys.stderr, flush=True)


# --- hostile input -----------------------------------------------------------------------


@dataclass
class HostileRow:
    input: str
    tried: int
    crashes: int
    errors_5xx: int | None  # None: not an HTTP surface
    wrong_accepts: int
    seconds: float
    note: str = ""


def payload_fuzz(examples: int) -> HostileRow:
    """QR payloads: any bytes or text, mutated real samples, altered and foreign passes."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from edge.payloads import PayloadRefused, parse_payload
    from qrgate.personal_pass import issue_pass, key_id
    from qrgate.samples import demo_samples

    started = time.monotonic()
    issuer, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    keys = {key_id(issuer.public_key()): issuer.public_key()}
    genuine = issue_pass(issuer, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1), expires=date(2030, 1, 1))
    genuine_person = parse_payload(genuine, pass_keys=keys)
    foreign = issue_pass(stranger, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1),
                         expires=date(2030, 1, 1))
    samples = [s.text for s in demo_samples(issuer)]
    counts = {"tried": 0, "crashes": 0, "wrong": 0}
    crash_examples: list[str] = []

    def mutate(text: str, data) -> str:
        i = data.draw(st.integers(0, max(0, len(text) - 1)))
        return text[:i] + data.draw(st.text(max_size=3)) + text[i + 1:]

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        kind = data.draw(st.sampled_from(["bytes", "text", "sample", "pass", "foreign"]))
        if kind == "bytes":
            payload = data.draw(st.binary(max_size=5000))
        elif kind == "text":
            payload = data.draw(st.text(max_size=5000))
        elif kind == "sample" and samples:
            payload = mutate(data.draw(st.sampled_from(samples)), data)
        elif kind == "foreign":
            payload = foreign
        else:
            payload = mutate(genuine, data)
        counts["tried"] += 1
        try:
            person = parse_payload(payload, pass_keys=keys)
        except PayloadRefused:
            return
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            counts["crashes"] += 1
            if len(crash_examples) < 3:
                crash_examples.append(f"{type(exc).__name__}: {exc}")
            return
        if kind == "foreign" or (kind == "pass" and person.kind == "pass" and person != genuine_person):
            counts["wrong"] += 1  # a pass not signed by a trusted key, or altered, taken as valid

    one()
    return HostileRow("QR payloads: any bytes/text up to 5,000 chars, mutated real samples, altered passes, "
                      "passes signed by an untrusted key", counts["tried"], counts["crashes"], None, counts["wrong"],
                      round(time.monotonic() - started, 1), "; ".join(crash_examples))


def record_fuzz(examples: int, workdir: Path) -> HostileRow:
    """MQTT records messages to the bridge: bytes, almost-records, altered signed records."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    from qrgate import protocol
    from qrgate.sealing import PersonOpener
    from server.ingest.bridge import Bridge

    started = time.monotonic()
    key = Ed25519PrivateKey.generate()
    storage = SqliteStorage(workdir / "records-fuzz.sqlite3")
    venue = storage.add_venue("Fuzz")
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    bridge = Bridge(storage, opener=PersonOpener(X25519PrivateKey.generate()))
    base = {"v": protocol.VERSION, "type": "checkin", "st": "gate-1", "ts": 1_790_000_000_000, "mono": 1000,
            "boot": "b1", "sync": True, "dir": "in", "kind": "cccd",
            "person": {"id": "024083123451", "name": "Nguyễn Gia Mạnh", "birth": "1983-03-21", "sex": "M"}}
    values = st.recursive(st.none() | st.booleans() | st.integers() | st.text(max_size=40),
                          lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c, max_size=4),
                          max_leaves=10)
    counts = {"tried": 0, "crashes": 0, "wrong": 0}
    crash_examples: list[str] = []
    seq = iter(range(1, 10**9))

    @settings(max_examples=examples, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    @given(data=st.data())
    def one(data):
        kind = data.draw(st.sampled_from(["bytes", "almost", "altered"]))
        topic = protocol.records_topic("gate-1")
        if kind == "bytes":
            payload = data.draw(st.binary(max_size=3000))
        elif kind == "almost":
            records = data.draw(st.lists(st.fixed_dictionaries({}, optional={k: values for k in [*base, "seq", "sig"]}),
                                         max_size=4))
            payload = json.dumps({"records": records}).encode()
        else:  # a validly signed record with one field changed after signing
            rec = protocol.sign_record({**base, "seq": next(seq)}, key)
            field_name = data.draw(st.sampled_from(sorted(k for k in rec if k != "sig")))
            rec[field_name] = data.draw(values.filter(lambda v: v != rec[field_name]))
            payload = json.dumps({"records": [rec]}).encode()
        counts["tried"] += 1
        before = storage.count_checkins()
        try:
            bridge.handle(topic, payload)
        except Exception as exc:  # noqa: BLE001
            counts["crashes"] += 1
            if len(crash_examples) < 3:
                crash_examples.append(f"{type(exc).__name__}: {exc}")
        counts["wrong"] += storage.count_checkins() - before  # none of these is a valid record

    one()
    return HostileRow("MQTT records messages: any bytes, almost-records, signed records altered after signing",
                      counts["tried"], counts["crashes"], None, counts["wrong"], round(time.monotonic() - started, 1),
                      "; ".join(crash_examples))


def api_fuzz(examples: int, workdir: Path) -> HostileRow:
    """Every web API operation from the OpenAPI document (schemathesis), each case sent
    anonymously, logged in with the CSRF token, and logged in without it."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    sys.path.insert(0, str(REPO / "tests"))  # the tests' web harness (a site with SMS codes read back)
    from test_web_stations import RecordingBroker
    from test_web_support import FakeClock, Site

    from server.ingest.enrol import Enrolment, EnrolSettings
    from server.accounts.sms import DevSmsSender
    from server.web.app import create_app

    started = time.monotonic()
    storage = SqliteStorage(workdir / "api-fuzz.sqlite3")
    broker = RecordingBroker()
    enrolment = Enrolment(storage, broker, EnrolSettings("mqtt.example.vn", 8883, "CA", "SEAL", ("PASS",)))
    sender, clock = DevSmsSender(), FakeClock()
    site = Site(storage, sender, clock, create_app(storage, sender=sender, clock=clock, enrolment=enrolment,
                                                   broker_files=broker))
    visitor = site.visitor().login("0912486419")
    visitor.create_venue(name="Fuzz <b>venue</b>")
    cookies, csrf = dict(visitor.http.cookies), visitor.csrf()
    schema = schemathesis.openapi.from_asgi("/openapi.json", site.app)
    counts = {"tried": 0, "crashes": 0, "5xx": 0, "wrong": 0}
    notes: list[str] = []
    operations = [result.ok() for result in schema.get_all_operations()]
    for op in operations:
        @settings(max_examples=examples, deadline=None, suppress_health_check=list(HealthCheck), database=None)
        @given(case=op.as_strategy())
        def one(case):
            changes = case.method.upper() not in ("GET", "HEAD", "OPTIONS")
            for how, kwargs in (("anonymous", {}), ("owner", {"cookies": cookies, "headers": {"X-CSRF-Token": csrf}}),
                                ("owner without CSRF", {"cookies": cookies})):
                counts["tried"] += 1
                try:
                    response = case.call(**kwargs)
                except Exception as exc:  # noqa: BLE001
                    counts["crashes"] += 1
                    if len(notes) < 3:
                        notes.append(f"{case.method} {case.formatted_path}: {type(exc).__name__}")
                    continue
                if response.status_code >= 500:
                    counts["5xx"] += 1
                    if len(notes) < 3:
                        notes.append(f"{case.method} {case.formatted_path} ({how}): {response.status_code}")
                elif changes and how != "owner" and response.status_code < 300:
                    counts["wrong"] += 1  # a state change accepted without the CSRF token
                    if len(notes) < 3:
                        notes.append(f"{case.method} {case.formatted_path} ({how}): {response.status_code}")

        one()
    return HostileRow(f"web API: all {len(operations)} operations of the OpenAPI document (schemathesis), "
                      "anonymous, logged in, and logged in without the CSRF token",
                      counts["tried"], counts["crashes"], counts["5xx"], counts["wrong"],
                      round(time.monotonic() - started, 1), "; ".join(notes))


# --- the report ----------------------------------------------------------------------------


def fault_table(rows: list[FaultRow]) -> str:
    lines = ["| fault | how many times injected | records accepted | records stored | lost | duplicated |",
             "|---|---|---|---|---|---|"]
    lines += [f"| {r.fault} | {r.injected} | {r.accepted} | {r.stored} | {r.lost} | {r.duplicated} |" for r in rows]
    return "\n".join(lines)


def hostile_table(rows: list[HostileRow]) -> str:
    lines = ["| input | inputs tried | crashes | 5xx | wrong accepts |", "|---|---|---|---|---|"]
    lines += [f"| {r.input} | {r.tried} | {r.crashes} | {'-' if r.errors_5xx is None else r.errors_5xx} "
              f"| {r.wrong_accepts} |" for r in rows]
    return "\n".join(lines)


def chaos_row(chaos: ChaosResult) -> FaultRow:
    return FaultRow(
        "SIGKILL while a station scans an endless queue of people: the station at the end of each run, "
        "the server (bridge) during every 4th run, the broker during every 6th",
        f"{chaos.station_kills} station ({chaos.station_kills_landed} mid-work) + {chaos.bridge_kills} bridge "
        f"({chaos.bridge_kills_landed} mid-batch) + {chaos.broker_kills} broker ({chaos.broker_kills_landed} "
        "mid-batch) kills",
        len(chaos.shown), len(chaos.shown & set(chaos.stored_seqs)), len(chaos.lost), chaos.duplicated,
        chaos.seconds, f"{chaos.committed_not_shown} records committed but cut off before their green light, "
        f"{len(chaos.missing)} committed and not stored, {len(chaos.exits_by_itself)} stations ended unkilled")


def kills_main(argv: list[str]) -> int:
    """The long kill run alone, on a broker and server of its own."""
    parser = argparse.ArgumentParser(prog="python -m bench.reliability kills",
                                     description="SIGKILL a scanning station, the bridge and the broker; "
                                                 "count what the server stored")
    parser.add_argument("--kills", type=int, default=500, help="station kills (default 500)")
    parser.add_argument("--seed", type=int, default=20211)
    parser.add_argument("--json", type=Path, help="write the result, with one line per kill, here")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")

    def progress(kill: int, counts: dict, shown: int) -> None:
        if kill % 25 == 24 or kill == args.kills - 1:
            print(f"  {kill + 1} runs: {counts}, {shown} shown", file=sys.stderr, flush=True)

    with tempfile.TemporaryDirectory(prefix="reliability-kills-") as tmp:
        rig = ServerRig.start(Path(tmp))
        try:
            chaos = chaos_run(rig, Path(tmp) / "chaos", args.kills, seed=args.seed, progress=progress)
        finally:
            rig.close()
    row = chaos_row(chaos)
    print(fault_table([row]))
    print(f"\n{row.note}; {len(chaos.stored_seqs)} stored, {chaos.people} people at the scanner; {chaos.seconds} s")
    if args.json:
        args.json.write_text(json.dumps({"command": "python -m bench.reliability kills " + " ".join(argv),
                                         "row": vars(row), "result": vars(chaos)},
                                        indent=2, ensure_ascii=False, default=sorted) + "\n")
    ok = not (chaos.lost or chaos.missing or chaos.duplicated or chaos.refusals or chaos.exits_by_itself)
    return 0 if ok else 1


def run(args) -> dict:
    results: dict = {"faults": [], "hostile": [], "power_cuts": []}
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        base = Path(tmp)
        faults: list[FaultRow] = []
        print("station/bridge/broker kills ...", file=sys.stderr, flush=True)
        rig = ServerRig.start(base / "chaos")
        try:
            faults.append(chaos_row(chaos_run(rig, base / "chaos", args.kills)))
            print("broker gone for a week ...", file=sys.stderr, flush=True)
            faults.append(broker_gone_for_a_week(rig, base / "chaos", workers=args.workers))
        finally:
            rig.close()
        print("power cuts ...", file=sys.stderr, flush=True)
        cut_rows, summaries = power_cut_rows(args.cuts, args.ops)
        faults[1:1] = cut_rows
        print("disk full ...", file=sys.stderr, flush=True)
        faults.append(disk_fills_up(base / "full", fills=args.fills))
        print("hostile input ...", file=sys.stderr, flush=True)
        hostile = [payload_fuzz(args.examples), record_fuzz(args.examples, base),
                   api_fuzz(args.api_examples, base)]
    results["faults"] = [vars(r) for r in faults]
    results["hostile"] = [vars(r) for r in hostile]
    results["power_cuts"] = [{**vars(s), "setting": s.setting} for s in summaries]
    results["markdown"] = {"faults": fault_table(faults), "hostile": hostile_table(hostile),
                           "power_cuts": powercut.markdown(summaries)}
    return results


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == ["powercut"]:
        return powercut.main(argv[1:])
    if argv[:1] == ["kills"]:
        return kills_main(argv[1:])
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 2 minutes)")
    parser.add_argument("--kills", type=int, help="station kills (default 40; quick 8)")
    parser.add_argument("--cuts", type=int, help="power cuts per setting and cut mode (default 60; quick 15)")
    parser.add_argument("--ops", type=int, default=400, help="transactions per power-cut workload (default 400)")
    parser.add_argument("--workers", type=int, default=150, help="workers on the bus for the offline week")
    parser.add_argument("--fills", type=int, help="times the disk fills (default 20; quick 5)")
    parser.add_argument("--examples", type=int, help="fuzz examples per parser (default 2000; quick 300)")
    parser.add_argument("--api-examples", type=int, help="schemathesis examples per operation (default 30; quick 5)")
    parser.add_argument("--json", type=Path, help="write the results here")
    args = parser.parse_args(argv)
    # Each refused fuzz input is logged as a warning by the code under test: thousands of them.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    quick = args.quick
    args.kills = args.kills or (8 if quick else 40)
    args.cuts = args.cuts or (15 if quick else 60)
    args.fills = args.fills or (5 if quick else 20)
    args.examples = args.examples or (300 if quick else 2000)
    args.api_examples = args.api_examples or (5 if quick else 30)
    if quick:
        args.workers = min(args.workers, 30)
    started = time.monotonic()
    results = run(args)
    results["command"] = "python -m bench.reliability " + " ".join(argv)
    results["seconds"] = round(time.monotonic() - started, 1)
    print("## Faults\n")
    print(results["markdown"]["faults"])
    print("\n## Hostile input\n")
    print(results["markdown"]["hostile"])
    print("\n## Power cuts by setting\n")
    print(results["markdown"]["power_cuts"])
    print(f"\n{results['seconds']} s")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2, ensure_ascii=False, default=sorted) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
