"""Every broker account is bound to its client ids: tried as whoever holds a station's
password would try it, with paho against a real Mosquitto started with the project's own
files (TLS, accounts and roles of the dynamic-security plugin).

Never by reading the configuration: one Mosquitto release stored no client id when a
client was made with ``mosquitto_ctrl ... createClient -i`` (eclipse-mosquitto issue
3219), so a binding can look configured and not be enforced.
"""

from __future__ import annotations

import json
import queue
import ssl
import subprocess
import sys
import threading
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import serve_app, unavailable, wait_until
from test_enrolment import post as post_enrolment
from edge.app import Station
from edge.config import load_station_config
from edge.drivers.fake import ListSource
from edge.outcome import Result
from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
from qrgate import protocol
from qrgate.mqtt import SESSION_EXPIRY_S
from qrgate.samples import demo_samples
from server.ingest.bridge import Bridge, records_filter
from server.cli import open_sealing
from server.ingest.enrol import enrol_code_text, enrolment_for
from server.web.app import create_app
from server.ingest.workers import make_worker

pytestmark = pytest.mark.timeout(120)
BIN = Path(sys.executable).parent
QUIET = {"indicators": "none", "panel": "none"}


class Login:
    """One MQTT v5 login over TLS, made as any client would make it; ``reason`` is the
    broker's CONNACK."""

    def __init__(self, files: BrokerFiles, username: str, password: str, client_id: str, *,
                 clean_start: bool = True, session_expiry: int = 0):
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(username, password)
        self.client.tls_set(ca_certs=str(files.ca_cert), cert_reqs=ssl.CERT_REQUIRED)
        self.answers: queue.Queue = queue.Queue()
        self.closed = threading.Event()
        self.topics: list[str] = []
        self.client.on_connect = lambda c, u, flags, rc, p: self.answers.put(rc)
        self.client.on_subscribe = lambda c, u, mid, codes, p: self.answers.put(codes)
        self.client.on_disconnect = lambda *a: self.closed.set()
        self.client.on_message = lambda c, u, m: self.topics.append(m.topic)
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = session_expiry
        self.client.connect(files.host, files.port, clean_start=clean_start, properties=props)
        self.client.loop_start()
        self.reason = self.answers.get(timeout=30)

    def subscribe(self, filters: list[str]) -> list:
        self.client.subscribe([(f, 1) for f in filters])
        return self.answers.get(timeout=30)

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


def login(files, username, password, client_id, **kwargs):
    attempt = Login(files, username, password, client_id, **kwargs)
    attempt.close()
    return attempt.reason


def station_password(directory: Path) -> str:
    return (directory / "mqtt.password").read_text().strip()


def server_password(server_env) -> str:
    return (server_env.config.base / "mqtt.password").read_text().strip()


@pytest.fixture
def bridge(server_env):
    started = Bridge(server_env.storage, server_env.config.mqtt, server_env.config.base,
                     opener=open_sealing(server_env.config))
    started.start()
    assert started.wait_subscribed(30)
    yield started
    started.close()


@pytest.fixture
def station(server_env, tmp_path):
    """gate-2, a real station with its publisher online."""
    setup = server_env.add_station("gate-2", tmp_path / "gate-2", source={"kind": "list"}, feedback=QUIET)
    running = Station(load_station_config(setup.config_path), source=ListSource([]))
    running.start()
    wait_until(lambda: running.publisher.online, 30, "gate-2 online")
    yield running
    running.close()


def scan_everyone(station: Station, server_env, count: int = 3) -> None:
    """``count`` people scanned at the station: each stored by the server and acked."""
    for sample in demo_samples()[:count]:
        assert station.handle_text(sample.text).result is Result.ACCEPTED
    assert station.publisher.wait_drained(30), "records left unacked"
    assert server_env.storage.count_checkins(station.config.station.id) == count


def test_a_stations_password_opens_the_broker_only_under_its_own_client_id(server_env, tmp_path):
    server_env.add_station("gate-1", tmp_path / "gate-1", feedback=QUIET)
    files, password = server_env.broker.files, station_password(tmp_path / "gate-1")
    assert not login(files, "gate-1", password, "station-gate-1").is_failure
    for other in ("qrgate-bridge", "qrgate-bridge-1", "qrgate-config-1", "station-gate-2", "gate-1",
                  "station-gate-1-2"):
        assert login(files, "gate-1", password, other).getName() == "Not authorized", other
    # An empty id is given one by the broker ("auto-..."): not the station's either.
    assert login(files, "gate-1", password, "").getName() == "Not authorized"


@pytest.mark.parametrize("worker_id", [None, 1], ids=["run", "worker"])
def test_a_station_cannot_unseat_the_bridge_by_taking_its_client_id(server_env, tmp_path, station, worker_id):
    """The attack of issue 19: a station reconnecting as the bridge, keeping its session
    (clean_start=False), would close the bridge each time and leave records unacked."""
    cfg = server_env.config
    if worker_id is None:
        bridge = Bridge(server_env.storage, cfg.mqtt, cfg.base, opener=open_sealing(cfg))
    else:
        bridge = make_worker(server_env.storage, cfg.mqtt, cfg.base, worker_id, opener=open_sealing(cfg))
    bridge.start()
    try:
        assert bridge.wait_subscribed(30)
        thief = server_env.add_station("gate-1", tmp_path / "gate-1", feedback=QUIET)
        password = station_password(tmp_path / "gate-1")
        for _ in range(3):  # as a station reconnecting every second would
            reason = login(server_env.broker.files, thief.station_id, password, bridge.client_id,
                           clean_start=False, session_expiry=SESSION_EXPIRY_S)
            assert reason.getName() == "Not authorized"
        assert bridge.wait_connected(0) and bridge.wait_subscribed(0)
        scan_everyone(station, server_env)
        assert bridge.counters["stored"] == 3
    finally:
        bridge.close()


def test_a_station_cannot_join_the_bridges_shared_group_or_read_other_topics(server_env, tmp_path, bridge,
                                                                              station):
    server_env.add_station("gate-1", tmp_path / "gate-1", feedback=QUIET)
    thief = Login(server_env.broker.files, "gate-1", station_password(tmp_path / "gate-1"), "station-gate-1")
    try:
        assert not thief.reason.is_failure
        # Even knowing the group's name (it is derived from the server's password).
        forbidden = [records_filter(bridge.share_group), records_filter("qrgate-bridge"),
                     f"$share/{bridge.share_group}/#", "$share/anything/#", protocol.records_topic("+"),
                     protocol.acks_topic("gate-2"), protocol.config_topic("+"), "#",
                     "$CONTROL/dynamic-security/v1/response"]
        codes = thief.subscribe(forbidden)
        assert [c.getName() for c in codes] == ["Not authorized"] * len(forbidden), list(zip(forbidden, codes))
        own = thief.subscribe([protocol.acks_topic("gate-1"), protocol.config_topic("gate-1")])
        assert not any(c.is_failure for c in own)
        scan_everyone(station, server_env)
    finally:
        thief.close()
    assert bridge.counters["stored"] == 3 and thief.topics == []


def test_retiring_a_station_closes_its_open_connection_at_once(server_env, bridge, station, tmp_path):
    out = subprocess.run([str(BIN / "qrgate-provision"), "retire", "--server-config", str(server_env.config.path),
                          "--broker-dir", str(server_env.broker.files.directory), "--station", "gate-2"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    # The broker closed it before the command returned; paho notices within moments.
    wait_until(lambda: not station.publisher.online, 10, "the retired station's connection closed")
    assert login(server_env.broker.files, "gate-2", station_password(tmp_path / "gate-2"),
                 "station-gate-2").is_failure
    # A retirement cut short (the broker away) is finished by running it again.
    again = subprocess.run([str(BIN / "qrgate-provision"), "retire", "--server-config", str(server_env.config.path),
                            "--broker-dir", str(server_env.broker.files.directory), "--station", "gate-2"],
                           capture_output=True, text=True, timeout=60)
    assert again.returncode == 0 and "already retired" in again.stdout, again.stderr




def test_an_enrolled_station_is_bound_to_its_id_and_cannot_take_the_servers_account(server_env, bridge):
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    enrolment = enrolment_for(server_env.config, server_env.storage)
    app = create_app(server_env.storage, enrolment=enrolment)
    files = server_env.broker.files
    with serve_app(app, "enrolment endpoint") as url:
        answers = []
        for name in ("gate-new", SERVER_USER, "qrgate-admin", "qrgate-bridge"):
            code = json.loads(enrol_code_text(url, enrolment.create_token(server_env.venue_id)))
            public = protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key())
            status, answer = post_enrolment(url, {"v": 1, "token": code["token"], "public_key": public, "name": name})
            assert status == 200, answer
            answers.append(answer)
    first, *others = answers
    # The names of the server's own accounts are never a station's: enrolled as
    # qrgate-server, a station would be handed every station's records.
    for answer in others:
        assert not answer["station_id"].startswith("qrgate-"), answer["station_id"]
        assert login(files, SERVER_USER, answer["mqtt"]["password"], "qrgate-probe").is_failure
    assert not login(files, SERVER_USER, server_password(server_env), "qrgate-probe").is_failure
    assert bridge.wait_connected(0)
    assert first["station_id"] == "gate-new" and first["mqtt"]["client_id"] == "station-gate-new"
    assert not login(files, "gate-new", first["mqtt"]["password"], "station-gate-new").is_failure
    assert login(files, "gate-new", first["mqtt"]["password"], "qrgate-bridge").is_failure


def test_a_station_cannot_make_itself_an_account_through_the_control_topic(server_env, tmp_path):
    server_env.add_station("gate-1", tmp_path / "gate-1", feedback=QUIET)
    files = server_env.broker.files
    thief = Login(files, "gate-1", station_password(tmp_path / "gate-1"), "station-gate-1")
    try:
        command = {"commands": [{"command": "createClient", "username": "gate-evil", "password": "evil-pw",
                                 "roles": [{"rolename": SERVER_USER}]},
                                {"command": "setClientId", "username": "gate-1", "clientid": "qrgate-bridge"}]}
        sent = thief.client.publish("$CONTROL/dynamic-security/v1", json.dumps(command), qos=1)
        sent.wait_for_publish(30)  # the broker's PUBACK: it has judged the message
    finally:
        thief.close()
    assert login(files, "gate-evil", "evil-pw", "gate-evil").is_failure
    assert login(files, "gate-1", station_password(tmp_path / "gate-1"), "qrgate-bridge").is_failure


def test_a_broker_folder_from_before_keeps_its_passwords_and_gets_the_binding(tmp_path):
    """A folder made with a password file and an ACL file: its accounts move into the
    plugin's file, passwords kept, so stations in the field need no new enrolment."""
    old = tmp_path / "broker"
    old.mkdir()
    tool = "/usr/bin/mosquitto_passwd"
    if not Path(tool).exists():
        # Debian's mosquitto package ships it, and scripts/test installs mosquitto.
        unavailable("mosquitto_passwd (apt install mosquitto) makes the old password file")
    (old / "passwd").write_text("")
    for user, password in (("gate-old", "old-station-pw"), (SERVER_USER, "old-server-pw")):
        subprocess.run([tool, "-b", str(old / "passwd"), user, password], check=True, capture_output=True,
                       timeout=30)
    (old / "acl").write_text("pattern write qrgate/v1/stations/%u/records\n")
    files = BrokerFiles.create(old, port=free_port())
    assert not (old / "passwd").exists() and not (old / "acl").exists()
    with BrokerProcess(files):
        assert not login(files, "gate-old", "old-station-pw", "station-gate-old").is_failure
        assert login(files, "gate-old", "old-station-pw", "qrgate-bridge").is_failure
        assert not login(files, SERVER_USER, "old-server-pw", "qrgate-bridge").is_failure
        assert login(files, "gate-old", "a-guess", "station-gate-old").is_failure


def test_many_stations_added_at_once_to_a_running_broker_each_open_it_only_as_themselves(server_env):
    """``BrokerFiles.add_users``: one round of commands for a whole batch of stations."""
    files = server_env.broker.files
    passwords = files.add_users([f"batch-{i}" for i in range(30)])
    assert len(set(passwords.values())) == 30
    for name in ("batch-0", "batch-17", "batch-29"):
        assert not login(files, name, passwords[name], f"station-{name}").is_failure
        assert login(files, name, passwords[name], "station-batch-1").getName() == "Not authorized"
    assert login(files, "batch-3", passwords["batch-4"], "station-batch-3").getName() == "Not authorized"
