"""Simulated gate stations for bench/bench_fleet.py: thousands of MQTT stations in one process.

One process drives many paho-mqtt clients from one selector loop, through paho's
external-loop interface (``loop_read``, ``loop_write``, ``loop_misc`` and the
``on_socket_open/close/register_write/unregister_write`` callbacks), so 5,000 stations
take a few processes, not 5,000 threads. On the wire each station does what
edge/queue/publisher.py does:

- connects as ``station-<id>`` with its own broker password, over TLS checked against
  the broker's CA (or bare TCP, anonymous, for the raw baseline), MQTT v5, clean start,
  keepalive 30 s, its last will (``online: false``, retained) on its status topic;
- subscribes to its acks, its config and the release topic (QoS 1), and publishes a
  retained status when it connects and as its heartbeat;
- sends signed records with the person sealed to the server's key, one record a
  message as a live gate does, and counts the server's acks;
- checks each pushed config with the station's own code (edge.pushed_config) and each
  release notice with qrgate.updates.parse_notice;
- when its connection drops, tries again with paho's own back-off: 1 s, doubling to 30 s,
  back to 1 s after a successful CONNACK (``reconnect_delay_set(1, 30)`` in qrgate/mqtt.py).

paho's ``connect()`` blocks on the TCP connect and the TLS handshake. Here both are
driven by the selector and the ready socket is handed to paho (``FleetClient``), so a
slow handshake does not hold up the other stations, and after a broker restart every
station knocks at once, as real ones do.

The controller talks to it in JSON lines: the spec on the first line of stdin, then
commands; answers on stdout.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import selectors
import socket
import ssl
import sys
import time
from collections import deque
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

from edge.pushed_config import parse_pushed_config  # noqa: E402
from qrgate import __version__, protocol  # noqa: E402
from qrgate.errors import RecordError  # noqa: E402
from qrgate.sealing import PersonSealer, x25519_public_from_text  # noqa: E402
from qrgate.updates import RELEASES_TOPIC, parse_notice  # noqa: E402

KEEPALIVE_S = 30  # qrgate.config.MqttSettings' default, what station.toml leaves it at
CONNECT_TIMEOUT_S = 5.0  # paho's: the TCP connect, then the TLS handshake, each
MIN_DELAY_S, MAX_DELAY_S = 1.0, 30.0  # qrgate/mqtt.py reconnect_delay_set(1, 30)
READ, WRITE = selectors.EVENT_READ, selectors.EVENT_WRITE


def station_key(secret: bytes, station_id: str) -> Ed25519PrivateKey:
    """The bench's station key, derived so the controller can register its public half
    without the key crossing a process boundary."""
    return Ed25519PrivateKey.from_private_bytes(hashlib.sha256(secret + station_id.encode()).digest())


def signed_batches(key: Ed25519PrivateKey, sealer: PersonSealer, station_id: str, n: int) -> list[tuple[int, bytes]]:
    """n check-ins as the station signs them, each in a message of its own: (seq, payload)."""
    now_ms = int(time.time() * 1000)
    out = []
    for seq in range(1, n + 1):
        person = {"id": f"079{seq:09d}", "name": f"Trần Thị Bích {seq}", "birth": "1991-03-04", "sex": "F"}
        body = {"type": "checkin", "ts": now_ms + seq, "mono": seq, "boot": "bench-fleet", "sync": True,
                "dir": "in" if seq % 2 else "out", "kind": "cccd", "sealed": sealer.seal(person),
                "v": 1, "st": station_id, "seq": seq}
        out.append((seq, protocol.encode_batch([protocol.canonical_json(protocol.sign_record(body, key))])))
    return out


class FleetClient(mqtt.Client):
    """paho's client, given a socket the selector loop already connected (and, for TLS,
    took through the handshake): paho 2.x opens its socket in ``_create_socket``,
    blocking, which is the one step an external loop cannot otherwise drive."""

    ready_socket: socket.socket | None = None

    def _create_socket(self):
        sock, self.ready_socket = self.ready_socket, None
        if sock is None:
            raise ConnectionError("no connected socket to hand over")
        return sock


class Station:
    """One simulated station: its paho client and where it is in its connection."""

    __slots__ = ("sid", "client", "batches", "next_batch", "unacked", "state", "sock", "deadline", "delay",
                 "attempts", "lost", "retired", "first_up", "config_version", "marks")

    def __init__(self, sid: str, client: FleetClient, batches: list[tuple[int, bytes]]):
        self.sid = sid
        self.client = client
        self.batches = batches
        self.next_batch = 0
        self.unacked: set[int] = set()
        self.state = "idle"  # idle, tcp, tls, mqtt, up, waiting, retired
        self.sock = None
        self.deadline = 0.0
        self.delay: float | None = None
        self.attempts = 0
        self.lost = False
        self.retired = False
        self.first_up = False
        self.config_version = 0
        self.marks = [0.0, 0.0, 0.0]  # this attempt: started, TCP connected, TLS done


class Fleet:
    """Every station of this process, one selector, and the controller's commands."""

    def __init__(self, spec: dict):
        self.host, self.port = spec["host"], spec["port"]
        self.tls = spec["tls"]
        self.ctx = None
        if self.tls:
            # As qrgate/mqtt.py asks paho for: PROTOCOL_TLS_CLIENT, CERT_REQUIRED, the host
            # name checked against the broker's certificate.
            self.ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
            self.ctx.verify_mode = ssl.CERT_REQUIRED
            self.ctx.check_hostname = True
            self.ctx.load_verify_locations(spec["ca"])
        self.sel = selectors.DefaultSelector()
        secret = bytes.fromhex(spec["key_secret"])
        server_key = x25519_public_from_text(spec["server_key"])
        self.pass_keys = {"server": protocol.public_key_from_text(spec["pass_key"])}
        self.stations: list[Station] = []
        for sid, password in spec["stations"]:
            batches = signed_batches(station_key(secret, sid), PersonSealer(server_key, sid), sid, spec["records"])
            st = Station(sid, self._client(sid, password), batches)
            st.client.user_data_set(st)  # every callback below gets its station
            self.stations.append(st)
        self.by_id = {st.sid: st for st in self.stations}
        self.live = len(self.stations)  # not retired; kept as a count, read on every arrival
        self.unacked = 0  # records sent and not acked yet, over every live station
        self.timers: list[tuple[float, int, Station]] = []
        self._timer_seq = 0
        self.connect_queue: deque[Station] = deque()
        self.max_pending = spec.get("max_pending", 32)
        self.pending = 0
        self.connecting_since = 0.0
        self.connect_reported = True
        self.send_queue: deque[tuple[Station, str]] = deque()
        self.traffic: dict | None = None
        self.outstanding = 0  # QoS 1 publishes not PUBACKed yet
        self.expect: dict[str, dict] = {}
        self.watched: set[str] = set()
        self.stdin_buf = b""
        self.running = True
        self.errors: dict[str, int] = {}
        self.sel.register(sys.stdin.fileno(), READ, ("stdin", None))
        os.set_blocking(sys.stdin.fileno(), False)

    def _client(self, sid: str, password: str | None) -> FleetClient:
        c = FleetClient(CallbackAPIVersion.VERSION2, client_id=f"station-{sid}", protocol=mqtt.MQTTv5)
        if password:
            c.username_pw_set(sid, password)
        c.will_set(protocol.status_topic(sid), protocol.canonical_json({"online": False, "fw": __version__}),
                   qos=1, retain=True)
        c.max_inflight_messages_set(100)
        c.max_queued_messages_set(0)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        c.connect_async(self.host, self.port, keepalive=KEEPALIVE_S, clean_start=True, properties=props)
        c.on_connect, c.on_subscribe, c.on_message = self.on_connect, self.on_subscribe, self.on_message
        c.on_disconnect, c.on_publish = self.on_disconnect, self.on_publish
        c.on_socket_open, c.on_socket_close = self.on_socket_open, self.on_socket_close
        c.on_socket_register_write, c.on_socket_unregister_write = self.want_write, self.no_write
        return c

    # --- the selector loop ---
    def run(self) -> None:
        next_misc = time.monotonic() + 1.0
        misc_at = 0
        while self.running:
            now = time.monotonic()
            timeout = 0.0 if self.send_queue else 0.05
            if self.timers:
                timeout = min(timeout, max(0.0, self.timers[0][0] - now))
            for key, mask in self.sel.select(timeout):
                kind, st = key.data
                if kind == "stdin":
                    self.read_commands()
                elif kind == "paho":
                    self.paho_event(st, key.fileobj, mask)
                else:
                    self.establish(st)
            now = time.monotonic()
            while self.timers and self.timers[0][0] <= now:
                st = heapq.heappop(self.timers)[2]
                if st.state == "waiting" and not st.retired:
                    self.start_attempt(st)
            self.pump_connects()
            self.pump_sends()
            if now >= next_misc:  # keepalive pings and stalled connects, a slice a time
                next_misc = now + 0.2
                chunk = max(1, len(self.stations) // 25)
                for st in self.stations[misc_at:misc_at + chunk]:
                    self.misc(st, now)
                misc_at = 0 if misc_at + chunk >= len(self.stations) else misc_at + chunk
            self.check_traffic_done()

    def misc(self, st: Station, now: float) -> None:
        if st.state in ("tcp", "tls") and now > st.deadline:
            self.fail(st, "connect_timeout")
        elif st.state == "mqtt" and now > st.deadline:
            st.client.disconnect()  # no CONNACK or SUBACK within a keepalive: start again
        elif st.state == "up":
            st.client.loop_misc()

    def paho_event(self, st: Station, sock, mask: int) -> None:
        c = st.client
        if mask & READ:
            rc = c.loop_read()
            # TLS keeps decrypted bytes the selector cannot see: read them now.
            while rc == mqtt.MQTT_ERR_SUCCESS and c.socket() is sock and getattr(sock, "pending", lambda: 0)():
                rc = c.loop_read()
        if mask & WRITE and c.socket() is sock:
            c.loop_write()

    # --- connecting without blocking ---
    def start_attempt(self, st: Station) -> None:
        st.attempts += 1
        raw = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        raw.setblocking(False)
        sock = self.ctx.wrap_socket(raw, server_hostname=self.host, do_handshake_on_connect=False) if self.tls else raw
        try:
            sock.connect_ex((self.host, self.port))  # EINPROGRESS: the selector says when
        except OSError:
            sock.close()
            self.fail(st, "connect_error", registered=False)
            return
        st.sock, st.state, st.deadline = sock, "tcp", time.monotonic() + CONNECT_TIMEOUT_S
        st.marks = [time.monotonic(), 0.0, 0.0]
        self.sel.register(sock, WRITE, ("est", st))

    def establish(self, st: Station) -> None:
        sock = st.sock
        if st.state == "tcp":
            err = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if err:
                self.fail(st, "refused" if err == 111 else f"errno_{err}")
                return
            st.marks[1] = time.monotonic()
            if not self.tls:
                self.hand_over(st)
                return
            st.state, st.deadline = "tls", time.monotonic() + CONNECT_TIMEOUT_S
        try:
            sock.do_handshake()
        except ssl.SSLWantReadError:
            self.sel.modify(sock, READ, ("est", st))
            return
        except ssl.SSLWantWriteError:
            self.sel.modify(sock, WRITE, ("est", st))
            return
        except (ssl.SSLError, OSError) as exc:
            self.fail(st, type(exc).__name__)
            return
        self.hand_over(st)

    def hand_over(self, st: Station) -> None:
        st.marks[2] = time.monotonic()
        sock, st.sock = st.sock, None
        self.sel.unregister(sock)
        st.state, st.deadline = "mqtt", time.monotonic() + 2 * KEEPALIVE_S
        st.client.ready_socket = sock
        try:
            st.client.reconnect()  # paho takes the socket: on_socket_open, then CONNECT
        except OSError as exc:
            self.fail(st, type(exc).__name__, registered=False)

    def fail(self, st: Station, why: str, registered: bool = True) -> None:
        self.errors[why] = self.errors.get(why, 0) + 1
        if st.sock is not None:
            if registered:
                self.sel.unregister(st.sock)
            st.sock.close()
            st.sock = None
        self.schedule_retry(st)

    def schedule_retry(self, st: Station) -> None:
        if st.retired:
            st.state = "retired"
            return
        st.delay = MIN_DELAY_S if st.delay is None else min(st.delay * 2, MAX_DELAY_S)
        st.state = "waiting"
        self._timer_seq += 1
        heapq.heappush(self.timers, (time.monotonic() + st.delay, self._timer_seq, st))

    def pump_connects(self) -> None:
        while self.connect_queue and self.pending < self.max_pending:
            st = self.connect_queue.popleft()
            self.pending += 1
            self.start_attempt(st)

    # --- paho's callbacks (on this thread, from loop_read/loop_write/loop_misc) ---
    def on_socket_open(self, client, userdata, sock) -> None:
        self.sel.register(sock, READ, ("paho", userdata))

    def on_socket_close(self, client, userdata, sock) -> None:
        try:
            self.sel.unregister(sock)
        except (KeyError, ValueError):
            pass

    def want_write(self, client, userdata, sock) -> None:
        self.sel.modify(sock, READ | WRITE, self.sel.get_key(sock).data)

    def no_write(self, client, userdata, sock) -> None:
        try:
            self.sel.modify(sock, READ, self.sel.get_key(sock).data)
        except (KeyError, ValueError):
            pass

    def on_connect(self, client, userdata, flags, reason_code, properties) -> None:
        st = userdata
        if reason_code.is_failure:
            self.errors[f"connack_{reason_code}"] = self.errors.get(f"connack_{reason_code}", 0) + 1
            return  # the broker closes the connection: on_disconnect tries again
        st.delay = None  # paho starts its back-off afresh after a CONNACK that let it in
        client.subscribe([(protocol.acks_topic(st.sid), 1), (protocol.config_topic(st.sid), 1), (RELEASES_TOPIC, 1)])
        self.publish(st, protocol.status_topic(st.sid), self.status(st), retain=True)

    def on_subscribe(self, client, userdata, mid, reason_codes, properties) -> None:
        st = userdata
        if any(rc.is_failure for rc in reason_codes):
            self.errors["suback_refused"] = self.errors.get("suback_refused", 0) + 1
        st.state = "up"
        if not st.first_up:
            st.first_up = True
            self.pending -= 1
            self.check_connected()
        if st.lost and "back" in self.expect:
            st.lost = False
            start, tcp, tls = st.marks
            self.expect["back"]["steps"].append((tcp - start, tls - tcp, time.monotonic() - tls))
            self.got("back", st)

    def on_disconnect(self, client, userdata, flags, reason_code, properties) -> None:
        st = userdata
        if st.sid in self.watched:
            self.watched.discard(st.sid)
            st.retired = True
            self.live -= 1
            self.unacked -= len(st.unacked)
            self.reply({"ev": "closed", "station": st.sid, "t": time.monotonic(), "reason": str(reason_code)})
        if "back" in self.expect and st.state == "up":
            st.lost = True
        self.schedule_retry(st)

    def on_publish(self, client, userdata, mid, reason_code, properties) -> None:
        self.outstanding -= 1

    def on_message(self, client, userdata, message) -> None:
        st = userdata
        topic = message.topic
        if topic == RELEASES_TOPIC:
            want = self.expect.get("release")
            try:
                if want and parse_notice(message.payload)["version"] == want["version"]:
                    self.got("release", st)
            except RecordError:
                self.errors["bad_notice"] = self.errors.get("bad_notice", 0) + 1
        elif topic.endswith("/config"):
            try:
                pushed = parse_pushed_config(message.payload, st.sid, self.pass_keys)
            except RecordError:
                self.errors["bad_config"] = self.errors.get("bad_config", 0) + 1
                return
            if pushed.version <= st.config_version:
                return  # the station keeps only a newer config (edge/housekeeping.py)
            st.config_version = pushed.version
            want = self.expect.get("config")
            if want and pushed.is_blocked(want["person"]):
                self.got("config", st)
        else:
            ack = protocol.Ack.from_bytes(message.payload)
            before = len(st.unacked)
            st.unacked.difference_update(ack.stored)
            st.unacked.difference_update(ack.refused)
            self.unacked -= before - len(st.unacked)

    # --- what a station sends ---
    def status(self, st: Station) -> bytes:
        """edge/queue/publisher.py's status with edge/app.py's fields."""
        return protocol.canonical_json({"sync": True, "fault": "", "mode": "toggle", "online": True,
                                        "fw": __version__, "backlog": len(st.unacked)})

    def publish(self, st: Station, topic: str, payload: bytes, retain: bool = False) -> bool:
        info = st.client.publish(topic, payload, qos=1, retain=retain)
        if info.rc == mqtt.MQTT_ERR_SUCCESS:
            self.outstanding += 1
            return True
        return False

    def pump_sends(self, burst: int = 200) -> None:
        for _ in range(min(burst, len(self.send_queue))):
            st, kind = self.send_queue.popleft()
            if st.retired:
                continue
            if st.state != "up":
                self.send_queue.append((st, kind))
                continue
            if kind == "hb":
                self.publish(st, protocol.status_topic(st.sid), self.status(st), retain=True)
                self.traffic["heartbeats"] += 1
            elif st.next_batch < len(st.batches):
                seq, payload = st.batches[st.next_batch]
                st.next_batch += 1
                st.unacked.add(seq)
                self.unacked += 1
                self.publish(st, protocol.records_topic(st.sid), payload)
                self.traffic["records"] += 1

    def check_traffic_done(self) -> None:
        t = self.traffic
        if t is None or self.send_queue or self.outstanding > 0:
            return
        if t["wait_acks"] and self.unacked > 0:
            return
        self.traffic = None
        self.reply({"ev": "traffic_done", "t": time.monotonic(), "heartbeats": t["heartbeats"], "records": t["records"]})

    # --- expectations: when each station got something ---
    def got(self, what: str, st: Station) -> None:
        want = self.expect[what]
        if st.sid not in want["times"]:
            want["times"][st.sid] = time.monotonic()
        self.check_expect(what)

    def check_expect(self, what: str, force: bool = False) -> None:
        want = self.expect.get(what)
        live = self.live
        if want is None or (len(want["times"]) < live and not force):
            return
        del self.expect[what]
        attempts = sum(st.attempts for st in self.stations) - want["attempts0"]
        self.reply({"ev": "got", "what": what, "times": list(want["times"].values()), "missing": live - len(want["times"]),
                    "attempts": attempts, "steps": want["steps"]})

    def check_connected(self) -> None:
        if not self.connect_reported and self.pending == 0 and not self.connect_queue:
            self.connect_reported = True
            self.reply({"ev": "connected", "n": len(self.stations), "t0": self.connecting_since, "t": time.monotonic(),
                        "attempts": sum(st.attempts for st in self.stations), "errors": dict(self.errors)})

    # --- commands ---
    def read_commands(self) -> None:
        try:
            chunk = os.read(sys.stdin.fileno(), 65536)
        except BlockingIOError:
            return
        if not chunk:
            self.running = False
            return
        self.stdin_buf += chunk
        while b"\n" in self.stdin_buf:
            line, self.stdin_buf = self.stdin_buf.split(b"\n", 1)
            if line.strip():
                self.command(json.loads(line))

    def command(self, cmd: dict) -> None:
        name = cmd["cmd"]
        if name == "connect":
            self.connecting_since, self.connect_reported = time.monotonic(), False
            self.connect_queue.extend(self.stations)
        elif name == "traffic":
            live = [st for st in self.stations if not st.retired]
            self.traffic = {"heartbeats": 0, "records": 0, "wait_acks": cmd["wait_acks"]}
            for _ in range(cmd["heartbeats"]):
                self.send_queue.extend((st, "hb") for st in live)
            for _ in range(cmd["records"]):
                self.send_queue.extend((st, "rec") for st in live)
        elif name == "expect":
            self.expect[cmd["what"]] = {**cmd, "times": {}, "steps": [],
                                        "attempts0": sum(st.attempts for st in self.stations)}
            self.reply({"ev": "armed", "what": cmd["what"]})
        elif name == "report":
            self.check_expect(cmd["what"], force=True)
        elif name == "watch_close":
            self.watched.add(cmd["station"])
            self.reply({"ev": "watching", "station": cmd["station"]})
        elif name == "status":
            self.reply({"ev": "status", "up": sum(st.state == "up" for st in self.stations),
                        "errors": dict(self.errors)})
        elif name == "quit":
            self.running = False

    def reply(self, obj: dict) -> None:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def main() -> None:
    fleet = Fleet(json.loads(sys.stdin.readline()))
    fleet.reply({"ev": "ready", "stations": len(fleet.stations)})
    fleet.run()


if __name__ == "__main__":
    main()
