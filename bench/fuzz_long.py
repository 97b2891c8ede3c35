"""Long fuzz runs: the station's QR payload parser, the bridge's record checks and the web
API, each fed mutated real inputs and hostile values, each input judged by an oracle.

    python -m bench.fuzz_long --inputs 100000 [--seed N] [--targets payloads,bridge,api] [--json PATH]

``--inputs`` is the total, shared 40/40/20 between the targets (``--targets`` picks
some). The mutations come from one seeded ``random.Random``, so a seed and a count give
the same inputs again; a run prints one line per target and exits 1 if any input crashed
or was wrongly accepted. tests/test_fuzz_long.py runs the same code with a few hundred
inputs; docs/reliability.md has the figures of the long run.

What counts (per input):

- crash: an exception other than the documented refusal (``PayloadRefused`` with a code
  from ``REFUSAL_CODES``; none at all out of ``Bridge.handle``; for the web, an exception
  out of the app, or an answer of 500 or more, counted apart as 5xx);
- wrong accept: a QR pass altered or signed by an unknown key taken as valid, or read as
  another person; a records message that got a seq acked (stored or refused) although no
  record of that number in it carries a valid signature, an ack naming a reason that is
  not acked, or a stored row whose time is outside the ingest window or whose record
  does not verify; a state-changing web request with a session cookie but without the
  CSRF token answered 2xx.
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import logging
import random
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import date
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from cryptography.exceptions import InvalidSignature  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: E402
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey  # noqa: E402

SHARES = {"payloads": 0.4, "bridge": 0.4, "api": 0.2}
EXAMPLES_KEPT = 5  # failing inputs kept per target, for the report

# Values no field expects: types, the edges of every integer width, text a database or a
# terminal chokes on. Lone surrogates are written as \ud800 escapes by json.dumps.
HOSTILE_VALUES: list = [
    None, True, False, 0, -1, 1, 2**31, -(2**31) - 1, 2**53, 2**53 + 1, -(2**53) - 1, 2**63 - 1, 2**63,
    -(2**63), -(2**63) - 1, 2**64, 2**70, 1.5, -0.0, 1e308, "", " ", "x", "\x00", "a\x00b", "\ud800", "\udfff",
    "\ufeff", "\ufffd", "\u202e", "🙂", "Nguyễn", "<script>alert(1)</script>", "=cmd|' /C calc'!A0",
    "' OR 1=1 --", "../../etc/passwd", "A" * 9000, "9" * 400, [], {}, [1, "x"], {"a": {"b": [None]}},
    253_402_300_799_000, -62_200_000_000_000, 1_577_836_799_999,
]
CHARS = ("abcxyzABCXYZ0123456789|/-.:;*, \t\r\n\x00\x01\x1b\x7f\u00a0\ufeff\ufffd\u202e\u0300"
         "ăâđêôơưĂÂĐÊÔƠƯàảãáạằẳẵắặễệỗộờởỡớợừửữứựỳỷỹýỵ🙂\U0010ffff")


@dataclass
class FuzzResult:
    target: str
    inputs: int = 0
    crashes: int = 0
    wrong_accepts: int = 0
    errors_5xx: int | None = None  # None: not an HTTP surface
    seconds: float = 0.0
    kinds: dict = field(default_factory=dict)  # inputs per kind of mutation
    examples: list = field(default_factory=list)  # what failed, briefly

    def note(self, text: str) -> None:
        if len(self.examples) < EXAMPLES_KEPT:
            self.examples.append(text[:300])

    def count(self, kind: str) -> None:
        self.inputs += 1
        self.kinds[kind] = self.kinds.get(kind, 0) + 1


# --- mutations ------------------------------------------------------------------------------


def random_text(rng: random.Random, max_len: int = 300) -> str:
    return "".join(rng.choice(CHARS) for _ in range(rng.randint(0, max_len)))


def mutate_text(text: str, rng: random.Random) -> str:
    """One to four edits: replace, insert, delete, duplicate, truncate, repeat."""
    for _ in range(rng.randint(1, 4)):
        n = len(text)
        i = rng.randint(0, n)
        op = rng.randrange(7)
        if op == 0 and n:
            text = text[:min(i, n - 1)] + rng.choice(CHARS) + text[min(i, n - 1) + 1:]
        elif op == 1:
            text = text[:i] + random_text(rng, 8) + text[i:]
        elif op == 2:
            text = text[:i] + text[i + rng.randint(1, 16):]
        elif op == 3:
            j = rng.randint(i, n)
            text = text[:j] + text[i:j] + text[j:]
        elif op == 4:
            text = text[:i]
        elif op == 5:
            j = min(n, i + rng.randint(1, 8))
            text = text[:i] + text[i:j] * rng.randint(2, 200) + text[j:]
        else:
            text = text[:i] + rng.choice(["|", "||", "\r\n", "\ufeff", "\ud800", "%", "\\", '"']) + text[i:]
    return text


def mutate_bytes(data: bytes, rng: random.Random) -> bytes:
    """Bit flips, inserted and deleted bytes, splices, truncation."""
    buf = bytearray(data)
    for _ in range(rng.randint(1, 6)):
        n = len(buf)
        op = rng.randrange(5)
        i = rng.randint(0, n)
        if op == 0 and n:
            buf[min(i, n - 1)] ^= 1 << rng.randrange(8)
        elif op == 1:
            buf[i:i] = rng.randbytes(rng.randint(1, 8))
        elif op == 2:
            del buf[i:i + rng.randint(1, 16)]
        elif op == 3 and n:
            j = rng.randint(0, n)
            buf[i:i] = buf[min(i, j):max(i, j)][:64]
        else:
            buf[i:i] = rng.choice([b"\xef\xbb\xbf", b"\xff", b"\xc3", b"\xed\xa0\x80", b"\x00", b"\\u0000",
                                   b"\\ud800", b"NaN", b"1e400", b"-", b"]", b"}", b","])
    return bytes(buf)


def mutate_json_value(value, rng: random.Random, depth: int = 0):
    """The value with one part replaced, removed, added to or retyped."""
    if isinstance(value, dict) and value and depth < 4 and rng.random() < 0.7:
        key = rng.choice(sorted(value))
        out = dict(value)
        op = rng.randrange(5)
        if op == 0:
            out[key] = rng.choice(HOSTILE_VALUES)
        elif op == 1:
            del out[key]
        elif op == 2:
            out[rng.choice([key + "_", "extra", "", "\ufeff" + key, key.upper()])] = rng.choice(HOSTILE_VALUES)
        elif op == 3:
            out[key] = mutate_json_value(value[key], rng, depth + 1)
        else:
            out[key] = [value[key]] if rng.random() < 0.5 else {"v": value[key]}
        return out
    if isinstance(value, list) and value and depth < 4 and rng.random() < 0.7:
        i = rng.randrange(len(value))
        out = list(value)
        op = rng.randrange(3)
        if op == 0:
            out[i] = mutate_json_value(value[i], rng, depth + 1)
        elif op == 1:
            del out[i]
        else:
            out.insert(i, rng.choice(HOSTILE_VALUES))
        return out
    if isinstance(value, str) and rng.random() < 0.5:
        return mutate_text(value, rng)
    if isinstance(value, int) and not isinstance(value, bool) and rng.random() < 0.5:
        return value + rng.choice([-1, 1, 2**32, -(2**32), 10**13, -(10**13)])
    return rng.choice(HOSTILE_VALUES)


def dumps(value) -> bytes:
    """JSON text as a careless client writes it: UTF-8, or ASCII escapes where the text holds
    a lone surrogate (which has no UTF-8 form)."""
    text = json.dumps(value, ensure_ascii=False)
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(value).encode("ascii")


# --- the station's QR payload parser --------------------------------------------------------


def fuzz_payloads(n: int, rng: random.Random) -> FuzzResult:
    from edge.payloads import REFUSAL_CODES, PayloadRefused, parse_payload
    from qrgate.personal_pass import PASS_PREFIX, issue_pass, key_id
    from qrgate.samples import demo_samples

    result = FuzzResult("payloads")
    issuer = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    stranger = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    keys = {key_id(issuer.public_key()): issuer.public_key()}
    today = date(2026, 9, 21)
    genuine = issue_pass(issuer, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1),
                         expires=date(2030, 1, 1), birth="1990-02-03")
    genuine_person = parse_payload(genuine, pass_keys=keys, today=today)
    foreign = issue_pass(stranger, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1),
                         expires=date(2030, 1, 1))
    samples = [s.text for s in demo_samples(issuer, today=today)]
    # The passes the issuer really signed (the demo queue holds one too): a pass read as
    # anyone else is forged, whatever the mutation did to its text.
    signed_persons = {genuine_person} | {parse_payload(s, pass_keys=keys, today=today) for s in samples
                                         if s.startswith(PASS_PREFIX)}
    started = time.monotonic()
    for _ in range(n):
        kind = rng.choice(["sample", "sample-bytes", "fields", "text", "bytes", "pass", "foreign"])
        if kind == "sample":
            payload = mutate_text(rng.choice(samples), rng)
        elif kind == "sample-bytes":
            encoding = rng.choice(["utf-8", "utf-8", "utf-16", "cp1258", "latin-1"])
            text = rng.choice(samples)
            payload = mutate_bytes(text.encode(encoding, "replace"), rng)
        elif kind == "fields":
            fields = rng.choice(samples).split("|")
            i = rng.randrange(len(fields))
            fields[i] = rng.choice(["", "0", "00000000", "31022000", "29022023", "99999999", "1899", "2999",
                                    "9" * 30, "Nam", "Nữ", "nu", "3", "**", "****-**-**", "0000-00-00",
                                    mutate_text(fields[i], rng), random_text(rng, 20)])
            if rng.random() < 0.2:
                fields.insert(rng.randrange(len(fields) + 1), random_text(rng, 10))
            payload = "|".join(fields)
        elif kind == "text":
            payload = random_text(rng, 1500)
        elif kind == "bytes":
            payload = rng.randbytes(rng.randint(0, 3000))
        elif kind == "pass":
            payload = mutate_text(genuine, rng)
        else:
            payload = foreign if rng.random() < 0.5 else mutate_text(foreign, rng)
        result.count(kind)
        try:
            person = parse_payload(payload, pass_keys=keys, today=rng.choice([today, None]))
        except PayloadRefused as exc:
            if exc.reason not in REFUSAL_CODES:
                result.crashes += 1
                result.note(f"{kind}: refusal code {exc.reason!r} is not in REFUSAL_CODES: {payload!r:.120}")
            continue
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            result.crashes += 1
            result.note(f"{kind}: {type(exc).__name__}: {exc} for {payload!r:.120}")
            continue
        if not all(isinstance(v, str) for v in (person.kind, person.id_number, person.name, person.birth,
                                                 person.sex)):
            result.crashes += 1
            result.note(f"{kind}: a Person with a field that is not text: {person!r:.120}")
        if kind == "foreign" or (person.kind == "pass" and person not in signed_persons):
            result.wrong_accepts += 1
            result.note(f"{kind}: accepted {person!r:.120} from {payload!r:.120}")
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the bridge -----------------------------------------------------------------------------


class _IndependentVerifier:
    """Which seqs of a message carry a valid signature, worked out from docs/protocol.md
    with the standard library and OpenSSL, not with the code under test."""

    def __init__(self, public_key, station_id: str):
        self.public_key = public_key
        self.station_id = station_id

    def signed_seqs(self, payload: bytes) -> set[int]:
        try:
            obj = json.loads(payload)
        except (ValueError, UnicodeDecodeError, RecursionError):
            return set()
        if not isinstance(obj, dict) or not isinstance(obj.get("records"), list):
            return set()
        return {r["seq"] for r in obj["records"] if self.verifies(r)}

    def verifies(self, record) -> bool:
        if not (isinstance(record, dict) and type(record.get("seq")) is int and isinstance(record.get("sig"), str)
                and record.get("st") == self.station_id):
            return False
        body = {k: v for k, v in record.items() if k != "sig"}
        try:
            signed = b"qrgate-record-v1\n" + json.dumps(body, sort_keys=True, separators=(",", ":"),
                                                        ensure_ascii=False, allow_nan=False).encode("utf-8")
            self.public_key.verify(base64.b64decode(record["sig"], validate=True), signed)
        except (ValueError, UnicodeEncodeError, InvalidSignature, RecursionError):
            return False
        return True


def fuzz_bridge(n: int, rng: random.Random, workdir: Path) -> FuzzResult:
    from qrgate import protocol
    from qrgate.sealing import PersonOpener, PersonSealer
    from server.ingest.bridge import Bridge
    from server.storage import SqliteStorage

    result = FuzzResult("bridge")
    key = Ed25519PrivateKey.from_private_bytes(rng.randbytes(32))
    sealing = X25519PrivateKey.from_private_bytes(rng.randbytes(32))
    storage = SqliteStorage(workdir / "bridge-fuzz.sqlite3")
    storage.db.execute("PRAGMA synchronous=OFF")  # a scratch file: the oracle reads it, no power cut
    venue = storage.add_venue("Fuzz")
    storage.add_station("gate-1", protocol.public_key_to_text(key.public_key()), venue)
    bridge = Bridge(storage, opener=PersonOpener(sealing), check_threads=1)
    lo, ahead = bridge.ingest.earliest_ms, bridge.ingest.ahead_ms
    sealer = PersonSealer(sealing.public_key(), "gate-1")
    oracle = _IndependentVerifier(key.public_key(), "gate-1")
    topic = protocol.records_topic("gate-1")
    person = {"id": "024083123451", "name": "Nguyễn Gia Mạnh", "birth": "1983-03-21", "sex": "M"}
    sealed_person = sealer.seal(person)
    seq = 0
    last_row = 0

    def genuine(**fields) -> dict:
        nonlocal seq
        seq += 1
        now = int(time.time() * 1000)
        record = {"v": 1, "type": "checkin", "st": "gate-1", "seq": seq, "ts": now - rng.randint(0, 10**9),
                  "mono": rng.randint(0, 10**9), "boot": rng.choice(["boot-a", "boot-b", "boot-c"]),
                  "sync": rng.random() < 0.7, "dir": rng.choice(["in", "out"]), "kind": "cccd",
                  "sealed": sealed_person if rng.random() < 0.9 else sealer.seal(person)}
        if rng.random() < 0.1:
            record = {k: v for k, v in record.items() if k not in ("dir", "kind", "sealed")}
            record.update(type="clock", base=now - record["mono"] + rng.choice([0, 0, -(10**12), 10**13, 2**52]))
        return {**record, **fields}

    started = time.monotonic()
    for _ in range(n):
        kind = rng.choice(["bytes", "batch-bytes", "altered", "forged", "signed-hostile", "envelope", "text"])
        records = [genuine() for _ in range(rng.randint(1, 4))]
        signed = [protocol.sign_record(r, key) for r in records]
        if kind == "bytes":
            payload = rng.randbytes(rng.randint(0, 2000))
        elif kind == "batch-bytes":
            payload = mutate_bytes(protocol.encode_batch(protocol.canonical_json(r) for r in signed), rng)
        elif kind == "altered":  # signed, then changed: none of these verifies any more (but by chance)
            i = rng.randrange(len(signed))
            signed[i] = mutate_json_value(signed[i], rng)
            payload = dumps({"records": signed})
        elif kind == "forged":  # a bad field under a zero, random or stranger's signature
            i = rng.randrange(len(signed))
            bad = mutate_json_value({k: v for k, v in signed[i].items() if k != "sig"}, rng)
            sig = rng.choice([bytes(64), rng.randbytes(64), b""])
            if rng.random() < 0.3 and isinstance(bad, dict):
                with contextlib.suppress(ValueError, TypeError):
                    bad = protocol.sign_record(bad, Ed25519PrivateKey.from_private_bytes(rng.randbytes(32)))
                    sig = None
            if sig is not None and isinstance(bad, dict):
                bad["sig"] = base64.b64encode(sig).decode("ascii")
            signed[i] = bad
            payload = dumps({"records": signed})
        elif kind == "signed-hostile":  # what a station holding the key may sign: refused or stored, never broken
            i = rng.randrange(len(records))
            changed = mutate_json_value({k: v for k, v in records[i].items() if k != "sig"}, rng)
            if isinstance(changed, dict) and rng.random() < 0.5:
                changed["st"], changed["seq"] = "gate-1", records[i]["seq"]
            try:
                signed[i] = protocol.sign_record(changed, key) if isinstance(changed, dict) else changed
            except (ValueError, TypeError):
                signed[i] = changed  # no canonical form: nothing can sign it
            if rng.random() < 0.2:
                person_clear = {k: v for k, v in records[i].items() if k not in ("sealed", "sig")}
                with contextlib.suppress(ValueError, TypeError):
                    signed[i] = protocol.sign_record({**person_clear, "person": mutate_json_value(person, rng)}, key)
            payload = dumps({"records": signed})
        elif kind == "envelope":
            envelope = mutate_json_value({"records": signed}, rng)
            payload = dumps(envelope) if rng.random() < 0.7 else b"\xef\xbb\xbf" + dumps({"records": signed})
        else:
            payload = mutate_text(protocol.encode_batch(protocol.canonical_json(r) for r in signed).decode(),
                                  rng).encode("utf-8", "surrogatepass")
        result.count(kind)
        from_station = rng.random() < 0.8
        try:
            ack = bridge.handle(topic, payload, from_station=from_station)
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            result.crashes += 1
            result.note(f"{kind}: {type(exc).__name__}: {exc} for {payload[:150]!r}")
            continue
        if ack is not None:
            allowed = oracle.signed_seqs(payload)
            named = set(ack.stored) | set(ack.refused)
            if not named <= allowed or not set(ack.refused.values()) <= protocol.ACKED_REFUSALS:
                result.wrong_accepts += 1
                result.note(f"{kind}: ack {ack} names seqs without a valid signature ({sorted(allowed)})"
                            f" for {payload[:150]!r}")
        now = int(time.time() * 1000)
        for row_id, wall, record in storage.db.execute(
                "SELECT id, wall_ms, record FROM checkins WHERE id > ?", [last_row]).fetchall():
            last_row = row_id
            if not (lo <= wall <= now + ahead and oracle.verifies(json.loads(record))):
                result.wrong_accepts += 1
                result.note(f"{kind}: stored row {row_id} at {wall} ms: {record[:150]}")
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the web API ----------------------------------------------------------------------------


STATION_ROUTES = ("/api/enrol", "/api/rotate-key")  # no session: a station's key or code decides


def _url_text(value) -> str:
    """A value as a client can put it in a URL or a form: percent-encoded UTF-8 bytes (a
    lone surrogate becomes the bytes no UTF-8 decoder accepts, as a hostile client sends)."""
    from urllib.parse import quote

    return quote(str(value).encode("utf-8", "surrogatepass"), safe="")


def fuzz_api(n: int, rng: random.Random, workdir: Path) -> FuzzResult:
    import warnings

    sys.path.insert(0, str(REPO / "tests"))  # the tests' web harness: a site whose SMS codes can be read
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from fastapi.routing import APIRoute
    from test_api_fuzz import VALID_BODIES, VALID_FORMS, _parameter_names
    from test_web_stations import RecordingBroker
    from test_web_support import FakeClock, Site, every_route

    from qrgate import protocol
    from server.ingest.enrol import Enrolment, EnrolSettings
    from server.accounts.sms import DevSmsSender
    from server.storage import SqliteStorage
    from server.web.app import create_app

    result = FuzzResult("api", errors_5xx=0)
    storage = SqliteStorage(workdir / "api-fuzz.sqlite3")
    storage.db.execute("PRAGMA synchronous=OFF")
    broker = RecordingBroker()
    enrolment = Enrolment(storage, broker, EnrolSettings("mqtt.example.vn", 8883, "CA", "SEAL", ("PASS",)))
    sender, clock = DevSmsSender(), FakeClock()
    site = Site(storage, sender, clock, create_app(storage, sender=sender, clock=clock, enrolment=enrolment,
                                                   broker_files=broker))
    owner = site.visitor("203.0.113.9").login("0912486419")
    venue = owner.create_venue(name="Fuzz <b>venue</b>")
    storage.add_station("gate-9", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    good = {"venue_id": venue, "token": site.services.venues.ensure_public_token(venue), "pid": 1,
            "station_id": "gate-9", "invitation_id": 1, "account_id": 1, "checkin_id": 1}
    cookies, csrf = dict(owner.http.cookies), owner.csrf()
    http = TestClient(site.app, base_url="http://testserver", client=("203.0.113.10", 50000),
                      follow_redirects=False, raise_server_exceptions=False)
    routes = []
    for route in every_route(site.app):
        if not isinstance(route, APIRoute) or route.path == "/logout":
            continue  # /logout would end the session the rest uses
        for method in sorted(route.methods - {"HEAD"}):
            routes.append((method, route.path, sorted(_parameter_names(route, "path_params")),
                           sorted(_parameter_names(route, "query_params"))))

    def value_for(name: str):
        choice = rng.random()
        if choice < 0.5 and name in good:
            return good[name]
        if choice < 0.8:
            return rng.choice(HOSTILE_VALUES)
        return mutate_text(str(good.get(name, "1")), rng)

    started = time.monotonic()
    for _ in range(n):
        method, template, path_names, query_names = rng.choice(routes)
        path = template
        for name in path_names:
            path = path.replace("{" + name + "}", _url_text(value_for(name)) or "x")
        query = "&".join(f"{name}={_url_text(value_for(name))}" for name in query_names if rng.random() < 0.5)
        url = f"{path}?{query}" if query else path
        who = rng.choice(["anonymous", "owner", "owner without CSRF"])
        headers = {"X-CSRF-Token": csrf} if who == "owner" else {}
        http.cookies.clear()
        if who != "anonymous":
            http.cookies.update(cookies)
        content = None
        kind = "no body"
        if method in ("POST", "PUT", "PATCH", "DELETE"):
            body = VALID_BODIES.get(template)
            form = VALID_FORMS.get(template)
            if body is not None:
                kind = rng.choice(["json", "json", "json-bytes"])
                value = mutate_json_value(body, rng) if rng.random() < 0.9 else body
                content = dumps(value)
                if kind == "json-bytes":
                    content = mutate_bytes(content, rng)
                headers["Content-Type"] = "application/json"
            elif form is not None:
                kind = "form"
                fields = mutate_json_value(form, rng) if rng.random() < 0.9 else form
                data = {str(k): v for k, v in fields.items()} if isinstance(fields, dict) else {}
                if who == "owner":
                    data["csrf"] = csrf
                content = "&".join(f"{_url_text(k)}={_url_text(v)}" for k, v in data.items()).encode("ascii")
                headers["Content-Type"] = "application/x-www-form-urlencoded"
            else:
                kind = "raw body"
                content = rng.randbytes(rng.randint(0, 500))
        result.count(f"{method} {kind}")
        try:
            response = http.request(method, url, content=content, headers=headers)
        except Exception as exc:  # noqa: BLE001 - counting crashes is the point
            result.crashes += 1
            result.note(f"{method} {path}: {type(exc).__name__}: {exc}")
            continue
        if response.status_code >= 500:
            result.errors_5xx += 1
            result.note(f"{method} {url} ({who}, {kind}): {response.status_code} for {content!r:.150}")
        elif (who == "owner without CSRF" and method != "GET" and template not in STATION_ROUTES
              and 200 <= response.status_code < 300):
            result.wrong_accepts += 1
            result.note(f"{method} {path}: {response.status_code} without the CSRF token")
    result.seconds = round(time.monotonic() - started, 1)
    return result


# --- the run --------------------------------------------------------------------------------


TARGETS: dict[str, Callable] = {"payloads": fuzz_payloads, "bridge": fuzz_bridge, "api": fuzz_api}


def split_inputs(total: int, targets: list[str]) -> dict[str, int]:
    """``total`` shared by the targets in proportion to SHARES (the last takes the rest)."""
    weight = sum(SHARES[t] for t in targets)
    counts = {t: int(total * SHARES[t] / weight) for t in targets}
    counts[targets[-1]] += total - sum(counts.values())
    return counts


def run(total: int, *, seed: int = 1, targets: list[str] | None = None, workdir: Path | None = None,
        progress: Callable[[FuzzResult], None] = lambda r: None) -> list[FuzzResult]:
    """Fuzz each target with its share of ``total`` inputs; one result per target."""
    targets = targets or list(TARGETS)
    results = []
    with contextlib.ExitStack() as stack:
        if workdir is None:
            # tmpfs when there is one: the bridge commits every message.
            shm = Path("/dev/shm")
            workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(
                prefix="qrgate-fuzz-", dir=shm if shm.is_dir() else None)))
        for target, count in split_inputs(total, targets).items():
            rng = random.Random(f"{seed}:{target}")
            fuzz = TARGETS[target]
            result = fuzz(count, rng) if target == "payloads" else fuzz(count, rng, workdir)
            progress(result)
            results.append(result)
    return results


def machine() -> dict:
    import os
    import platform
    import subprocess

    model = ""
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        model = next((line.split(":", 1)[1].strip() for line in out.splitlines() if line.startswith("Model name")), "")
    return {"cpu": model, "cores": os.cpu_count(), "python": platform.python_version()}


def table(results: list[FuzzResult]) -> str:
    lines = ["| target | inputs | crashes | 5xx | wrong accepts | seconds | inputs/s |", "|---|---|---|---|---|---|---|"]
    for r in results:
        rate = r.inputs / r.seconds if r.seconds else float("inf")
        lines.append(f"| {r.target} | {r.inputs} | {r.crashes} | {'-' if r.errors_5xx is None else r.errors_5xx} "
                     f"| {r.wrong_accepts} | {r.seconds} | {rate:.0f} |")
    total = sum(r.inputs for r in results)
    lines.append(f"| all | {total} | {sum(r.crashes for r in results)} "
                 f"| {sum(r.errors_5xx or 0 for r in results)} | {sum(r.wrong_accepts for r in results)} "
                 f"| {round(sum(r.seconds for r in results), 1)} | |")
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.fuzz_long", description=__doc__.splitlines()[0])
    parser.add_argument("--inputs", type=int, default=100_000, help="inputs in all (default 100,000)")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--targets", default=",".join(TARGETS), help="some of: " + ", ".join(TARGETS))
    parser.add_argument("--json", type=Path, help="write the figures and the failing inputs here")
    args = parser.parse_args(argv)
    # Every refusal is logged as a warning: millions of lines that say what the table counts.
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    targets = [t.strip() for t in args.targets.split(",") if t.strip()]
    unknown = sorted(set(targets) - set(TARGETS))
    if unknown or not targets:
        parser.error(f"--targets: unknown {', '.join(unknown) or '(none given)'}; known: {', '.join(TARGETS)}")
    if args.inputs < len(targets):
        parser.error("--inputs must be at least one per target")
    started = time.monotonic()

    def progress(r: FuzzResult) -> None:
        print(f"{r.target}: {r.inputs} inputs, {r.crashes} crashes, {r.errors_5xx if r.errors_5xx is not None else '-'}"
              f" 5xx, {r.wrong_accepts} wrong accepts, {r.seconds} s", file=sys.stderr, flush=True)
        for example in r.examples:
            print(f"  {example}", file=sys.stderr)

    results = run(args.inputs, seed=args.seed, targets=targets, progress=progress)
    print(table(results))
    report = {"machine": machine(), "seed": args.seed, "seconds": round(time.monotonic() - started, 1),
              "results": [asdict(r) for r in results]}
    print(f"\n{sum(r.inputs for r in results)} inputs, seed {args.seed}, {report['seconds']} s on "
          f"{report['machine']['cores']} cores ({report['machine']['cpu'] or 'unknown CPU'})")
    if args.json:
        args.json.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    failed = any(r.crashes or r.wrong_accepts or r.errors_5xx for r in results)
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
