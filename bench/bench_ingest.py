"""Benchmarks of the record path against raw baselines measured in the same run.

- outbox: a station's durable signed commit of a sealed check-in (sealing + Outbox.append)
  against a raw Ed25519 sign plus a raw SQLite insert with the same durability (WAL,
  synchronous=FULL);
- bridge: records verified, opened and stored per second by one bridge (Bridge.handle
  into SQLite, no broker) against the raw single-core Ed25519 verify rate;
- drain: a station's backlog delivered through a real Mosquitto (TLS) into the server
  and acked, against the same batches sent through the same broker with nothing done
  to them (the raw broker round trip).
- workers: 1, 2 and 3 `qrgate-server bridge` worker processes on one shared
  subscription, fed by several stations at once through the real broker: records stored
  and acked per second, against the raw single-core verify rate (so a ratio above 1 means
  more than one core's worth of signature checks);
- store: the database alone (Storage.store_records of verified records, 200 a batch), the
  ceiling any number of workers meets;
- connections: the broker's memory per idle TLS station connection.

    python bench/bench_ingest.py [--records N] [--json PATH]
    python bench/bench_ingest.py --workers-only [--workers 1,2,3] [--backend sqlite]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

from bench.table import parse_counts, print_ratio_table  # noqa: E402
from edge.policy import Instant  # noqa: E402
from edge.queue.outbox import Outbox  # noqa: E402
from qrgate import protocol  # noqa: E402
from qrgate.sealing import PersonOpener, PersonSealer  # noqa: E402

SERVER_SEALING = X25519PrivateKey.generate()

NOW = Instant(1_790_000_000.0, 1.0, "bench-boot")


def record_fields(i: int, sealer: PersonSealer | None = None, ts0: int = 1_790_000_000_000) -> dict:
    """A check-in as the station makes it: the person sealed to the server's key."""
    sealer = sealer or PersonSealer(SERVER_SEALING.public_key(), "bench-1")
    person = {"id": f"0790{i:08d}", "name": f"Nguyễn Văn Thợ {i}", "birth": "1990-02-01", "sex": "M"}
    return {"type": "checkin", "ts": ts0 + i, "mono": i, "boot": "bench-boot", "sync": True,
            "dir": "in" if i % 2 else "out", "kind": "cccd", "sealed": sealer.seal(person)}


def signed_records(key: Ed25519PrivateKey, n: int, station: str = "bench-1", ts0: int = 1_790_000_000_000) -> list[dict]:
    sealer = PersonSealer(SERVER_SEALING.public_key(), station)
    return [protocol.sign_record({**record_fields(i, sealer, ts0), "v": 1, "st": station, "seq": i + 1}, key)
            for i in range(n)]


def per_second(n: int, seconds: float) -> float:
    return n / seconds if seconds > 0 else float("inf")


def bench_outbox(workdir: Path, n: int) -> dict:
    key = Ed25519PrivateKey.generate()
    body = protocol.canonical_json(signed_records(key, 1)[0])
    t = time.perf_counter()
    for i in range(n):
        key.sign(body)
    sign_s = time.perf_counter() - t

    db = sqlite3.connect(workdir / "raw.sqlite3", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.execute("PRAGMA synchronous=FULL")
    db.execute("CREATE TABLE t (seq INTEGER PRIMARY KEY, body BLOB, at INTEGER)")
    t = time.perf_counter()
    for i in range(n):
        db.execute("BEGIN IMMEDIATE")
        db.execute("INSERT INTO t VALUES (?, ?, ?)", (i + 1, body, i))
        db.execute("COMMIT")
    sqlite_s = time.perf_counter() - t
    db.close()

    box = Outbox(workdir / "outbox.sqlite3", station_id="bench-1", key=key, person_secret=b"b" * 32)
    sealer = PersonSealer(SERVER_SEALING.public_key(), "bench-1")
    latencies = []
    t = time.perf_counter()
    for i in range(n):
        t0 = time.perf_counter()
        box.append(record_fields(i, sealer), person_hash=box.person_hash(f"cccd:{i}"), now=NOW)
        latencies.append(time.perf_counter() - t0)
    ours_s = time.perf_counter() - t
    box.close()
    baseline_s = sign_s + sqlite_s
    return {
        "records": n,
        "raw_sign_us": sign_s / n * 1e6,
        "raw_sqlite_commit_us": sqlite_s / n * 1e6,
        "baseline_us": baseline_s / n * 1e6,
        "outbox_append_us": ours_s / n * 1e6,
        "outbox_append_median_ms": statistics.median(latencies) * 1000,
        "ratio_to_baseline": ours_s / baseline_s,
    }


def bench_bridge(workdir: Path, n: int, batch: int = 200) -> dict:
    from server.ingest.bridge import Bridge
    from server.storage import SqliteStorage

    key = Ed25519PrivateKey.generate()
    records = signed_records(key, n)
    pub = key.public_key()
    import base64

    pairs = [(base64.b64decode(r["sig"]), protocol.signing_bytes(r)) for r in records]
    t = time.perf_counter()
    for sig, data in pairs:
        pub.verify(sig, data)
    openssl_s = time.perf_counter() - t
    # The raw libsodium rate (PyNaCl): the library the bridge uses, so the baseline.
    from nacl.signing import VerifyKey

    sodium = VerifyKey(base64.b64decode(protocol.public_key_to_text(pub)))
    t = time.perf_counter()
    for sig, data in pairs:
        sodium.verify(data, sig)
    verify_s = time.perf_counter() - t

    storage = SqliteStorage(workdir / "server.sqlite3")
    venue = storage.add_venue("Bench")
    storage.add_station("bench-1", protocol.public_key_to_text(pub), venue)
    bridge = Bridge(storage, opener=PersonOpener(SERVER_SEALING))
    messages = [
        protocol.encode_batch(protocol.canonical_json(r) for r in records[i:i + batch])
        for i in range(0, n, batch)
    ]
    topic = protocol.records_topic("bench-1")
    t = time.perf_counter()
    for m in messages:
        bridge.handle(topic, m)
    ours_s = time.perf_counter() - t
    assert storage.count_checkins() == n
    raw_rate = per_second(n, verify_s)
    ours_rate = per_second(n, ours_s)
    return {"records": n, "batch": batch, "raw_verify_per_s": raw_rate,
            "raw_openssl_verify_per_s": per_second(n, openssl_s), "bridge_per_s": ours_rate,
            "ratio_to_baseline": ours_rate / raw_rate}


def bench_drain(workdir: Path, n: int) -> dict:
    """A backlog of n records through a real broker: our path vs the raw broker round trip."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from edge.queue.publisher import Publisher
    from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
    from provisioning.station import write_server_config
    from qrgate.config import MqttSettings
    from server.ingest.bridge import Bridge
    from server.config import load_server_config
    from server.storage import SqliteStorage

    files = BrokerFiles.create(workdir / "broker", port=free_port())
    server_pw = files.add_user(SERVER_USER)
    station_pw = files.add_user("bench-1")
    broker = BrokerProcess(files)
    broker.start()
    try:
        key = Ed25519PrivateKey.generate()
        box = Outbox(workdir / "drain-outbox.sqlite3", station_id="bench-1", key=key, person_secret=b"b" * 32)
        sealer = PersonSealer(SERVER_SEALING.public_key(), "bench-1")
        for i in range(n):
            box.append(record_fields(i, sealer), person_hash=f"h{i}", now=NOW)
        bodies = [body for _, body in box.pending(n)]
        batch = 200
        payloads = [protocol.encode_batch(bodies[i:i + batch]) for i in range(0, n, batch)]

        # Raw broker: the same payloads published QoS 1 and received by a subscriber.
        raw_s = _raw_roundtrip(files, server_pw, station_pw, payloads)

        cfg = load_server_config(write_server_config(workdir / "srv" / "server.toml", broker=files,
                                                     password=server_pw, web_port=free_port()))
        storage = SqliteStorage(cfg.database)
        venue = storage.add_venue("Bench")
        storage.add_station("bench-1", protocol.public_key_to_text(key.public_key()), venue)
        bridge = Bridge(storage, cfg.mqtt, cfg.base, opener=PersonOpener(SERVER_SEALING))
        bridge.start()
        bridge.wait_connected(15)
        (workdir / "station.pw").write_text(station_pw)
        settings = MqttSettings(host=files.host, port=files.port, ca_file=str(files.ca_cert),
                                username="bench-1", password_file=str(workdir / "station.pw"))
        t = time.perf_counter()
        pub = Publisher(box, settings, workdir, batch_size=batch)
        pub.start()
        drained = pub.wait_drained(300)
        ours_s = time.perf_counter() - t
        pub.close()
        bridge.close()
        assert drained and storage.count_checkins() == n, "drain did not complete"
    finally:
        broker.stop()
    return {"records": n, "raw_broker_s": raw_s, "drain_s": ours_s,
            "raw_broker_per_s": per_second(n, raw_s), "drain_per_s": per_second(n, ours_s),
            "ratio_to_baseline": (n / ours_s) / (n / raw_s)}


def _raw_roundtrip(files, server_pw: str, station_pw: str, payloads: list[bytes]) -> float:
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    got = threading.Event()
    count = [0]

    def client(user, pw, client_id=""):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        c.username_pw_set(user, pw)
        c.tls_set(ca_certs=str(files.ca_cert), cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(100)
        return c

    ready = threading.Event()
    sub = client("qrgate-server", server_pw)

    def on_message(c, u, m):
        count[0] += 1
        if count[0] == len(payloads):
            got.set()

    sub.on_message = on_message
    sub.on_subscribe = lambda *a: ready.set()
    sub.on_connect = lambda c, *a: c.subscribe(protocol.records_topic("+"), qos=1)
    sub.connect(files.host, files.port)
    sub.loop_start()
    pub = client("bench-1", station_pw, "station-bench-1")  # a station's own client id, as the broker binds it
    pub.connect(files.host, files.port)
    pub.loop_start()
    ready.wait(15)
    t = time.perf_counter()
    for p in payloads:
        pub.publish(protocol.records_topic("bench-1"), p, qos=1)
    got.wait(300)
    elapsed = time.perf_counter() - t
    for c in (pub, sub):
        c.disconnect()
        c.loop_stop()
    return elapsed


BACKENDS = ("sqlite", "postgres")
WORKER_STATIONS = 6  # stations publishing at once, so every worker has batches to take


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise SystemExit(f"--backend must be one of {', '.join(BACKENDS)}, not {backend!r}")
    if backend == "postgres":
        try:
            from server.storage.postgres import PostgresStorage  # noqa: F401
        except ImportError as exc:
            raise SystemExit(f"--backend postgres: {exc}") from None


@contextlib.contextmanager
def _bench_storage(backend: str, cfg, admin_dsn: str | None, purpose: str):
    """A fresh database for one run: (storage, dsn or None for SQLite)."""
    if backend == "sqlite":
        from server.storage import SqliteStorage

        yield SqliteStorage(cfg.database), None
        return
    from bench.bench_pg import scratch_database
    from server.storage.postgres import PostgresStorage

    with scratch_database(admin_dsn, purpose) as dsn:
        storage = PostgresStorage(dsn, data_dir=cfg.data_dir)
        try:
            yield storage, dsn
        finally:
            storage.pool.close()


def worker_main(config: str, worker_id: int, dsn: str) -> None:
    """A bridge worker on PostgreSQL for the bench (`qrgate-server bridge` takes its
    database from server.toml; the bench gives each run a scratch database instead)."""
    import logging

    from server.cli import ensure_dashboard_rollup, open_sealing, startup_lock
    from server.config import load_server_config
    from server.storage.postgres import PostgresStorage
    from server.ingest.workers import make_worker, run_worker

    logging.basicConfig(level=logging.INFO, stream=sys.stderr)
    cfg = load_server_config(config)
    with startup_lock(config):
        storage = PostgresStorage(dsn, data_dir=cfg.data_dir)
        bridge = make_worker(storage, cfg.mqtt, cfg.base, worker_id, opener=open_sealing(cfg))
        # As `qrgate-server bridge` does: the dashboards' roll-up triggers count each row.
        ensure_dashboard_rollup(cfg, storage)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *a: stop.set())
    bridge.start()
    try:
        run_worker(bridge, stop)
    finally:
        bridge.close()
        storage.pool.close()


class _StationClient:
    """One station's MQTT side in the bench: publishes pre-signed batches, counts its acks."""

    def __init__(self, files, station_id: str, password: str):
        import paho.mqtt.client as mqtt
        from paho.mqtt.enums import CallbackAPIVersion

        self.station_id = station_id
        self.acked: set[int] = set()
        self.lock = threading.Lock()
        self.ready = threading.Event()
        c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"station-{station_id}", protocol=mqtt.MQTTv5)
        c.username_pw_set(station_id, password)
        c.tls_set(ca_certs=str(files.ca_cert), cert_reqs=ssl.CERT_REQUIRED)
        c.max_inflight_messages_set(100)
        c.on_connect = lambda client, *a: client.subscribe(protocol.acks_topic(station_id), qos=1)
        c.on_subscribe = lambda *a: self.ready.set()
        c.on_message = self._on_ack
        self.client = c
        c.connect(files.host, files.port)
        c.loop_start()

    def _on_ack(self, client, userdata, message) -> None:
        stored = protocol.Ack.from_bytes(message.payload).stored
        with self.lock:
            self.acked.update(stored)

    def count(self) -> int:
        with self.lock:
            return len(self.acked)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def _start_worker(config: Path, worker_id: int, log: Path, dsn: str | None) -> subprocess.Popen:
    if dsn is None:
        command = ["-c", "from server.cli import main; raise SystemExit(main())", "-v",
                   "bridge", "--config", str(config), "--worker-id", str(worker_id)]
    else:
        command = ["-c", "import sys; from bench.bench_ingest import worker_main; "
                   "worker_main(sys.argv[1], int(sys.argv[2]), sys.argv[3])", str(config), str(worker_id), dsn]
    with open(log, "ab") as out:
        return subprocess.Popen([sys.executable, *command], stdout=out, stderr=out, cwd=REPO_ROOT,
                                env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _wait_for(predicate, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise RuntimeError(f"bench: timed out waiting for {what}")
        time.sleep(0.01)  # polling a result in a benchmark, bounded by the deadline


def _raw_verify_rate(key: Ed25519PrivateKey, records: list[dict], rounds: int = 3) -> float:
    """Raw libsodium verifies per second on one core, over these records: the best of
    ``rounds`` passes, so a moment of load elsewhere does not lower the bar."""
    import base64

    from nacl.signing import VerifyKey

    sodium = VerifyKey(base64.b64decode(protocol.public_key_to_text(key.public_key())))
    pairs = [(base64.b64decode(r["sig"]), protocol.signing_bytes(r)) for r in records]
    best = 0.0
    for _ in range(rounds):
        t = time.perf_counter()
        for sig, data in pairs:
            sodium.verify(data, sig)
        best = max(best, per_second(len(pairs), time.perf_counter() - t))
    return best


def bench_workers(workdir: Path, n: int, counts: tuple[int, ...] = (1, 2, 3), backend: str = "sqlite",
                  batch: int = 200, repeat: int = 1, dsn: str | None = None) -> dict:
    """n records from WORKER_STATIONS stations through a real broker into k bridge worker
    processes, for each k in ``counts``: records stored and acked per second (the best of
    ``repeat`` runs), each with the raw verify rate measured just before it."""
    _check_backend(backend)
    from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
    from provisioning.station import write_server_config
    from server.config import load_server_config

    admin = None
    if backend == "postgres":
        from bench.bench_pg import admin_dsn

        admin = admin_dsn(dsn)

    files = BrokerFiles.create(workdir / "wbroker", port=free_port())
    server_pw = files.add_user(SERVER_USER)
    stations = [f"bench-w{i}" for i in range(WORKER_STATIONS)]
    station_pw = {s: files.add_user(s) for s in stations}
    keys = {s: Ed25519PrivateKey.generate() for s in stations}
    per_station = n // len(stations)
    payloads = []  # interleaved by station, as many stations would send them
    # Made now, as live check-ins are (a PostgreSQL month partition for them exists).
    now_ms = int(time.time() * 1000)
    signed = {s: signed_records(keys[s], per_station, station=s, ts0=now_ms) for s in stations}
    for first in range(0, per_station, batch):
        for s in stations:
            payloads.append((s, protocol.encode_batch(protocol.canonical_json(r) for r in signed[s][first:first + batch])))
    total = per_station * len(stations)
    broker = BrokerProcess(files)
    broker.start()
    rows = []
    try:
        for k, attempt in [(k, a) for k in counts for a in range(repeat)]:
            run_dir = workdir / f"workers-{k}-{attempt}"
            cfg = load_server_config(write_server_config(run_dir / "server.toml", broker=files, password=server_pw,
                                                         web_port=free_port()))
            _write_sealing_key(cfg)
            with _bench_storage(backend, cfg, admin, f"workers{k}") as (storage, run_dsn):
                elapsed, raw, cpu = _one_workers_run(storage, run_dsn, cfg, k, run_dir, files, stations, station_pw,
                                                     keys, signed, payloads, total, broker.proc.pid)
            row = {"workers": k, "records": total, "seconds": elapsed, "stored_per_s": per_second(total, elapsed),
                   "raw_verify_per_s": raw, "ratio_to_raw_verify": per_second(total, elapsed) / raw,
                   "cpu_us_per_record": {who: used / total * 1e6 for who, used in cpu.items()}}
            best = next((r for r in rows if r["workers"] == k), None)
            if best is None:
                rows.append(row)
            elif row["stored_per_s"] > best["stored_per_s"]:
                rows[rows.index(best)] = row
    finally:
        broker.stop()
    return {"backend": backend, "stations": len(stations), "batch": batch, "runs": rows}


def _one_workers_run(storage, dsn, cfg, k, run_dir, files, stations, station_pw, keys, signed, payloads,
                     total, broker_pid) -> tuple[float, float, dict]:
    """k workers on ``storage``, all the payloads published at once: (seconds until every
    record was acked, raw verify rate measured just before, CPU seconds used meanwhile by
    the workers, the broker and the stations (this process))."""
    from server.ingest.workers import retire_worker

    venue = storage.add_venue("Bench")
    for s in stations:
        storage.add_station(s, protocol.public_key_to_text(keys[s].public_key()), venue)
    procs = [_start_worker(cfg.path, i, run_dir / f"worker{i}.log", dsn) for i in range(1, k + 1)]
    clients: list[_StationClient] = []
    try:
        for i, proc in enumerate(procs, 1):
            log = run_dir / f"worker{i}.log"
            _wait_for(lambda: proc.poll() is not None or b"subscribed" in log.read_bytes(), 60,
                      f"worker {i} subscribed")
            if proc.poll() is not None:
                raise RuntimeError(f"bench: worker {i} exited; see {log}")
        clients = [_StationClient(files, s, station_pw[s]) for s in stations]
        for c in clients:
            c.ready.wait(15)
        by_id = {c.station_id: c for c in clients}
        raw = _raw_verify_rate(keys[stations[0]], signed[stations[0]][:2000])
        pids = {"workers": [p.pid for p in procs], "broker": [broker_pid], "stations": [os.getpid()]}
        cpu0 = {who: sum(_process_cpu_s(p) for p in ps) for who, ps in pids.items()}
        t = time.perf_counter()
        for s, payload in payloads:
            by_id[s].client.publish(protocol.records_topic(s), payload, qos=1)
        _wait_for(lambda: sum(c.count() for c in clients) >= total, 600, "every ack")
        elapsed = time.perf_counter() - t
        cpu = {who: sum(_process_cpu_s(p) for p in ps) - cpu0[who] for who, ps in pids.items()}
        stored = storage.count_checkins()
        if stored != total:
            raise RuntimeError(f"bench: {stored} stored, expected {total}")
    finally:
        for c in clients:
            c.close()
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            proc.wait(timeout=30)
        for i in range(1, k + 1):  # the next run starts with a group of exactly its own workers
            retire_worker(cfg.mqtt, cfg.base, i)
    return elapsed, raw, cpu


def _write_sealing_key(cfg) -> None:
    """The workers open sealed persons with the server's key: give them the bench's one."""
    from cryptography.hazmat.primitives import serialization

    path = Path(cfg.sealing_key_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(SERVER_SEALING.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                              serialization.NoEncryption()))


def bench_store(workdir: Path, n: int, batch: int = 200, backend: str = "sqlite", dsn: str | None = None) -> dict:
    """The database alone: verified, opened records stored in batches, one process."""
    from server.ingest.bridge import Bridge
    from server.storage import SqliteStorage

    key = Ed25519PrivateKey.generate()
    records = signed_records(key, n, station="bench-s", ts0=int(time.time() * 1000))
    with contextlib.ExitStack() as stack:
        if backend == "sqlite":
            storage = SqliteStorage(workdir / "store.sqlite3")
        else:
            from bench.bench_pg import admin_dsn, scratch_database
            from server.storage.postgres import PostgresStorage

            run_dsn = stack.enter_context(scratch_database(admin_dsn(dsn), "store"))
            storage = PostgresStorage(run_dsn, data_dir=workdir)
            stack.callback(storage.pool.close)
        venue = storage.add_venue("Bench")
        storage.add_station("bench-s", protocol.public_key_to_text(key.public_key()), venue)
        info = storage.station("bench-s")
        checked = Bridge(storage, opener=PersonOpener(SERVER_SEALING), check_threads=1)._check_chunk(
            records, "bench-s", _keys_for(storage, "bench-s"))

        def size() -> int:
            if backend == "sqlite":
                storage.db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
                return (workdir / "store.sqlite3").stat().st_size
            with storage.pool.connection() as conn:
                return conn.execute("SELECT pg_database_size(current_database())").fetchone()[0]

        empty = size()
        t = time.perf_counter()
        for i in range(0, n, batch):
            storage.store_records(info, checked[i:i + batch])
        elapsed = time.perf_counter() - t
        grown = size() - empty  # the rows and their indexes, not the empty database
    return {"backend": backend, "records": n, "batch": batch, "store_per_s": per_second(n, elapsed),
            "bytes_per_record": grown / n}


def _keys_for(storage, station_id: str):
    from server.ingest.bridge import RecordVerifier

    return RecordVerifier(storage).station(station_id)[1]


def bench_connections(workdir: Path, n: int = 300) -> dict:
    """Broker memory per idle TLS station connection (Mosquitto's resident set, before/after)."""
    import paho.mqtt.client as mqtt
    from paho.mqtt.enums import CallbackAPIVersion

    from provisioning.broker import BrokerFiles, BrokerProcess, free_port

    files = BrokerFiles.create(workdir / "cbroker", port=free_port())
    # One account per connection: each station's password opens only its own client id.
    passwords = [files.add_user(f"bench-c-{i}") for i in range(n)]
    broker = BrokerProcess(files)
    broker.start()

    def rss_kib() -> int:
        for line in Path(f"/proc/{broker.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
        return 0

    clients = []
    try:
        before = rss_kib()
        ctx = ssl.create_default_context(cafile=str(files.ca_cert))
        for i in range(n):
            c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"station-bench-c-{i}", protocol=mqtt.MQTTv5)
            c.username_pw_set(f"bench-c-{i}", passwords[i])
            c.tls_set_context(ctx)
            c.connect(files.host, files.port, keepalive=600)
            clients.append(c)
        for _ in range(50):  # read every CONNACK: the connections are fully up
            for c in clients:
                c.loop(timeout=0.001)
        after = rss_kib()
    finally:
        for c in clients:
            c.disconnect()
        broker.stop()
    return {"connections": n, "rss_before_kib": before, "rss_after_kib": after,
            "kib_per_connection": (after - before) / n}


def bench_broker(workdir: Path, n: int, batch: int = 200, small: int = 20000, rounds: int = 10) -> dict:
    """One Mosquitto node alone (TLS, QoS 1, one publisher, one subscriber): record batches
    (n records sent ``rounds`` times, so the broker's CPU time is long enough to read) and
    small status-sized messages per second, nothing done with them."""
    from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port

    files = BrokerFiles.create(workdir / "bbroker", port=free_port())
    server_pw = files.add_user(SERVER_USER)
    station_pw = files.add_user("bench-1")
    broker = BrokerProcess(files)
    broker.start()
    try:
        key = Ed25519PrivateKey.generate()
        bodies = [protocol.canonical_json(r) for r in signed_records(key, n)]
        payloads = [protocol.encode_batch(bodies[i:i + batch]) for i in range(0, n, batch)] * rounds
        n *= rounds
        cpu = _process_cpu_s(broker.proc.pid)
        batches_s = _raw_roundtrip(files, server_pw, station_pw, payloads)
        batches_cpu = _process_cpu_s(broker.proc.pid) - cpu
        status = protocol.canonical_json({"online": True, "fw": "0.1.0", "backlog": 0, "sync": True})
        cpu = _process_cpu_s(broker.proc.pid)
        small_s = _raw_roundtrip(files, server_pw, station_pw, [status] * small)
        small_cpu = _process_cpu_s(broker.proc.pid) - cpu
    finally:
        broker.stop()
    # The Python clients on both ends set the pace of the small messages; the broker's own
    # CPU time per message says what one Mosquitto core could carry.
    return {"records": n, "batch": batch, "records_per_s": per_second(n, batches_s),
            "records_per_broker_cpu_s": per_second(n, batches_cpu),
            "small_messages": small, "small_per_s": per_second(small, small_s),
            "small_per_broker_cpu_s": per_second(small, small_cpu)}


def _process_cpu_s(pid: int) -> float:
    """User + system CPU seconds a process has used (/proc/PID/stat)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def run_workers(records: int, counts: tuple[int, ...] = (1, 2, 3), backend: str = "sqlite", repeat: int = 1,
                dsn: str | None = None) -> dict:
    """The scaling figures (docs/scaling.md): workers, the database alone, broker memory,
    and the raw verify rate they are compared with, all from one run."""
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp:
        work = Path(tmp)
        raw = bench_bridge(work, min(records, 5000))
        workers = bench_workers(work, records, counts, backend, repeat=repeat, dsn=dsn)
        store = bench_store(work, records, backend=backend, dsn=dsn)
        conns = bench_connections(work)
        broker = bench_broker(work, records)
    return {"workers": workers, "raw_verify_per_s": raw["raw_verify_per_s"], "one_bridge_in_process": raw,
            "store": store, "connections": conns, "broker": broker}


def print_workers_table(results: dict) -> None:
    raw = results["raw_verify_per_s"]
    w = results["workers"]
    b = results["one_bridge_in_process"]
    rows = [("1 bridge in process, no broker (Bridge.handle)", f"{b['bridge_per_s']:.0f} records/s",
             f"raw libsodium verify (1 core) {raw:.0f}/s", f"{b['bridge_per_s'] / raw:.2f}")]
    for r in w["runs"]:
        rows.append((f"{r['workers']} bridge worker{'s' if r['workers'] > 1 else ''} via Mosquitto ({w['backend']})",
                     f"{r['stored_per_s']:.0f} records/s", f"raw libsodium verify (1 core) {r['raw_verify_per_s']:.0f}/s",
                     f"{r['ratio_to_raw_verify']:.2f}"))
        cpu = r["cpu_us_per_record"]
        rows.append(("  CPU per record: workers / broker / stations", f"{cpu['workers']:.0f} / {cpu['broker']:.0f} /"
                     f" {cpu['stations']:.0f} us", "", ""))
    s = results["store"]
    rows.append((f"database alone ({s['backend']}, store_records, batches of 200)", f"{s['store_per_s']:.0f} records/s",
                 f"raw libsodium verify (1 core) {raw:.0f}/s", f"{s['store_per_s'] / raw:.2f}"))
    rows.append((f"  database size after {s['records']} records", f"{s['bytes_per_record']:.0f} bytes/record", "", ""))
    k = results["broker"]
    rows.append(("Mosquitto alone: batches of 200 records, TLS, QoS 1", f"{k['records_per_s']:.0f} records/s",
                 f"raw libsodium verify (1 core) {raw:.0f}/s", f"{k['records_per_s'] / raw:.2f}"))
    rows.append(("  per second of Mosquitto's own CPU", f"{k['records_per_broker_cpu_s']:.0f} records", "", ""))
    rows.append(("Mosquitto alone: status-sized messages", f"{k['small_per_s']:.0f} messages/s", "", ""))
    rows.append(("  per second of Mosquitto's own CPU", f"{k['small_per_broker_cpu_s']:.0f} messages", "", ""))
    c = results["connections"]
    rows.append((f"broker memory, {c['connections']} idle TLS stations", f"{c['kib_per_connection']:.1f} KiB/station",
                 f"{c['rss_before_kib']} KiB before", ""))
    print_ratio_table(rows)


def run(records: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="qrgate-bench-") as tmp:
        work = Path(tmp)
        results = {
            "outbox": bench_outbox(work, min(records, 2000)),
            "bridge": bench_bridge(work, records),
            "drain": bench_drain(work, records),
        }
    # The whole delivery path is bound by signature checks: compare it with them too.
    drain = results["drain"]
    drain["ratio_to_raw_verify"] = drain["drain_per_s"] / results["bridge"]["raw_verify_per_s"]
    return results


def print_table(results: dict) -> None:
    o, b, d = results["outbox"], results["bridge"], results["drain"]
    rows = [
        ("outbox append (sign + durable commit)", f"{o['outbox_append_us']:.0f} us/record",
         f"raw sign + raw SQLite FULL commit {o['baseline_us']:.0f} us", f"{o['ratio_to_baseline']:.2f}"),
        ("bridge verify + open + store (1 worker)", f"{b['bridge_per_s']:.0f} records/s",
         f"raw libsodium verify {b['raw_verify_per_s']:.0f}/s", f"{b['ratio_to_baseline']:.2f}"),
        ("  (raw OpenSSL verify, for the choice)", "", f"{b['raw_openssl_verify_per_s']:.0f}/s",
         f"{b['raw_openssl_verify_per_s'] / b['raw_verify_per_s']:.2f}"),
        (f"backlog drain of {d['records']} via Mosquitto", f"{d['drain_per_s']:.0f} records/s ({d['drain_s']:.1f} s)",
         f"raw broker round trip {d['raw_broker_per_s']:.0f}/s", f"{d['ratio_to_baseline']:.3f}"),
        ("  the same drain", "", f"raw libsodium verify {b['raw_verify_per_s']:.0f}/s", f"{d['ratio_to_raw_verify']:.2f}"),
    ]
    print_ratio_table(rows)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=20000)
    parser.add_argument("--json", type=Path)
    parser.add_argument("--workers", default="1,2,3", help="worker counts to measure (default 1,2,3)")
    parser.add_argument("--workers-only", action="store_true", help="only the scaling figures")
    parser.add_argument("--backend", default="sqlite", choices=BACKENDS, help="the workers' database")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count; the fastest counts")
    parser.add_argument("--dsn", help="PostgreSQL server for --backend postgres (scratch databases are made there)")
    args = parser.parse_args(argv)
    counts = parse_counts(parser, args.workers, "--workers")
    _check_backend(args.backend)
    results = {} if args.workers_only else run(args.records)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    if not args.workers_only:
        print_table(results)
        print()
    results["scaling"] = run_workers(args.records, counts, args.backend, max(1, args.repeat), args.dsn)
    print_workers_table(results["scaling"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
