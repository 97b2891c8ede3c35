"""The fleet at scale: thousands of simulated stations on the project's broker and server,
each figure beside the same broker's raw figure from the same run.

For each fleet size, twice (the project, then the raw baseline):

- project: the broker folder ``BrokerFiles.create`` writes (TLS only, accounts and ACLs
  in the dynamic-security plugin), one account per station bound to its client id, the
  server's database with every station registered, ``qrgate-server bridge --worker-id
  1`` (records and status) on SQLite; the stations of bench/fleet_sim.py connect over
  TLS with their own passwords;
- raw: the same mosquitto binary with a bare configuration (plain TCP, anonymous, no
  plugin, no ACL; fleet_setup.RAW_CONF), the same simulated stations without TLS or
  password, and a bare subscriber in place of the bridge.

Measured: the broker's memory per connected station; the server's CPU per heartbeat
and per record message (the bridge process's CPU time over the messages it handled;
raw: the bare subscriber's); the time from an operator's change to 99 % and 100 % of
stations holding it, for a block-list change (``StationConfigStore.block`` and
``publish_configs``, as ``qrgate-provision block``; raw: a bare client publishing the
same signed configs, retained) and a release notice (``qrgate.updates.announce``; raw:
the same notice, retained); the time from retiring a station (``Fleet.retire`` and
``BrokerFiles.remove_user``, as ``qrgate-provision retire``) to its connection being
closed (raw: the broker closing a connection whose client id another client takes);
and the time for every station to be back after a broker restart, all at once.

    python -m bench.bench_fleet [--sizes 500,1000,2500,5000] [--json PATH]
    python -m bench.bench_fleet --quick          # 20 stations: a smoke run
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import secrets
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

from bench.fleet_raw import RawBroker, raw_publish, take_over  # noqa: E402
from bench.fleet_report import growth, percentile_s, print_table, spread  # noqa: E402
from bench.fleet_setup import (SimProcess, add_station_accounts, cpu_s, machine, raise_open_files,  # noqa: E402
                               rss_kib, start_bridge, stop_process)
from bench.fleet_sim import station_key  # noqa: E402
from qrgate import protocol  # noqa: E402
from qrgate.updates import RELEASES_TOPIC, notice  # noqa: E402

BLOCKED_PERSON = "cccd:079190000042"
RELEASE = "9.8.7"


class Run:
    """One fleet of ``n`` stations on one broker (the project's or the bare one)."""

    def __init__(self, work: Path, n: int, *, raw: bool, sims: int, records: int, server=None):
        self.work, self.n, self.raw, self.records = work, n, raw, records
        self.ids = [f"st-{i:05d}" for i in range(n)]
        self.key_secret = secrets.token_bytes(16)
        self.sims: list[SimProcess] = []
        self.sim_count = max(1, min(sims, n))
        self.server = server  # the project's run, whose database builds the raw run's configs
        self.ingest = None  # the bridge process, or the bare subscriber
        self.timeout = 120 + n * 0.1

    # --- setting up ---
    def setup(self) -> dict:
        t = time.monotonic()
        self.work.mkdir(parents=True, exist_ok=True)
        from provisioning.broker import free_port

        if self.raw:
            self.broker = RawBroker(self.work / "broker", free_port())
            self.passwords = {sid: None for sid in self.ids}
            self.broker.start()
            self.host, self.port, self.ca = "127.0.0.1", self.broker.port, ""
            self.ingest = SimProcess({"host": self.host, "port": self.port, "client_id": "raw-subscriber",
                                      "topics": [protocol.status_topic("+"), protocol.records_topic("+")]},
                                     self.work / "subscriber.log", subscriber=True)
            self.ingest.wait("subscribed", 60)
            self.pass_key, self.sealing_key = self.server.pass_key, self.server.sealing_key
        else:
            self._setup_project()
        setup_s = time.monotonic() - t
        self.rss_start = rss_kib(self.broker.proc.pid)
        per = math.ceil(self.n / self.sim_count)
        for i in range(self.sim_count):
            chunk = self.ids[i * per:(i + 1) * per]
            spec = {"host": self.host, "port": self.port, "tls": not self.raw, "ca": self.ca,
                    "stations": [[sid, self.passwords[sid]] for sid in chunk], "key_secret": self.key_secret.hex(),
                    "server_key": self.sealing_key, "pass_key": self.pass_key, "records": self.records + 1,
                    "max_pending": 32}
            self.sims.append(SimProcess(spec, self.work / f"sim{i}.log"))
        for sim in self.sims:
            sim.wait("ready", self.timeout)
        return {"setup_s": setup_s}

    def _setup_project(self) -> None:
        from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
        from provisioning.station import server_public_keys, write_server_config
        from server.config import load_server_config
        from server.ingest.fleet import Fleet
        from server.ingest.stationconfig import StationConfigStore
        from server.storage.postgres import open_configured

        files = BrokerFiles.create(self.work / "broker", port=free_port())
        server_pw = files.add_user(SERVER_USER)
        self.passwords = add_station_accounts(files, self.ids)
        self.files = files
        self.cfg = load_server_config(write_server_config(self.work / "server" / "server.toml", broker=files,
                                                          password=server_pw, web_port=free_port()))
        self.storage = open_configured(self.cfg)
        self.pass_key, self.sealing_key = server_public_keys(self.cfg)
        venue = self.storage.add_venue("Bench fleet")
        for sid in self.ids:
            key = station_key(self.key_secret, sid)
            self.storage.add_station(sid, protocol.public_key_to_text(key.public_key()), venue)
        self.config_store = StationConfigStore(self.storage)
        self.fleet = Fleet(self.storage)
        self.broker = BrokerProcess(files)
        self.broker.start()
        self.host, self.port, self.ca = files.host, files.port, str(files.ca_cert)
        self.ingest_log = self.work / "bridge.log"
        self.ingest = start_bridge(self.cfg.path, self.ingest_log)

    def close(self) -> None:
        if self.raw:
            if self.ingest is not None:
                self.ingest.close()
        else:
            stop_process(self.ingest)
        for sim in self.sims:
            sim.close()
        if getattr(self, "broker", None) is not None:
            self.broker.stop()

    @property
    def ingest_pid(self) -> int:
        return self.ingest.pid

    def all_sims(self, cmd: dict, ev: str, **match) -> list[dict]:
        for sim in self.sims:
            sim.send(cmd)
        return [sim.wait(ev, self.timeout, **match) for sim in self.sims]

    def ingest_has(self, messages: int) -> None:
        """Wait until the ingest side has handled ``messages`` messages in all."""
        if self.raw:
            self.ingest.send({"cmd": "count", "n": messages, "timeout": self.timeout})
            got = self.ingest.wait("count", self.timeout + 10)["n"]
            if got < messages:
                raise RuntimeError(f"bench: the bare subscriber got {got} of {messages} messages")

    def wait_statuses(self) -> None:
        """Every station's connect status stored by the bridge (project) or received by
        the bare subscriber (raw), so the next phase's CPU is that phase's alone."""
        if self.raw:
            self.ingest_has(self.n)
            return
        deadline = time.monotonic() + self.timeout
        while self.storage.sql.value("SELECT count(*) FROM station_status", [], 0) < self.n:
            if time.monotonic() > deadline:
                raise RuntimeError("bench: the bridge did not store every station's status")
            time.sleep(0.1)  # polling the database for a count; bounded by the deadline

    # --- the measurements ---
    def connect(self) -> dict:
        cpu0 = cpu_s(self.broker.proc.pid)
        done = self.all_sims({"cmd": "connect"}, "connected")
        t0, t1 = min(d["t0"] for d in done), max(d["t"] for d in done)
        self.wait_statuses()
        rss = rss_kib(self.broker.proc.pid)
        return {"connect_s": t1 - t0, "attempts": sum(d["attempts"] for d in done),
                "broker_cpu_ms_per_connect": (cpu_s(self.broker.proc.pid) - cpu0) / self.n * 1000,
                "broker_rss_start_kib": self.rss_start, "broker_rss_connected_kib": rss,
                "broker_kib_per_station": (rss - self.rss_start) / self.n}

    def traffic(self, heartbeats: int) -> dict:
        """Heartbeats with a record after them (whose ack says the bridge is past every
        heartbeat before it: one store thread takes a station's messages in order), then
        records alone; the record's cost is taken off the first phase."""
        n, pids = self.n, {"ingest": self.ingest_pid, "broker": self.broker.proc.pid}
        c0 = {k: cpu_s(p) for k, p in pids.items()}
        sent = self.all_sims({"cmd": "traffic", "heartbeats": heartbeats, "records": 1, "wait_acks": not self.raw},
                             "traffic_done")
        self.ingest_has(n + n * heartbeats + n)
        c1 = {k: cpu_s(p) for k, p in pids.items()}
        self.all_sims({"cmd": "traffic", "heartbeats": 0, "records": self.records, "wait_acks": not self.raw},
                      "traffic_done")
        self.ingest_has(n + n * heartbeats + n + n * self.records)
        c2 = {k: cpu_s(p) for k, p in pids.items()}
        out = {"heartbeats": sum(s["heartbeats"] for s in sent)}
        for who in pids:
            per_record = (c2[who] - c1[who]) / (n * self.records)
            out[f"{who}_cpu_us_per_record"] = per_record * 1e6
            out[f"{who}_cpu_us_per_heartbeat"] = ((c1[who] - c0[who]) - n * per_record) / out["heartbeats"] * 1e6
        if not self.raw:
            stored = self.storage.count_checkins()
            if stored != n * (1 + self.records):
                raise RuntimeError(f"bench: {stored} check-ins stored, expected {n * (1 + self.records)}")
        return out

    def expect(self, what: str, action, **params) -> dict:
        """Arm every station, run ``action`` (the operator's change), and time how long
        until 99 % and 100 % of the stations hold it."""
        self.all_sims({"cmd": "expect", "what": what, **params}, "armed", what=what)
        t0 = time.monotonic()
        action()
        action_s = time.monotonic() - t0
        got = []
        for sim in self.sims:
            try:
                got.append(sim.wait("got", self.timeout, what=what))
            except TimeoutError:
                sim.send({"cmd": "report", "what": what})
                got.append(sim.wait("got", 30, what=what))
        times = [t for g in got for t in g["times"]]
        live = sum(len(g["times"]) + g["missing"] for g in got)
        return {**spread(times, t0, live), "action_s": action_s, "attempts": sum(g["attempts"] for g in got)}

    def blocklist(self) -> dict:
        if self.raw:
            server = self.server
            payloads = [(protocol.config_topic(sid), protocol.canonical_json(server.config_store.build(sid, server.key)))
                        for sid in self.ids]
            return self.expect("config", lambda: raw_publish(self.host, self.port, payloads), person=BLOCKED_PERSON)
        from qrgate.keyfiles import load_or_create_key
        from server.ingest.stationconfig import publish_configs

        self.key = load_or_create_key(self.cfg.pass_key_file)

        def block():  # what `qrgate-provision block` does
            self.config_store.block(BLOCKED_PERSON, "bench")
            publish_configs(self.config_store, self.key, self.cfg.mqtt, self.cfg.base, None, timeout=self.timeout)

        return self.expect("config", block, person=BLOCKED_PERSON)

    def release(self) -> dict:
        if self.raw:
            payload = notice(RELEASE, int(time.time() * 1000))
            return self.expect("release", lambda: raw_publish(self.host, self.port, [(RELEASES_TOPIC, payload)]),
                               version=RELEASE)
        from qrgate.updates import announce  # what a wave started on the server sends

        return self.expect("release", lambda: announce(RELEASE, self.cfg.mqtt, self.cfg.base), version=RELEASE)

    def retire(self, count: int) -> dict:
        """Retire the last ``count`` stations one by one: call to connection closed."""
        per = math.ceil(self.n / self.sim_count)
        closed, calls = [], []
        for sid in self.ids[-count:]:
            sim = self.sims[self.ids.index(sid) // per]
            sim.send({"cmd": "watch_close", "station": sid})
            sim.wait("watching", 30, station=sid)
            t0 = time.monotonic()
            if self.raw:
                taker = take_over(self.host, self.port, f"station-{sid}")
            else:  # what `qrgate-provision retire` does
                self.fleet.retire(sid)
                self.files.remove_user(sid)
            calls.append(time.monotonic() - t0)
            closed.append(sim.wait("closed", 60, station=sid)["t"] - t0)
            if self.raw:
                taker.disconnect()
                taker.loop_stop()
        return {"retired": count, "median_ms": statistics.median(closed) * 1000, "max_ms": max(closed) * 1000,
                "call_median_ms": statistics.median(calls) * 1000}

    def restart(self) -> dict:
        """Stop the broker and start it again; every station comes back by itself."""
        self.all_sims({"cmd": "expect", "what": "back"}, "armed", what="back")
        t_stop = time.monotonic()
        self.broker.stop()
        t_down = time.monotonic()
        self.broker.start()
        t_up = time.monotonic()
        cpu0 = cpu_s(self.broker.proc.pid)
        got = []
        for sim in self.sims:
            try:
                got.append(sim.wait("got", self.timeout, what="back"))
            except TimeoutError:
                sim.send({"cmd": "report", "what": "back"})
                got.append(sim.wait("got", 30, what="back"))
        broker_cpu = cpu_s(self.broker.proc.pid) - cpu0
        times = [t for g in got for t in g["times"]]
        live = sum(len(g["times"]) + g["missing"] for g in got)
        status = self.all_sims({"cmd": "status"}, "status")
        # Where a station's last (successful) attempt spent its time: TCP connect, TLS
        # handshake, then CONNECT to SUBACK.
        steps = [s for g in got for s in g["steps"]]
        split = {name: {"median_s": statistics.median(col), "max_s": max(col)}
                 for name, col in zip(("tcp", "tls", "mqtt"), zip(*steps))} if steps else {}
        return {**spread(times, t_up, live), "last_attempt": split, "outage_p100_s": percentile_s(times, t_stop, live, 1.0),
                "stop_s": t_down - t_stop, "start_s": t_up - t_down, "attempts": sum(g["attempts"] for g in got),
                "broker_cpu_s": broker_cpu, "broker_cpu_ms_per_station": broker_cpu / max(1, live) * 1000,
                "errors": _merge([s["errors"] for s in status])}

    def measure(self, heartbeats: int, retire: int) -> dict:
        out = {"stations": self.n, **self.setup()}
        out["connect"] = self.connect()
        out["traffic"] = self.traffic(heartbeats)
        out["blocklist"] = self.blocklist()
        out["release"] = self.release()
        out["broker_rss_after_traffic_kib"] = rss_kib(self.broker.proc.pid)
        out["retire"] = self.retire(retire)
        out["restart"] = self.restart()
        return out


def _merge(dicts: list[dict]) -> dict:
    out: dict = {}
    for d in dicts:
        for k, v in d.items():
            out[k] = out.get(k, 0) + v
    return out


def run(sizes: tuple[int, ...], *, heartbeats: int = 2, records: int = 2, retire: int = 5, sims: int = 2,
        work: Path | None = None) -> dict:
    """Every size, the project then the raw baseline; returns every figure."""
    limit = raise_open_files(4 * max(sizes) + 4096)
    results = {"machine": machine(), "open_files_limit": limit, "heartbeats_per_station": heartbeats,
               "records_per_station": records + 1, "loadavg_before": _loadavg(), "sizes": []}
    with contextlib.ExitStack() as stack:
        base = work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="qrgate-fleet-")))
        for n in sizes:
            t = time.monotonic()
            row = {"stations": n}
            project = Run(base / f"{n}-project", n, raw=False, sims=sims, records=records)
            raw = Run(base / f"{n}-raw", n, raw=True, sims=sims, records=records, server=project)
            try:
                print(f"  {n} stations: the project ...", flush=True)
                row["project"] = project.measure(heartbeats, min(retire, n // 2))
                print(f"  {n} stations: raw ...", flush=True)
                row["raw"] = raw.measure(heartbeats, min(retire, n // 2))
            finally:
                raw.close()
                project.close()
            row["seconds"] = time.monotonic() - t
            results["sizes"].append(row)
    # Whatever else ran on the machine meanwhile (the raw baseline shared it too).
    results["loadavg_after"] = _loadavg()
    if len(sizes) > 1:
        results["growth"] = growth(results["sizes"])
    return results


def _loadavg() -> list[float]:
    return [float(x) for x in Path("/proc/loadavg").read_text().split()[:3]]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.bench_fleet", description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="500,1000,2500,5000", help="fleet sizes (default 500,1000,2500,5000)")
    parser.add_argument("--quick", action="store_true", help="20 stations, one of everything: a smoke run")
    parser.add_argument("--heartbeats", type=int, default=2, help="heartbeats per station (default 2)")
    parser.add_argument("--records", type=int, default=2, help="record messages per station (default 2)")
    parser.add_argument("--retire", type=int, default=5, help="stations retired one by one (default 5)")
    parser.add_argument("--sims", type=int, default=2, help="processes simulating the stations (default 2)")
    parser.add_argument("--json", type=Path, help="write every figure here")
    args = parser.parse_args(argv)
    try:
        sizes = tuple(int(x) for x in ("20" if args.quick else args.sizes).split(","))
    except ValueError:
        parser.error(f"--sizes must be numbers separated by commas, got {args.sizes!r}")
    if not all(2 <= n <= 100_000 for n in sizes):
        parser.error("--sizes must be 2-100000 stations each")
    if min(args.heartbeats, args.records, args.retire) < 1 or args.sims < 1:
        parser.error("--heartbeats, --records, --retire and --sims must be at least 1")
    t = time.monotonic()
    results = run(sizes, heartbeats=1 if args.quick else args.heartbeats, records=1 if args.quick else args.records,
                  retire=2 if args.quick else args.retire, sims=1 if args.quick else args.sims)
    results["seconds"] = time.monotonic() - t
    print_table(results)
    print(f"\n({results['seconds']:.0f} s in all)")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
