"""Benchmarks of the record path against raw baselines measured in the same run.

- outbox: a station's durable signed commit of a sealed check-in (sealing + Outbox.append)
  against a raw Ed25519 sign plus a raw SQLite insert with the same durability (WAL,
  synchronous=FULL);
- bridge: records verified, opened and stored per second by one bridge (Bridge.handle
  into SQLite, no broker) against the raw single-core Ed25519 verify rate;
- drain: a station's backlog delivered through a real Mosquitto (TLS) into the server
  and acked, against the same batches sent through the same broker with nothing done
  to them (the raw broker round trip).

    python bench/bench_ingest.py [--records N] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import sqlite3
import ssl
import statistics
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

from bench.table import print_ratio_table  # noqa: E402
from edge.policy import Instant  # noqa: E402
from edge.queue.outbox import Outbox  # noqa: E402
from qrgate import protocol  # noqa: E402
from qrgate.sealing import PersonOpener, PersonSealer  # noqa: E402

SERVER_SEALING = X25519PrivateKey.generate()

NOW = Instant(1_790_000_000.0, 1.0, "bench-boot")


def record_fields(i: int, sealer: PersonSealer | None = None) -> dict:
    """A check-in as the station makes it: the person sealed to the server's key."""
    sealer = sealer or PersonSealer(SERVER_SEALING.public_key(), "bench-1")
    person = {"id": f"0790{i:08d}", "name": f"Nguyễn Văn Thợ {i}", "birth": "1990-02-01", "sex": "M"}
    return {"type": "checkin", "ts": 1_790_000_000_000 + i, "mono": i, "boot": "bench-boot", "sync": True,
            "dir": "in" if i % 2 else "out", "kind": "cccd", "sealed": sealer.seal(person)}


def signed_records(key: Ed25519PrivateKey, n: int, station: str = "bench-1") -> list[dict]:
    sealer = PersonSealer(SERVER_SEALING.public_key(), station)
    return [protocol.sign_record({**record_fields(i, sealer), "v": 1, "st": station, "seq": i + 1}, key)
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
    from server.bridge import Bridge
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
    from server.bridge import Bridge
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

    def client(user, pw):
        c = mqtt.Client(CallbackAPIVersion.VERSION2, protocol=mqtt.MQTTv5)
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
    pub = client("bench-1", station_pw)
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
    args = parser.parse_args(argv)
    results = run(args.records)
    results["machine"] = {"cpus": os.cpu_count(), "python": sys.version.split()[0]}
    print_table(results)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
