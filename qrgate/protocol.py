"""The station-server wire protocol: topics, signed records, batches and acks.

docs/protocol.md is the specification; this module is its reference implementation and
tests/test_protocol.py checks the test vectors printed there.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

import orjson
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from qrgate.errors import RecordError

VERSION = 1
TOPIC_ROOT = "qrgate/v1/stations"
SIGNING_CONTEXT = b"qrgate-record-v1\n"
CONFIG_SIGNING_CONTEXT = b"qrgate-config-v1\n"  # the server's signature on a station config
ROTATE_SIGNING_CONTEXT = b"qrgate-rotate-v1\n"  # a station's old key vouching for its new one  # domain separation: a record signature is never valid for anything else
STATION_ID_RE = re.compile(r"^[a-z0-9][a-z0-9-]{2,62}$")
MAX_MESSAGE_BYTES = 256 * 1024
MAX_RECORDS_PER_BATCH = 500
MAX_RECORD_BYTES = 8 * 1024
# Integers in records are signed 64-bit: what every JSON library and database holds exactly.
INT_MIN, INT_MAX = -(2**63), 2**63 - 1
# Times (ms) are within 2**53 of 1970 (285,000 years): mono + base, and a local day
# worked out from either, cannot overflow 64 bits on any engine.
TIME_FIELDS = ("ts", "mono", "base")
MAX_TIME_MS = 2**53

# Fields every record carries, with their JSON types.
COMMON_FIELDS: dict[str, type | tuple[type, ...]] = {
    "v": int,  # protocol version
    "type": str,  # "checkin" or "clock"
    "st": str,  # station id
    "seq": int,  # per-station sequence number, 1, 2, 3... never reused
    "ts": int,  # wall clock, ms since the Unix epoch (UTC), as the station knew it
    "mono": int,  # monotonic clock of this boot, ms
    "boot": str,  # kernel boot id
    "sync": bool,  # was the wall clock synchronised (NTP) when the record was made
    "sig": str,  # base64 Ed25519 signature over signing_bytes(record without "sig")
}
# A check-in adds these, and exactly one of "person" (plain object: id, name, birth,
# sex) or "sealed" (the same object sealed to the server's key, see qrgate/sealing.py).
CHECKIN_FIELDS: dict[str, type | tuple[type, ...]] = {"dir": str, "kind": str}
# A clock record says: during boot "boot", wall time = mono + "base" (ms), learned when
# the clock synchronised; the server corrects that boot's unsynced check-ins with it.
CLOCK_FIELDS: dict[str, type | tuple[type, ...]] = {"base": int}
PERSON_FIELDS = ("id", "name", "birth", "sex")
DIRECTIONS = ("in", "out")
MODES = ("entry", "exit", "toggle")  # a station records entries, exits, or alternates
KINDS = ("cccd", "bhyt", "national", "pass")

REFUSAL_REASONS = {
    "malformed": "not a JSON object with exactly the record fields and types",
    "bad_version": "protocol version this server does not know",
    "misaddressed": "record's station id differs from the topic it arrived on",
    "unknown_station": "no station with this id is registered",
    "retired": "the station was retired: its key and credentials no longer count",
    "bad_signature": "signature does not verify with the station's registered key",
    "seq_conflict": "this station already stored a different record with this sequence number",
    "too_large": "record or message over the size limit",
    "bad_sealed": "sealed personal fields cannot be opened with the server's key",
    "bad_time": "the record's time, or the time a clock record gives its boot's check-ins, is outside the"
                " server's window ([ingest] earliest to the server's clock plus max_ahead_s)",
}
# Refusals acked under the record's seq (the station sets the record aside): each is
# given only after the record's signature verified, so no one but the station can cause
# one. The others are never acked: the station keeps the record and sends it again.
ACKED_REFUSALS = frozenset({"malformed", "bad_version", "too_large", "bad_sealed", "seq_conflict", "bad_time"})


def records_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/records"


def acks_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/acks"


def status_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/status"


def config_topic(station_id: str) -> str:
    return f"{TOPIC_ROOT}/{station_id}/config"


def station_from_topic(topic: str) -> str | None:
    """The station id in ``qrgate/v1/stations/<id>/<leaf>``, or None if the topic is not one."""
    parts = topic.split("/")
    if len(parts) != 5 or "/".join(parts[:3]) != TOPIC_ROOT or not STATION_ID_RE.match(parts[3]):
        return None
    return parts[3]


def canonical_json(obj: Any) -> bytes:
    """The one byte form of a JSON value that is signed: sorted keys, no spaces, UTF-8.

    orjson writes exactly what ``json.dumps(obj, sort_keys=True, separators=(",", ":"),
    ensure_ascii=False)`` would (tests/test_protocol.py compares them over random text)
    at a tenth of the cost; the bridge makes this form twice per record. What it cannot
    write (an integer beyond 64 bits, a lone surrogate) is a ValueError.
    """
    try:
        return orjson.dumps(obj, option=orjson.OPT_SORT_KEYS)
    except orjson.JSONEncodeError as exc:
        raise ValueError(f"no canonical JSON form: {exc}") from None


def parse_json(data: bytes | str) -> Any:
    """JSON text as Python values. orjson first (three times faster on a batch); what it
    refuses that the standard library takes (a lone surrogate escape, NaN, a byte order
    mark) is parsed again by ``json``, so an odd record gets its own refusal, as before,
    instead of failing its whole batch. Raises ValueError (or UnicodeDecodeError)."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        return json.loads(data)


def signing_bytes(record: Mapping[str, Any]) -> bytes:
    body = {k: v for k, v in record.items() if k != "sig"}
    return SIGNING_CONTEXT + canonical_json(body)


def sign_record(record: Mapping[str, Any], key: Ed25519PrivateKey) -> dict[str, Any]:
    """Return a copy of ``record`` with its ``sig`` field."""
    body = {k: v for k, v in record.items() if k != "sig"}
    sig = key.sign(signing_bytes(body))
    return {**body, "sig": base64.b64encode(sig).decode("ascii")}


# Each record shape's fields, in the order above, made once: validate_record runs for
# every record the server receives, and building these per record was a third of it.
_SHAPES: dict[tuple[str, str], tuple[tuple[str, type], ...]] = {
    ("checkin", "person"): tuple({**COMMON_FIELDS, **CHECKIN_FIELDS, "person": dict}.items()),
    ("checkin", "sealed"): tuple({**COMMON_FIELDS, **CHECKIN_FIELDS, "sealed": str}.items()),
    ("clock", ""): tuple({**COMMON_FIELDS, **CLOCK_FIELDS}.items()),
}
_SHAPE_KEYS = {shape: frozenset(name for name, _ in fields) for shape, fields in _SHAPES.items()}
_SHAPE_TEXT = {shape: tuple(name for name, typ in fields if typ is str) for shape, fields in _SHAPES.items()}
_PERSON_KEYS = frozenset(PERSON_FIELDS)


def _check_types(record: dict, fields: tuple[tuple[str, type], ...]) -> None:
    for name, typ in fields:
        value = record[name]
        if type(value) is not typ:  # parsed JSON: the exact type, or a wrong one
            # bool is an int in Python: keep "seq": true out
            if typ is int:
                raise RecordError("malformed", f"field {name!r} is not a 64-bit integer")
            if not isinstance(value, typ):
                raise RecordError("malformed", f"field {name!r} has the wrong type")
        elif typ is int and not INT_MIN <= value <= INT_MAX:
            raise RecordError("malformed", f"field {name!r} is not a 64-bit integer")


def validate_person(person: Any) -> dict[str, str]:
    if isinstance(person, dict) and person.keys() == _PERSON_KEYS:
        for value in person.values():
            if not isinstance(value, str):
                break
        else:
            return person
    raise RecordError("malformed", "person must have exactly id, name, birth, sex as text")


def validate_record(record: Any) -> dict[str, Any]:
    """Check shape and types; raise RecordError('malformed' / 'bad_version' / 'too_large')."""
    if not isinstance(record, dict):
        raise RecordError("malformed", "record is not an object")
    if record.get("v") != VERSION and isinstance(record.get("v"), int):
        raise RecordError("bad_version", f"version {record['v']}")
    kind = record.get("type")
    if kind == "checkin":
        shape = ("checkin", "person" if "person" in record else "sealed")
    elif kind == "clock":
        shape = ("clock", "")
    else:
        raise RecordError("malformed", "type must be checkin or clock")
    expected = _SHAPE_KEYS[shape]
    if record.keys() != expected:
        missing = sorted(expected - record.keys())
        extra = sorted(record.keys() - expected)
        raise RecordError("malformed", f"missing {missing}, unexpected {extra}")
    _check_types(record, _SHAPES[shape])
    if record["seq"] < 1:
        raise RecordError("malformed", "seq must be at least 1")
    for name in TIME_FIELDS:
        if name in record and not -MAX_TIME_MS <= record[name] <= MAX_TIME_MS:
            raise RecordError("malformed", f"field {name!r} is more than 2**53 ms from 1970")
    # Text makes a record's size; counting characters is enough for the limit and
    # spares a JSON encoding per record on the server's hot path.
    text = sum(map(len, map(record.__getitem__, _SHAPE_TEXT[shape])))
    if kind == "checkin":
        if record["dir"] not in DIRECTIONS or record["kind"] not in KINDS:
            raise RecordError("malformed", "dir or kind out of range")
        if shape[1] == "person":
            text += sum(map(len, validate_person(record["person"]).values()))
    if text > MAX_RECORD_BYTES:
        raise RecordError("too_large", "record over 8 KiB")
    return record


def b64decode_strict(text: str | bytes) -> bytes:
    """``base64.b64decode(text, validate=True)`` at half the cost, for the server's
    per-record fields: only the alphabet, padding only at the end; ValueError else."""
    return binascii.a2b_base64(text, strict_mode=True)


def signed_seq(record: Any) -> int:
    """The seq under which a record's signature can be checked: the record must be a JSON
    object with an integer ``seq`` from 1 to 2**63 - 1 and a text ``sig``; else
    RecordError('malformed'), and nothing may be acked for it (there is no seq a
    signature vouches for). The bridge checks this, then the signature, then the rest."""
    if type(record) is dict:
        seq = record.get("seq")
        if type(seq) is int and 1 <= seq <= INT_MAX and type(record.get("sig")) is str:
            return seq
    raise RecordError("malformed", "no seq and sig a signature can be checked under")


def verify_record(record: Mapping[str, Any], public_key: Ed25519PublicKey) -> None:
    """Raise RecordError('bad_signature') unless ``record['sig']`` is valid for ``public_key``;
    RecordError('malformed') if the record has no canonical form (a value no signer could
    have signed: an integer past 64 bits, a lone surrogate), so its signature cannot be checked."""
    try:
        sig = b64decode_strict(record["sig"])
    except (ValueError, TypeError) as exc:
        raise RecordError("bad_signature", f"station {record.get('st')} seq {record.get('seq')}") from exc
    try:
        data = signing_bytes(record)
    except ValueError as exc:
        raise RecordError("malformed", f"seq {record.get('seq')}: {exc}; the signature cannot be checked") from None
    try:
        public_key.verify(sig, data)
    except InvalidSignature as exc:
        raise RecordError("bad_signature", f"station {record.get('st')} seq {record.get('seq')}") from exc


@dataclass(frozen=True, slots=True)
class Ack:
    """The server's answer to one batch: stored (or already stored) and refused seqs."""

    stored: tuple[int, ...]
    refused: Mapping[int, str]

    def to_bytes(self) -> bytes:
        return canonical_json(
            {"stored": list(self.stored), "refused": {str(k): v for k, v in self.refused.items()}}
        )

    @classmethod
    def from_bytes(cls, data: bytes) -> Ack:
        try:
            obj = json.loads(data)
            stored = tuple(int(s) for s in obj["stored"])
            refused = {int(k): str(v) for k, v in obj.get("refused", {}).items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise RecordError("malformed", "ack is not {stored: [...], refused: {...}}") from exc
        return cls(stored, refused)


def encode_batch(records: Iterable[bytes]) -> bytes:
    """Join already-serialised signed records into one message: ``{"records":[...]}``."""
    return b'{"records":[' + b",".join(records) + b"]}"


def decode_batch(payload: bytes) -> list[Any]:
    """Split a records message; raise RecordError for anything that is not one.

    The message is UTF-8 JSON text (no byte order mark, no NaN or Infinity) of exactly
    ``{"records": [...]}``. A value JSON allows but a signer cannot have signed (an
    integer past 64 bits, a lone surrogate escape) is left to its record's own checks,
    so one odd record does not fail its whole batch."""
    if len(payload) > MAX_MESSAGE_BYTES:
        raise RecordError("too_large", f"message of {len(payload)} bytes")
    try:
        obj = orjson.loads(payload)  # refuses a BOM, NaN, bad UTF-8 (and what is retried below)
    except orjson.JSONDecodeError:
        obj = _strict_json(payload)
    if type(obj) is not dict or obj.keys() != _BATCH_KEYS or type(obj["records"]) is not list:
        raise RecordError("malformed", 'message is not exactly {"records": [...]}')
    if len(obj["records"]) > MAX_RECORDS_PER_BATCH:
        raise RecordError("too_large", f"{len(obj['records'])} records in one message")
    return obj["records"]


_BATCH_KEYS = frozenset({"records"})


def _not_json(constant: str) -> Any:
    raise ValueError(f"{constant} is not JSON")


def _strict_json(payload: bytes) -> Any:
    """What orjson refused, read by the standard library, but only as JSON text in UTF-8:
    json.loads would guess UTF-16 or UTF-32 from bytes, and take NaN and Infinity."""
    try:
        text = payload.decode("utf-8") if isinstance(payload, (bytes, bytearray)) else payload
        return json.loads(text, parse_constant=_not_json)  # refuses a leading U+FEFF itself
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise RecordError("malformed", "message is not UTF-8 JSON") from exc


def public_key_from_text(text: str) -> Ed25519PublicKey:
    """Parse a station public key written as base64 of its 32 raw bytes."""
    try:
        raw = base64.b64decode(text.strip(), validate=True)
        return Ed25519PublicKey.from_public_bytes(raw)
    except ValueError as exc:
        raise RecordError("malformed", "public key is not base64 of 32 bytes") from exc


class _SodiumVerifier:
    """An Ed25519 public key checked by libsodium (PyNaCl), with cryptography's interface.
    It calls PyNaCl's binding itself, with what that needs looked up once: the server
    verifies every record, and the layers above the binding cost a tenth as much again."""

    __slots__ = ("_raw", "_open", "_bad")

    def __init__(self, raw: bytes):
        from nacl.bindings import crypto_sign_open
        from nacl.exceptions import BadSignatureError
        from nacl.signing import VerifyKey

        self._raw = bytes(VerifyKey(raw))  # checks the key's length, as before
        self._open, self._bad = crypto_sign_open, BadSignatureError

    def verify(self, signature: bytes, data: bytes) -> None:
        if len(signature) != 64:
            raise InvalidSignature
        try:
            self._open(signature + data, self._raw)
        except self._bad:
            raise InvalidSignature from None


def fast_verifier(text: str):
    """A verifier for a station key: libsodium when PyNaCl is installed (the server),
    else OpenSSL through cryptography. Both raise InvalidSignature on a bad signature."""
    key = public_key_from_text(text)
    try:
        return _SodiumVerifier(base64.b64decode(text.strip(), validate=True))
    except ImportError:
        return key


def public_key_to_text(key: Ed25519PublicKey) -> str:
    from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

    return base64.b64encode(key.public_bytes(Encoding.Raw, PublicFormat.Raw)).decode("ascii")
