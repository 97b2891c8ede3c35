"""A station written from docs/protocol.md alone attacks the server through the real
broker: records dated where no page can show them, unsigned records that would make a
station drop a genuine one, and messages the document does not allow.

The station here shares no code with the project: it enrols over HTTP, seals and signs
as the document says, and speaks MQTT v5 over TLS to a Mosquitto started with the
project's config, to a server started as a deployment starts it (`qrgate-server run`,
or `run --no-bridge` beside a `qrgate-server bridge` worker), with its own [ingest]
window. What it learns is what a station learns: the acks. The database is read only to
check that what was refused was not stored all the same.
"""

from __future__ import annotations

import base64
import itertools
import json
import os
import queue
import re
import ssl
import time
import urllib.request
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import paho.mqtt.client as mqtt
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from conftest import REPO, ServerProcess, database_url, storage_for, wait_until
from provisioning.broker import SERVER_USER, BrokerFiles, BrokerProcess, free_port
from provisioning.station import server_public_keys, write_server_config
from server.config import load_server_config
from server.ingest.enrol import Enrolment

pytestmark = pytest.mark.timeout(180)

DOC = (REPO / "docs" / "protocol.md").read_text(encoding="utf-8")
# The window this deployment configures: narrower than the defaults at both ends, so a
# server that ignored [ingest] would store what this one must refuse.
EARLIEST = "2021-06-01"
EARLIEST_MS = int(datetime(2021, 6, 1, tzinfo=timezone.utc).timestamp() * 1000)
MAX_AHEAD_S = 3600
YEAR_9999_MS = int(datetime(9999, 12, 31, 23, 59, tzinfo=timezone.utc).timestamp() * 1000)
BEFORE_YEAR_1_MS = -62_200_000_000_000  # 1970 - 1973 years: within the protocol's 2**53 ms
PERSON = {"id": "079188005678", "name": "Võ Thị Hoa", "birth": "1979-02-03", "sex": "F"}


# --- the station, from the document -------------------------------------------------------


def canonical(value) -> bytes:
    """docs/protocol.md, "Signed bytes": what json.dumps writes with these options."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def sign(record: dict, key: Ed25519PrivateKey) -> dict:
    body = {k: v for k, v in record.items() if k != "sig"}
    sig = key.sign(b"qrgate-record-v1\n" + canonical(body))
    return {**body, "sig": base64.b64encode(sig).decode("ascii")}


def seal(person: dict, station_id: str, server_public: bytes) -> str:
    """docs/protocol.md, "Sealed personal fields" (a new ephemeral key per record is allowed)."""
    ephemeral = X25519PrivateKey.generate()
    shared = ephemeral.exchange(X25519PublicKey.from_public_bytes(server_public))
    e_public = ephemeral.public_key().public_bytes_raw()
    key = HKDF(SHA256(), 32, salt=None, info=b"qrgate-person-v1" + e_public + server_public).derive(shared)
    nonce = os.urandom(12)
    box = ChaCha20Poly1305(key).encrypt(nonce, canonical(person), b"qrgate-person-v1|" + station_id.encode())
    return base64.b64encode(e_public + nonce + box).decode("ascii")


def batch(*records) -> bytes:
    return canonical({"records": list(records)})


class OutsideStation:
    """Enrolled over HTTP, then an MQTT v5 client on its own topics. ``publish`` waits
    for the broker's PUBACK; ``next_ack`` returns the server's acks in the order sent."""

    def __init__(self, server: Server, name: str):
        self.key = Ed25519PrivateKey.generate()
        public = base64.b64encode(self.key.public_key().public_bytes_raw()).decode("ascii")
        token = Enrolment(server.storage).create_token(server.venue_id)  # the venue owner's setup code
        request = urllib.request.Request(
            f"{server.url}/api/enrol", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"v": 1, "token": token, "public_key": public, "name": name}).encode())
        with urllib.request.urlopen(request, timeout=30) as response:
            answer = json.loads(response.read())
        self.id = answer["station_id"]
        self.server_public = base64.b64decode(answer["server_key"])
        self.boot = "8c1f7a52-0d4e-4b6a-9f3e-2a5b7c9d1e0f"
        self.seq = 0
        self.acks: queue.Queue = queue.Queue()
        mq = answer["mqtt"]
        client_id = mq.get("client_id", f"station-{self.id}")  # docs/protocol.md, "Client ids and sessions"
        self.client = mqtt.Client(CallbackAPIVersion.VERSION2, client_id=client_id, protocol=mqtt.MQTTv5)
        self.client.username_pw_set(mq["username"], mq["password"])
        context = ssl.create_default_context(cadata=mq["ca_pem"])
        self.client.tls_set_context(context)
        subscribed = queue.Queue()
        self.client.on_connect = lambda c, u, f, rc, p: (
            c.subscribe(f"qrgate/v1/stations/{self.id}/acks", qos=1) if not rc.is_failure else None)
        self.client.on_subscribe = lambda *a: subscribed.put(True)
        self.client.on_message = lambda c, u, m: self.acks.put(json.loads(m.payload))
        self.client.reconnect_delay_set(min_delay=1, max_delay=2)  # until the broker has read the new account
        props = Properties(PacketTypes.CONNECT)
        props.SessionExpiryInterval = 0
        self.client.connect_async(mq["host"], mq["port"], keepalive=30, clean_start=True, properties=props)
        self.client.loop_start()
        subscribed.get(timeout=60)

    def record(self, **fields) -> dict:
        """A signed check-in with the next seq; ``fields`` replace the defaults."""
        self.seq += 1
        now = int(time.time() * 1000)
        record = {"v": 1, "type": "checkin", "st": self.id, "seq": self.seq, "ts": now, "mono": 50_000 + self.seq,
                  "boot": self.boot, "sync": True, "dir": "in", "kind": "cccd",
                  "sealed": seal(PERSON, self.id, self.server_public)}
        return sign({**record, **fields}, self.key)

    def clock(self, **fields) -> dict:
        self.seq += 1
        now = int(time.time() * 1000)
        record = {"v": 1, "type": "clock", "st": self.id, "seq": self.seq, "ts": now, "mono": 60_000,
                  "boot": self.boot, "sync": True, "base": now - 60_000}
        return sign({**record, **fields}, self.key)

    def publish(self, payload: bytes) -> None:
        info = self.client.publish(f"qrgate/v1/stations/{self.id}/records", payload, qos=1)
        info.wait_for_publish(30)
        assert info.is_published()

    def send(self, *records) -> dict:
        """One batch, and the ack it gets."""
        self.publish(batch(*records))
        return self.next_ack()

    def next_ack(self) -> dict:
        try:
            return self.acks.get(timeout=60)
        except queue.Empty:
            raise AssertionError(f"no ack for {self.id} within 60 s") from None

    def no_ack_for(self, payload: bytes) -> None:
        """Send ``payload``, then a good record: the first ack to come must be the good
        record's (acks come in the order the messages were sent), so ``payload`` got none."""
        self.publish(payload)
        probe = self.record()
        assert self.send(probe) == {"stored": [probe["seq"]], "refused": {}}

    def never_acked(self, payload: bytes, seq: int) -> None:
        """Send ``payload``, then a good record; no ack up to the good record's may name
        ``seq`` (an empty ack, naming nothing, is allowed)."""
        self.publish(payload)
        probe = self.record()
        self.publish(batch(probe))
        while (ack := self.next_ack()) != {"stored": [probe["seq"]], "refused": {}}:
            assert ack == {"stored": [], "refused": {}}, ack

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


# --- the deployment -----------------------------------------------------------------------


@dataclass
class Server:
    url: str
    storage: object
    venue_id: int
    logs: list[Path]

    def stored(self, station_id: str) -> dict[int, tuple[int, bool, int]]:
        """seq -> (wall_ms, time_corrected, wall_ms_station) of what the server stored."""
        return {r[0]: (r[1], bool(r[2]), r[3]) for r in self.storage.sql.rows(
            "SELECT seq, wall_ms, time_corrected, wall_ms_station FROM checkins WHERE station_id = ?", [station_id])}

    def log_text(self) -> str:
        return "".join(p.read_text(errors="replace") for p in self.logs if p.exists())


@pytest.fixture(scope="module", params=["run", "workers"])
def server(request, tmp_path_factory):
    """The broker and a server with [ingest] set: `qrgate-server run`, or the web alone
    (`run --no-bridge`) beside one `qrgate-server bridge` worker."""
    root = tmp_path_factory.mktemp(f"attacks-{request.param}")
    files = BrokerFiles.create(root / "broker", port=free_port())
    broker = BrokerProcess(files)
    broker.start()
    password = files.add_user(SERVER_USER)
    broker.reload()
    web_port = free_port()
    path = write_server_config(root / "server" / "server.toml", broker=files, password=password, web_port=web_port,
                               database=database_url(root / "server"))
    with open(path, "a", encoding="utf-8") as fh:
        fh.write(f'\n[ingest]\nearliest = "{EARLIEST}"\nmax_ahead_s = {MAX_AHEAD_S}\n')
    cfg = load_server_config(path)
    server_public_keys(cfg)  # the keys exist before the processes that read them start
    storage = storage_for(cfg)
    venue = storage.add_venue("Cổng Kiểm Thử")
    commands = [("run",)] if request.param == "run" else [("run", "--no-bridge"), ("bridge", "--worker-id", "1")]
    procs = [ServerProcess(path, root / f"server-{n}.log", command) for n, command in enumerate(commands)]
    for proc in procs:
        proc.start()
    serving = Server(f"http://127.0.0.1:{web_port}", storage, venue, [p.log for p in procs])
    try:
        wait_until(lambda: "subscribed to the stations' records" in serving.log_text(), 60, "the bridge subscribed")
        wait_until(lambda: _answers(f"{serving.url}/healthz"), 60, "the web server")
        yield serving
    finally:
        for proc in procs:
            proc.stop()
        broker.stop()


def _answers(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


_NAMES = itertools.count(1)


@pytest.fixture
def station(server):
    gate = OutsideStation(server, f"outsider-{next(_NAMES)}")
    yield gate
    gate.close()


# --- 1. times a page cannot show ----------------------------------------------------------


def test_signed_records_dated_outside_the_configured_window_are_refused_as_bad_time(server, station):
    now = int(time.time() * 1000)
    inside = [station.record(ts=EARLIEST_MS), station.record(ts=now + (MAX_AHEAD_S - 600) * 1000),
              # An unsynced clock's guess, kept as such until its boot's clock record comes.
              station.record(ts=EARLIEST_MS - 86_400_000, sync=False)]
    outside = [station.record(ts=YEAR_9999_MS), station.record(ts=BEFORE_YEAR_1_MS),
               station.record(ts=EARLIEST_MS - 1),  # after the default 2020, before this server's date
               station.record(ts=now + (MAX_AHEAD_S + 1800) * 1000),  # within a day, beyond this server's hour
               # An unsynced clock is no way around it: its guess is kept from 1970 to the window's end.
               station.record(ts=YEAR_9999_MS, sync=False), station.record(ts=-1, sync=False),
               station.record(ts=now + (MAX_AHEAD_S + 1800) * 1000, sync=False)]
    ack = station.send(*inside, *outside)
    assert ack == {"stored": [r["seq"] for r in inside], "refused": {str(r["seq"]): "bad_time" for r in outside}}
    assert sorted(server.stored(station.id)) == [r["seq"] for r in inside]


def test_a_clock_record_whose_base_would_date_check_ins_outside_the_window_is_refused(server, station):
    # An unsynced check-in first, then a clock record for its boot with base near 2**53:
    # accepted, it would move that check-in, and every later one of the boot, to year 287396.
    early = station.record(sync=False, mono=5_000)
    assert station.send(early)["stored"] == [early["seq"]]
    far = station.clock(mono=60_000, base=2**53 - 60_000, ts=int(time.time() * 1000))
    assert station.send(far) == {"stored": [], "refused": {str(far["seq"]): "bad_time"}}
    later = station.record(sync=False, mono=70_000)
    assert station.send(later)["stored"] == [later["seq"]]
    stored = server.stored(station.id)
    assert stored[early["seq"]] == (early["ts"], False, early["ts"])  # not corrected
    assert stored[later["seq"]] == (later["ts"], False, later["ts"])


def test_a_clock_record_inside_the_window_that_would_move_an_earlier_check_in_outside_it_is_refused(server, station):
    # A check-in made 5 s into a boot whose clock was never set (1970): kept, unsynced,
    # until the boot's clock record comes. This one's own moment is now, but it claims a
    # monotonic clock of 300 years: the check-in would land in the 18th century.
    now = int(time.time() * 1000)
    early = station.record(sync=False, mono=5_000, ts=5_000)
    assert station.send(early)["stored"] == [early["seq"]]
    odd = station.clock(mono=10**13, base=now - 10**13, ts=now)
    assert station.send(odd) == {"stored": [], "refused": {str(odd["seq"]): "bad_time"}}
    assert server.stored(station.id)[early["seq"]] == (early["ts"], False, early["ts"])
    # A true clock record of the boot still corrects it.
    good = station.clock(mono=60_000, base=now - 60_000, ts=now)
    assert station.send(good) == {"stored": [good["seq"]], "refused": {}}
    assert server.stored(station.id)[early["seq"]] == (now - 60_000 + 5_000, True, early["ts"])


# --- 2. nothing unsigned is acked under a number ------------------------------------------


ZERO_SIG = base64.b64encode(bytes(64)).decode("ascii")


def test_unsigned_records_are_never_acked_so_the_genuine_records_of_those_numbers_are_stored(server, station):
    genuine = [station.record() for _ in range(6)]
    forged = [
        {**genuine[0], "dir": "sideways", "sig": ZERO_SIG},  # a bad field
        {**genuine[1], "v": 2, "sig": ZERO_SIG},  # a version this server does not know
        {**genuine[2], "extra": 1, "sig": ZERO_SIG},  # a field too many
        {**genuine[3], "ts": YEAR_9999_MS, "sig": ZERO_SIG},  # a time outside the window
        {**genuine[4], "sealed": "AAAA", "sig": ZERO_SIG},  # sealed fields that do not open
        {**genuine[5], "sig": base64.b64encode(os.urandom(64)).decode("ascii")},  # a random signature
    ]
    probe = station.record()
    ack = station.send(*forged, probe)
    assert ack == {"stored": [probe["seq"]], "refused": {}}  # a station would set nothing aside
    ack = station.send(*genuine)
    assert ack == {"stored": [r["seq"] for r in genuine], "refused": {}}


def test_records_whose_signature_cannot_be_checked_are_never_acked(server, station):
    genuine = station.record()
    for bad in (
        {k: v for k, v in genuine.items() if k != "sig"},  # no signature
        {**genuine, "sig": 5},  # not text
        {**genuine, "sig": "not base64!"},
    ):
        station.never_acked(batch(bad), genuine["seq"])
    # A lone surrogate or a number past 64 bits has no canonical form: nothing can sign it.
    text = canonical(genuine).decode("utf-8")
    for odd in (text.replace('"dir":"in"', '"dir":"\\ud800"'), text.replace(f'"mono":{genuine["mono"]}',
                                                                          f'"mono":{2**64}')):
        assert odd != text
        station.never_acked(b'{"records":[' + odd.encode() + b"]}", genuine["seq"])
    assert station.send(genuine) == {"stored": [genuine["seq"]], "refused": {}}


def test_a_signed_record_with_a_bad_field_is_still_acked_as_refused(server, station):
    # So that a station stops sending what it got wrong itself.
    bad_version, bad_field = station.record(v=2), station.record(dir="sideways")
    ack = station.send(bad_version, bad_field)
    assert ack == {"stored": [], "refused": {str(bad_version["seq"]): "bad_version",
                                             str(bad_field["seq"]): "malformed"}}


# --- 3. only what the document allows -----------------------------------------------------


def test_a_message_with_keys_besides_records_is_refused_whole(server, station):
    genuine = station.record()
    station.no_ack_for(canonical({"records": [genuine], "note": "hello"}))
    assert server.stored(station.id).keys() == {station.seq}  # only the probe
    assert station.send(genuine) == {"stored": [genuine["seq"]], "refused": {}}


@pytest.mark.parametrize("encode", [
    lambda body: b"\xef\xbb\xbf" + body,  # a UTF-8 byte order mark
    lambda body: body.decode("utf-8").encode("utf-16"),  # another encoding JSON readers may guess
    lambda body: body.replace(b'"records":[', b'"records":[NaN,'),  # not JSON
], ids=["byte-order-mark", "utf-16", "nan"])
def test_a_message_that_is_not_plain_utf8_json_is_refused_whole(server, station, encode):
    genuine = station.record()
    station.no_ack_for(encode(batch(genuine)))
    assert genuine["seq"] not in server.stored(station.id)
    assert station.send(genuine) == {"stored": [genuine["seq"]], "refused": {}}


def test_a_person_in_the_clear_from_a_station_is_refused_and_not_stored(server, station):
    clear = station.record()
    clear = sign({**{k: v for k, v in clear.items() if k != "sealed"}, "person": PERSON}, station.key)
    assert station.send(clear) == {"stored": [], "refused": {str(clear["seq"]): "malformed"}}
    assert clear["seq"] not in server.stored(station.id)
    assert PERSON["name"] not in str(server.storage.sql.rows(
        "SELECT name FROM checkins WHERE station_id = ?", [station.id]))


def test_the_documented_refusal_reasons_are_the_ones_the_server_gives():
    from qrgate import protocol

    closed = re.search(r"Refusal reasons \(closed list[^)]*\):(.*?)\n\n", DOC, re.S)
    assert closed, "docs/protocol.md lists the refusal reasons"
    listed = set(re.findall(r"`([a-z_]+)`", closed.group(1)))
    assert listed == set(protocol.REFUSAL_REASONS)
    assert "bad_time" in listed and protocol.ACKED_REFUSALS <= listed
