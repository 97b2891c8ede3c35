"""Several bridge workers on one MQTT v5 shared subscription, against the project's real
Mosquitto (TLS, passwords, ACL): the load is shared, a batch handed to a worker that is
down waits for it, and workers killed at random lose and duplicate nothing.

The kill run is short in CI; `WORKER_KILLS=200` makes it long.
"""

from __future__ import annotations

import os
import random
import signal
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import REPO, ServerProcess, storage_for, wait_until
from edge.policy import Instant
from edge.queue.outbox import Outbox
from edge.queue.publisher import Publisher
from provisioning.broker import SERVER_USER, free_port
from qrgate import protocol
from qrgate.config import MqttSettings
from qrgate.mqtt import connect_async, make_client
from qrgate.sealing import PersonSealer, x25519_public_from_text
from server.ingest.bridge import Bridge, records_filter
from server.cli import open_sealing
from server.ingest.fleet import Fleet
from server.ingest.workers import make_worker

KILLS = int(os.environ.get("WORKER_KILLS", "8"))
pytestmark = pytest.mark.timeout(120 + 8 * KILLS)
NOW = Instant(1_790_000_000.0, 1.0, "workers-boot")


class TestStation:
    """A registered station's identity and broker account, for publishing signed records."""

    __test__ = False

    def __init__(self, server_env, station_id: str, directory: Path):
        self.station_id = station_id
        self.key = Ed25519PrivateKey.generate()
        server_env.storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()),
                                       server_env.venue_id)
        directory.mkdir(parents=True, exist_ok=True)
        (directory / "mqtt.password").write_text(server_env.broker.files.add_user(station_id))
        server_env.broker.reload()
        files = server_env.broker.files
        self.base = directory
        self.settings = MqttSettings(host=files.host, port=files.port, ca_file=str(files.ca_cert),
                                     username=station_id, password_file="mqtt.password")
        self.sealer = PersonSealer(x25519_public_from_text(server_env.sealing_key_text), station_id)

    def fields(self, i: int) -> dict:
        person = {"id": f"0791{i:08d}", "name": f"Lê Thị Công Nhân {i}", "birth": "1992-03-04", "sex": "F"}
        return {"type": "checkin", "ts": 1_790_000_000_000 + i, "mono": i, "boot": "workers-boot", "sync": True,
                "dir": "in", "kind": "cccd", "sealed": self.sealer.seal(person)}

    def record(self, seq: int) -> bytes:
        fields = {**self.fields(seq), "v": protocol.VERSION, "st": self.station_id, "seq": seq}
        return protocol.canonical_json(protocol.sign_record(fields, self.key))


class StationLink:
    """A station's raw MQTT side: publishes batches (waiting for the broker's PUBACK) and
    collects the server's acks. It never sends anything again by itself."""

    def __init__(self, station: TestStation):
        self.station = station
        self.acked: set[int] = set()
        self._lock = threading.Lock()
        self._ready = threading.Event()
        self.client, props = make_client(f"station-{station.station_id}", station.settings, station.base,
                                         persistent=False)
        self.client.on_connect = lambda c, *a: c.subscribe(protocol.acks_topic(station.station_id), qos=1)
        self.client.on_subscribe = lambda *a: self._ready.set()
        self.client.on_message = self._on_ack
        connect_async(self.client, station.settings, props, persistent=False)
        assert self._ready.wait(30), "the station could not connect and subscribe"

    def _on_ack(self, client, userdata, message):
        with self._lock:
            self.acked |= set(protocol.Ack.from_bytes(message.payload).stored)

    def publish(self, seqs) -> None:
        self.publish_payload(protocol.encode_batch(self.station.record(s) for s in seqs))

    def publish_payload(self, payload: bytes) -> None:
        info = self.client.publish(protocol.records_topic(self.station.station_id), payload, qos=1)
        info.wait_for_publish(30)
        assert info.rc == mqtt.MQTT_ERR_SUCCESS and info.is_published()

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def stored_seqs(storage, station_id: str) -> list[int]:
    return [r[0] for r in storage.sql.rows("SELECT seq FROM checkins WHERE station_id = ?", [station_id])]


@pytest.fixture
def workers(server_env):
    """Starts in-process workers by id (each with its own database connection); closes them all."""
    started = []

    def start(worker_id: int):
        cfg = server_env.config
        bridge = make_worker(storage_for(cfg), cfg.mqtt, cfg.base, worker_id, opener=open_sealing(cfg))
        bridge.start()
        assert bridge.wait_connected(30), f"worker {worker_id} did not connect"
        started.append(bridge)
        return bridge

    yield start
    for bridge in started:
        bridge.close()


def subscribed(bridge) -> None:
    assert bridge.wait_subscribed(30), f"{bridge.client_id} never got its SUBACK"


def test_three_workers_share_the_batches_and_each_record_is_stored_once_and_acked(tmp_path, server_env, workers):
    bridges = [workers(n) for n in (1, 2, 3)]
    for b in bridges:
        subscribed(b)
    link = StationLink(TestStation(server_env, "gate-w1", tmp_path / "st"))
    try:
        for first in range(1, 91, 3):
            link.publish(range(first, first + 3))
        wait_until(lambda: link.acked == set(range(1, 91)), 60, "acks for all 90 records")
    finally:
        link.close()
    assert sorted(stored_seqs(server_env.storage, "gate-w1")) == list(range(1, 91))
    share = [b.counters["stored"] for b in bridges]
    assert sum(share) == 90 and all(n > 0 for n in share), f"not shared: {share}"


def test_batches_handed_to_a_stopped_worker_wait_for_it_in_the_broker(tmp_path, server_env, workers):
    first = workers(2)
    other = workers(3)
    subscribed(first)
    subscribed(other)
    first.close()  # a clean stop: its session (and its place in the group) stays in the broker
    link = StationLink(TestStation(server_env, "gate-w2", tmp_path / "st"))
    try:
        for seq in range(1, 21):
            link.publish([seq])  # every batch is in the broker before the worker comes back
        wait_until(lambda: other.counters["stored"] > 0, 30, "the running worker's share")
        again = workers(2)
        wait_until(lambda: link.acked == set(range(1, 21)), 60, "acks for all 20 records")
    finally:
        link.close()
    # Mosquitto hands a shared subscription's batches round-robin to every member whose
    # session exists, running or not: the restarted worker took back its queued share.
    assert again.counters["stored"] > 0
    assert again.counters["stored"] + other.counters["stored"] == 20
    assert sorted(stored_seqs(server_env.storage, "gate-w2")) == list(range(1, 21))


def test_retiring_a_worker_ends_its_session_and_what_it_held(tmp_path, server_env, workers):
    gone = workers(4)
    subscribed(gone)
    gone.close()
    link = StationLink(TestStation(server_env, "gate-w3", tmp_path / "st"))
    try:
        link.publish([1, 2, 3])  # the only member of the group is away: all three wait for it
        out = subprocess.run(
            [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())", "bridge-retire",
             "--config", str(server_env.config.path), "--worker-id", "4"],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 0, out.stderr
        assert "qrgate-bridge-4: session ended" in out.stdout
        back = workers(4)  # a fresh session: nothing is waiting for it any more
        subscribed(back)
        link.publish([4])
        wait_until(lambda: 4 in link.acked, 30, "the ack of a record sent after the retirement")
        # The three it held are gone with its session; a real station sends them again
        # because they were never acked.
        assert link.acked == {4} and stored_seqs(server_env.storage, "gate-w3") == [4]
    finally:
        link.close()


def test_a_station_joining_a_group_it_guessed_takes_no_share_of_the_records(tmp_path, server_env, workers):
    """A station's broker role may not subscribe to the records at all (docs/security.md);
    behind that, the group's name is derived from the server's secret, so a guess could
    only ever join a group of its own."""
    bridge = workers(2)
    subscribed(bridge)
    thief = TestStation(server_env, "gate-w7", tmp_path / "thief")
    joined = threading.Event()
    client, props = make_client("station-gate-w7", thief.settings, thief.base, persistent=False)
    guesses = ["qrgate-bridge", "qrgate", "bridge", "qrgate-server"]
    client.on_connect = lambda c, *a: c.subscribe([(records_filter(g), 1) for g in guesses])
    client.on_subscribe = lambda *a: joined.set()
    connect_async(client, thief.settings, props, persistent=False)
    link = StationLink(TestStation(server_env, "gate-w8", tmp_path / "st"))
    try:
        assert joined.wait(30)
        for seq in range(1, 11):
            link.publish([seq])
        # The link never sends again: a record handed to the thief would never be acked.
        wait_until(lambda: link.acked == set(range(1, 11)), 30, "acks for all 10 records")
    finally:
        link.close()
        client.disconnect()
        client.loop_stop()
    assert bridge.counters["stored"] == 10
    assert bridge.share_group not in guesses and bridge.share_group.startswith("qrgate-bridge-")


def test_an_upgraded_bridge_drops_the_plain_subscription_its_old_session_kept(tmp_path, server_env):
    cfg = server_env.config
    old = Bridge(storage_for(cfg), cfg.mqtt, cfg.base, opener=open_sealing(cfg), share_group=None)
    old.start()
    assert old.wait_subscribed(30)
    old.close()  # its session keeps the plain records subscription
    new = Bridge(storage_for(cfg), cfg.mqtt, cfg.base, opener=open_sealing(cfg))
    new.start()
    link = StationLink(TestStation(server_env, "gate-w5", tmp_path / "st"))
    try:
        assert new.wait_subscribed(30)
        link.publish([1])
        link.publish([2])
        wait_until(lambda: link.acked == {1, 2}, 30, "both acks")
        wait_until(lambda: new.counters["stored"] == 2, 30, "both stored")
    finally:
        link.close()
        new.close()
    # Kept, the old subscription would hand the bridge every batch a second time.
    assert new.counters["duplicate"] == 0


def notifications(sock, until: str, limit: int = 50) -> list[str]:
    seen = []
    for _ in range(limit):
        seen.append(sock.recv(4096).decode())
        if until in seen[-1]:
            return seen
    raise AssertionError(f"no {until!r} in {seen}")


def test_web_without_bridge_and_a_worker_each_tell_systemd_and_together_store_and_ack(tmp_path, server_env):
    sockets, procs = [], []
    metrics_port = free_port()
    try:
        for name, args in (("web", ["run", "--no-bridge"]),
                           ("worker", ["bridge", "--worker-id", "1", "--metrics-port", str(metrics_port)])):
            sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
            sock.bind(str(tmp_path / f"{name}.sock"))
            sock.settimeout(30)
            sockets.append(sock)
            env = {**os.environ, "NOTIFY_SOCKET": str(tmp_path / f"{name}.sock"), "WATCHDOG_USEC": "400000"}
            procs.append(subprocess.Popen(
                [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())", *args,
                 "--config", str(server_env.config.path)],
                env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        web, worker = sockets
        notifications(web, "READY=1")
        assert any("STATUS=serving (records stored by bridge workers)" in m for m in notifications(web, "WATCHDOG=1"))
        assert any("STATUS=subscribed as qrgate-bridge-1" in m for m in notifications(worker, "READY=1"))
        assert any("STATUS=stored 0" in m for m in notifications(worker, "WATCHDOG=1"))
        link = StationLink(TestStation(server_env, "gate-w6", tmp_path / "st"))
        try:
            link.publish([1, 2])
            wait_until(lambda: link.acked == {1, 2}, 30, "acks from the worker")
        finally:
            link.close()
        assert sorted(stored_seqs(server_env.storage, "gate-w6")) == [1, 2]
        with urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10) as resp:
            assert "qrgate_records_stored_total 2.0" in resp.read().decode()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert proc.wait(timeout=20) == 0, proc.stderr.read().decode()[-2000:]
    finally:
        for proc in procs:
            if proc.poll() is None:
                proc.kill()
        for sock in sockets:
            sock.close()


def test_bad_worker_ids_are_refused_with_a_clear_message(server_env):
    for bad in ("0", "65", "-3"):
        out = subprocess.run(
            [sys.executable, "-c", "from server.cli import main; raise SystemExit(main())", "bridge",
             "--config", str(server_env.config.path), "--worker-id", bad],
            capture_output=True, text=True, timeout=60, cwd=REPO)
        assert out.returncode == 1 and "--worker-id must be 1-64" in out.stderr


def test_server_account_reads_only_records_and_status_even_through_a_share(tmp_path, server_env):
    """The ACL gives the server account records and status (shared or not), and nothing
    else: a `$share/.../#` subscription does not open the stations' acks or config."""
    files = server_env.broker.files
    password = files.add_user(SERVER_USER)
    server_env.broker.reload()
    (tmp_path / "pw").write_text(password)
    settings = MqttSettings(host=files.host, port=files.port, ca_file=str(files.ca_cert),
                            username=SERVER_USER, password_file=str(tmp_path / "pw"))
    got: list[str] = []
    ready = threading.Event()
    spy, props = make_client("acl-probe", settings, tmp_path, persistent=False)
    spy.on_connect = lambda c, *a: c.subscribe("$share/probe/#", qos=1)
    spy.on_subscribe = lambda *a: ready.set()
    spy.on_message = lambda c, u, m: got.append(m.topic)
    connect_async(spy, settings, props, persistent=False)
    link = StationLink(TestStation(server_env, "gate-w4", tmp_path / "st"))
    try:
        assert ready.wait(30)
        station = link.client
        denied = spy.publish(f"$share/probe/{protocol.records_topic('gate-w4')}", b"{}", qos=1)
        denied.wait_for_publish(10)  # a share is for subscribing only
        link.publish([1])  # the records topic: delivered through the share
        station.publish(protocol.status_topic("gate-w4"), b'{"online":true}', qos=1).wait_for_publish(10)
        wait_until(lambda: protocol.status_topic("gate-w4") in got, 30, "the status through the share")
        # The server writes a station's acks and config, but never reads them back.
        spy.publish(protocol.config_topic("gate-w4"), b"{}", qos=1).wait_for_publish(10)
        ack = spy.publish(protocol.acks_topic("gate-w4"), protocol.Ack((1,), {}).to_bytes(), qos=1)
        ack.wait_for_publish(10)
        wait_until(lambda: 1 in link.acked, 30, "the ack reaching the station")
        station.publish(protocol.status_topic("gate-w4"), b'{"online":false}', qos=1).wait_for_publish(10)
        wait_until(lambda: got.count(protocol.status_topic("gate-w4")) == 2, 30, "the second status")
        assert sorted(set(got)) == [protocol.records_topic("gate-w4"), protocol.status_topic("gate-w4")]
    finally:
        link.close()
        spy.disconnect()
        spy.loop_stop()


class WorkerProcess(ServerProcess):
    """`qrgate-server bridge --worker-id N` as a child process, so the test can kill it."""

    def __init__(self, config_path: Path, worker_id: int, log: Path):
        super().__init__(config_path, log, ("bridge", "--worker-id", str(worker_id)))
        self.worker_id = worker_id
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        super().start()

    def connected_times(self) -> int:
        """How many times it joined the group (the broker confirmed its subscriptions)."""
        return self.log.read_bytes().count(f"bridge qrgate-bridge-{self.worker_id} subscribed".encode())


class Feeder:
    """Stations making check-ins all the time: each record durably in its outbox, then sent."""

    def __init__(self, stations: list[tuple[TestStation, Outbox, Publisher]], every_s: float):
        self.stations = stations
        self.every_s = every_s
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._run, name="feeder", daemon=True)

    def _run(self) -> None:
        i = 0
        while not self.stop.wait(self.every_s):
            for station, box, pub in self.stations:
                box.append(station.fields(i), person_hash=None, now=NOW)
                pub.wake()
            i += 1


def acked_but_not_stored(storage, box: Outbox) -> set[int]:
    """Records the station was told are stored (gone from its outbox) but the database lacks."""
    upto = box.next_seq()  # read first: anything below it and not pending was acked before we look
    pending = {seq for seq, _ in box.pending(10**9)}
    acked = set(range(1, upto)) - pending
    return acked - set(stored_seqs(storage, box.station_id))


def test_workers_killed_at_random_store_every_record_exactly_once(tmp_path, server_env):
    rng = random.Random(20212)
    stations = []
    for n in range(3):
        st = TestStation(server_env, f"gate-k{n}", tmp_path / f"st{n}")
        box = Outbox(tmp_path / f"st{n}" / "outbox.sqlite3", station_id=st.station_id, key=st.key,
                     person_secret=b"s" * 32)
        pub = Publisher(box, st.settings, st.base, batch_size=20, resend_after_s=1.0, heartbeat_s=3600)
        stations.append((st, box, pub))
    procs = [WorkerProcess(server_env.config.path, n, tmp_path / f"worker{n}.log") for n in (1, 2, 3)]
    feeder = Feeder(stations, every_s=0.02)
    try:
        for p in procs:
            p.start()
        for p in procs:
            wait_until(lambda p=p: p.connected_times() >= 1, 60, f"worker {p.worker_id} connected")
        for _, _, pub in stations:
            pub.start()
        feeder.thread.start()
        for kill in range(KILLS):
            victim = rng.choice(procs)
            try:
                victim.proc.wait(timeout=rng.uniform(0.2, 1.5))  # the moment of the kill: random, not a sync
            except subprocess.TimeoutExpired:
                pass
            before = victim.connected_times()
            victim.kill()  # wherever it is: verifying, mid-commit, between the commit and its PUBACK
            for _, box, _ in stations:
                lost = acked_but_not_stored(server_env.storage, box)
                assert not lost, f"acked but not stored ({box.station_id}): {sorted(lost)}"
            victim.start()
            wait_until(lambda: victim.connected_times() > before, 60, f"worker {victim.worker_id} back")
        feeder.stop.set()
        feeder.thread.join(10)
        for _, box, pub in stations:
            assert pub.wait_drained(90), f"{box.station_id} left: {box.backlog()}"
    finally:
        feeder.stop.set()
        for _, _, pub in stations:
            pub.close()
        for p in procs:
            p.stop()
    made = 0
    for _, box, _ in stations:
        stored = stored_seqs(server_env.storage, box.station_id)
        assert len(stored) == len(set(stored))  # exactly once
        assert sorted(stored) == list(range(1, box.next_seq())), f"{box.station_id}: missing records"
        assert box.refused_count() == 0
        made += box.next_seq() - 1
        box.close()
    # Worker 1 kept the fleet's status: every station is seen.
    assert {r["station_id"] for r in Fleet(server_env.storage).rows() if r["last_seen_ms"]} >= {
        st.station_id for st, _, _ in stations}
    # Two workers storing the same batch (a redelivery racing a resend) is a repeat, never a conflict.
    assert server_env.storage.refusal_counts() == {}
    assert made > 100, "the stations made too few records for the run to mean much"
    print(f"{KILLS} worker kills, {made} records stored once each")
