"""The raw baseline of bench/bench_fleet.py: the same mosquitto binary with a bare
configuration, and bare clients doing what the project's pieces do around it.

- ``RawBroker``: plain TCP, anonymous, no plugin, no ACL (``RAW_CONF``);
- ``python -m bench.fleet_raw``: a bare subscriber in place of the bridge; it receives
  the stations' status and records and does nothing with them;
- ``raw_publish``: retained messages from a bare client, in place of the server pushing
  configs or announcing a release;
- ``take_over``: a bare client connecting under a connected station's client id, which
  makes the broker close that station's connection, in place of retiring it.
"""

from __future__ import annotations

import getpass
import json
import secrets
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import paho.mqtt.client as mqtt  # noqa: E402
from paho.mqtt.enums import CallbackAPIVersion  # noqa: E402
from paho.mqtt.packettypes import PacketTypes  # noqa: E402
from paho.mqtt.properties import Properties  # noqa: E402

KEEPALIVE_S = 30


RAW_CONF = """\
# The raw baseline: the same Mosquitto, bare. Plain TCP, anonymous, no plugin, no ACL;
# persistence and queue limits as in the project's mosquitto.conf, so only TLS and the
# accounts differ. Mosquitto started as root runs as this user, as the project's does.
user {user}
allow_anonymous true
persistence true
persistence_location {data}/
autosave_interval 60
max_packet_size {max_packet}
max_queued_messages 100000
log_dest stderr
log_type error
log_type warning
listener {port} 127.0.0.1
"""


class RawBroker:
    """The same mosquitto binary with the bare configuration above."""

    def __init__(self, directory: Path, port: int):
        from provisioning.broker import find_mosquitto
        from qrgate import protocol

        self.directory, self.port, self.host = directory, port, "127.0.0.1"
        (directory / "data").mkdir(parents=True, exist_ok=True)
        self.conf = directory / "mosquitto.conf"
        self.conf.write_text(RAW_CONF.format(data=directory / "data", port=port, user=getpass.getuser(),
                                             max_packet=protocol.MAX_MESSAGE_BYTES + 4096))
        self.binary = find_mosquitto()
        self.proc: subprocess.Popen | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.directory / "mosquitto.log", "ab") as log:
            self.proc = subprocess.Popen([self.binary, "-c", str(self.conf)], stdout=log, stderr=log,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"bench: bare mosquitto exited; see {self.directory / 'mosquitto.log'}")
            try:
                socket.create_connection((self.host, self.port), timeout=1).close()
                return
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError("bench: bare mosquitto does not listen") from None
                time.sleep(0.05)  # polling a port that is not open yet; bounded by the deadline

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            self.proc.wait(timeout=60)


def raw_publish(host: str, port: int, messages: list[tuple[str, bytes]]) -> None:
    """A bare client publishing retained messages (QoS 1) and waiting for every PUBACK:
    what publish_configs and announce do, without TLS, an account or a database."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=f"raw-publisher-{secrets.token_hex(4)}", protocol=mqtt.MQTTv5)
    c.max_inflight_messages_set(100)
    c.max_queued_messages_set(0)
    c.connect(host, port, keepalive=KEEPALIVE_S)
    c.loop_start()
    try:
        infos = [c.publish(topic, payload, qos=1, retain=True) for topic, payload in messages]
        for info in infos:
            info.wait_for_publish(60)
    finally:
        c.disconnect()
        c.loop_stop()


def take_over(host: str, port: int, client_id: str):
    """A bare client connecting under a connected client's id: the broker closes the other."""
    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
    connected = threading.Event()
    c.on_connect = lambda *a: connected.set()
    c.connect(host, port, keepalive=KEEPALIVE_S)
    c.loop_start()
    connected.wait(30)
    return c


def run_subscriber(spec: dict) -> None:
    """A bare subscriber: receives the stations' status and records and does nothing
    with them; answers ``{"cmd": "count", "n": N}`` once it has received N messages."""
    received = 0
    cond = threading.Condition()

    def on_message(client, userdata, message):
        nonlocal received
        with cond:
            received += 1
            cond.notify_all()

    c = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=spec["client_id"], protocol=mqtt.MQTTv5)
    subscribed = threading.Event()
    c.on_connect = lambda client, *a: client.subscribe([(t, 1) for t in spec["topics"]])
    c.on_subscribe = lambda *a: subscribed.set()
    c.on_message = on_message
    props = Properties(PacketTypes.CONNECT)
    props.SessionExpiryInterval = 7 * 24 * 3600  # as the bridge keeps its session
    c.connect(spec["host"], spec["port"], keepalive=KEEPALIVE_S, clean_start=False, properties=props)
    c.loop_start()
    subscribed.wait(30)
    print(json.dumps({"ev": "subscribed"}), flush=True)
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["cmd"] == "quit":
            break
        deadline = time.monotonic() + cmd.get("timeout", 600)
        with cond:
            while received < cmd["n"] and time.monotonic() < deadline:
                cond.wait(deadline - time.monotonic())
            n = received
        print(json.dumps({"ev": "count", "n": n, "t": time.monotonic()}), flush=True)
    c.disconnect()
    c.loop_stop()



if __name__ == "__main__":
    run_subscriber(json.loads(sys.stdin.readline()))
