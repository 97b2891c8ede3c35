"""Both tables of docs/reliability.md, measured: faults injected and hostile input tried.

    python -m bench.reliability [--quick] [--json PATH]     both tables (about 5 minutes)
    python -m bench.reliability powercut --cuts 2000         the long power-cut run alone

Faults: station, bridge and broker killed with SIGKILL during a scan run (the same run
as tests/test_chaos.py), power cuts (bench/powercut.py), a week with no broker
(accelerated clock) and a disk that fills again and again. For each: how many times it
was injected, records accepted (green light shown), stored, lost, duplicated.

Hostile input: QR payloads, MQTT records messages and every operation of the web API
(schemathesis, from the OpenAPI document). For each: inputs tried, crashes (an exception
other than the documented refusal), 5xx answers, wrong accepts (a forged or altered
input taken as valid, or a state change without the CSRF token).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import random
import re
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import date
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


@dataclass
class ChaosResult:
    station_kills: int
    bridge_kills: int
    broker_kills: int
    shown: set[int]
    stored_seqs: list[int]
    names: int  # distinct people among the stored rows

    @property
    def lost(self) -> set[int]:
        return self.shown - set(self.stored_seqs)

    @property
    def duplicated(self) -> int:
        # A record stored twice, or one person counted twice within the hour's window.
        return (len(self.stored_seqs) - len(set(self.stored_seqs))) + (len(self.stored_seqs) - self.names)


def chaos_run(env, workdir: Path, kills: int, *, people: int = 60, seed: int = 20211,
              server_process=ServerProcess) -> ChaosResult:
    """Kill the station with SIGKILL at random moments of a scan run, the server (bridge)
    every 4th time and the broker every 6th; then let the station deliver everything.

    ``env`` is a ``ServerRig`` (or the tests' equivalent fixture). "Shown" records are
    those the station logged as "recorded seq N": the line follows the commit and comes
    before the green light.
    """
    from edge.app import Station
    from edge.config import load_station_config
    from edge.drivers.fake import ListSource
    from qrgate.samples import cccd, write_qr_png

    images = workdir / "images"
    images.mkdir(parents=True, exist_ok=True)
    for i in range(people):
        write_qr_png(cccd(f"0793{i:08d}", "", f"Vũ Thị Ngọc {i}", "01011995", "Nữ", "Nam Định", "01012022"),
                     images / f"{i:03d}.png", scale=3)
    setup = env.add_station("gate-chaos", workdir / "st", source={"kind": "folder", "path": str(images)},
                            feedback={"indicators": "gpio", "pin_factory": "mock", "panel": "dummy"},
                            mode="entry", station_options={"resend_after_s": 1.0})
    text = setup.config_path.read_text().replace("repeat_window_s = 30.0", "repeat_window_s = 3600.0")
    setup.config_path.write_text(text)
    server = server_process(env.config.path, workdir / "server.log")
    server.start()
    rng = random.Random(seed)
    shown: set[int] = set()
    log = workdir / "station.log"
    bridge_kills = broker_kills = 0
    try:
        for kill in range(kills):
            with open(log, "wb") as out:
                proc = subprocess.Popen(
                    [str(Path(sys.executable).parent / "qrgate-edge"), "-v", "run", "--config", str(setup.config_path)],
                    stdout=out, stderr=out)
                # Count from the station's first log line, not from the fork: on a busy
                # machine starting Python alone can take longer than the whole window.
                started = time.monotonic()
                while log.stat().st_size == 0 and proc.poll() is None and time.monotonic() - started < 30:
                    time.sleep(0.02)
                try:
                    proc.wait(timeout=rng.uniform(0.6, 1.8))  # the moment of the kill: random
                except subprocess.TimeoutExpired:
                    proc.send_signal(signal.SIGKILL)
                    proc.wait(timeout=10)
            shown |= {int(m) for m in re.findall(rb"recorded seq (\d+)", log.read_bytes())}
            if kill % 6 == 5:
                env.broker.stop(kill=True)
                env.broker.start()
                broker_kills += 1
            if kill % 4 == 2:
                server.kill()  # wherever it is: mid-batch, between a commit and its ack
                server.start()
                bridge_kills += 1
        station = Station(load_station_config(setup.config_path), source=ListSource([]))
        station.start()
        try:
            if not station.publisher.wait_drained(90):
                raise AssertionError(f"the station could not deliver: {station.outbox.backlog()} left")
        finally:
            station.close()
    finally:
        server.stop()
    stored = [r[0] for r in env.storage.sql.rows("SELECT seq FROM checkins WHERE station_id = 'gate-chaos'")]
    names = env.storage.sql.value("SELECT count(DISTINCT name) FROM checkins WHERE station_id = 'gate-chaos'")
    return ChaosResult(kills, bridge_kills, broker_kills, shown, stored, names)


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
    from server.bridge import Bridge
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
    from server.bridge import Bridge

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

    from server.enrol import Enrolment, EnrolSettings
    from server.sms import DevSmsSender
    from server.web import create_app

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


def run(args) -> dict:
    results: dict = {"faults": [], "hostile": [], "power_cuts": []}
    with tempfile.TemporaryDirectory(prefix="reliability-") as tmp:
        base = Path(tmp)
        faults: list[FaultRow] = []
        print("station/bridge/broker kills ...", file=sys.stderr, flush=True)
        rig = ServerRig.start(base / "chaos")
        try:
            started = time.monotonic()
            chaos = chaos_run(rig, base / "chaos", args.kills, people=args.people)
            faults.append(FaultRow(
                "SIGKILL during a scan run: the station each time, the server (bridge) every 4th, the broker every 6th",
                f"{chaos.station_kills} station + {chaos.bridge_kills} bridge + {chaos.broker_kills} broker kills",
                len(chaos.shown), len(chaos.shown & set(chaos.stored_seqs)), len(chaos.lost), chaos.duplicated,
                round(time.monotonic() - started, 1)))
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
    parser = argparse.ArgumentParser(prog="python -m bench.reliability", description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run (about 2 minutes)")
    parser.add_argument("--kills", type=int, help="station kills (default 40; quick 8)")
    parser.add_argument("--people", type=int, default=200, help="QR images in the kill run (default 200)")
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
