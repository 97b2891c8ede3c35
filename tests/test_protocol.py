"""The wire protocol: test vectors from docs/protocol.md, validation, batches and acks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given, settings
from hypothesis import strategies as st

from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from qrgate import protocol
from qrgate.errors import RecordError
from qrgate.sealing import PersonOpener, PersonSealer, x25519_public_to_text

DOC = (Path(__file__).resolve().parents[1] / "docs" / "protocol.md").read_text(encoding="utf-8")
KEY = Ed25519PrivateKey.from_private_bytes(bytes(range(32)))
RECORD = {
    "v": 1, "type": "checkin", "st": "gate-1", "seq": 7, "ts": 1790000000000, "mono": 123456,
    "boot": "5f0c3b2e-8a7d-4c1e-9b6a-2d4e6f8a0b1c", "sync": True, "dir": "in", "kind": "cccd",
    "person": {"id": "024083123451", "name": "Nguyễn Gia Mạnh", "birth": "1983-03-21", "sex": "M"},
}
PUBLIC = "A6EHv/POEL4dcN0Y50vAmWfk1jCbpQ1fHdyGZBJVMbg="
SIG = "oKOKX0wBTTBNAB7k8PsiMk+JlPbjkRoiXNa2x7wssfWkUjnyL0QSgBwnjvHafNz+9bExRkWR1Z8hmo6z7wUxDQ=="
SERVER = X25519PrivateKey.from_private_bytes(bytes(range(32, 64)))
SERVER_PUBLIC = "NYBy1jZYgNGu6jKa35EhODhR7SGijjt16WXQ0s0WYlQ="
SEALED = ("eaYx7t4b+cmPEgMs3q3Q56B5OY/HhriMyEbsia+FpRoAAQIDBAUGBwgJCgtAICGDivbv1DSMaNtxwRnuNXoxnWEy8z9usA4/"
          "Ph/AdiFNdM3HR6kj6cAZy8emieXNe7b2Wo2OrBabUUhkl9Vlkkk+4hfDS6hnxr+CxJxvADKdOmXzGnfviImNQOAUtFQo")
SEALED_SIG = "r268RG5Xi2AHyPH0B5KnCeIqg9RtTKtHvuDqCKcmgx/d2VDQryFGxHt6Dq/7Tb77/Gpve4abWvOFxfCi7BwVCg=="
CLOCK = {"v": 1, "type": "clock", "st": "gate-1", "seq": 8, "ts": 1790000100000, "mono": 223456,
         "boot": "5f0c3b2e-8a7d-4c1e-9b6a-2d4e6f8a0b1c", "sync": True, "base": 1789999876544}
CLOCK_SIG = "p3a2QXgcrvLhuktqZ/VGW0w7K8x3gJLu0s7FIV2aanl9Rl/ujRB5FQEuJpQe337aaa1MzHnhRCm9+6GVMMRUAg=="


def test_vectors_match_the_document_and_the_code():
    assert protocol.public_key_to_text(KEY.public_key()) == PUBLIC
    signed_text = protocol.signing_bytes(RECORD).decode("utf-8")
    assert signed_text in DOC
    signed = protocol.sign_record(RECORD, KEY)
    assert signed["sig"] == SIG
    assert PUBLIC in DOC and SIG in DOC
    ack = protocol.Ack((7, 8), {9: "seq_conflict"}).to_bytes().decode()
    assert ack in DOC


def test_sealed_and_clock_vectors_match_the_document():
    assert x25519_public_to_text(SERVER.public_key()) == SERVER_PUBLIC
    ephemeral = X25519PrivateKey.from_private_bytes(bytes(range(64, 96)))
    sealed = PersonSealer(SERVER.public_key(), "gate-1").seal(RECORD["person"], ephemeral=ephemeral,
                                                              nonce=bytes(range(12)))
    assert sealed == SEALED
    record = {k: v for k, v in RECORD.items() if k != "person"} | {"sealed": sealed}
    signed = protocol.validate_record(protocol.sign_record(record, KEY))
    assert signed["sig"] == SEALED_SIG
    assert protocol.validate_record(protocol.sign_record(CLOCK, KEY))["sig"] == CLOCK_SIG
    for text in (SERVER_PUBLIC, SEALED, SEALED_SIG, CLOCK_SIG):
        assert text in DOC


def test_sealed_person_opens_only_with_the_server_key_and_the_right_station():
    sealer = PersonSealer(SERVER.public_key(), "gate-1")
    sealed = sealer.seal(RECORD["person"])
    assert "Nguy" not in sealed and "024083123451" not in sealed
    assert PersonOpener(SERVER).open(sealed, "gate-1") == RECORD["person"]
    with pytest.raises(RecordError) as err:
        PersonOpener(X25519PrivateKey.generate()).open(sealed, "gate-1")
    assert err.value.reason == "bad_sealed"
    with pytest.raises(RecordError):
        PersonOpener(SERVER).open(sealed, "gate-2")  # moved to another station's record
    for bad in ("", "!!", "AAAA", sealed[:-8] + "AAAAAAA="):
        with pytest.raises(RecordError):
            PersonOpener(SERVER).open(bad, "gate-1")


def test_a_station_boot_shares_one_ephemeral_key_until_it_rotates():
    now = [0.0]
    sealer = PersonSealer(SERVER.public_key(), "gate-1", rotate_after_s=100, clock=lambda: now[0])
    first, second = sealer.seal({"a": "1"}), sealer.seal({"a": "1"})
    assert first != second  # random nonces
    assert first[:42] == second[:42]  # same ephemeral public key
    now[0] = 101
    assert sealer.seal({"a": "1"})[:42] != first[:42]


def test_signed_record_verifies_and_any_change_breaks_it():
    signed = protocol.validate_record(protocol.sign_record(RECORD, KEY))
    protocol.verify_record(signed, protocol.public_key_from_text(PUBLIC))
    tampered = json.loads(json.dumps(signed))
    tampered["person"]["name"] = "Nguyễn Gia Mạnh "
    with pytest.raises(RecordError) as err:
        protocol.verify_record(tampered, KEY.public_key())
    assert err.value.reason == "bad_signature"
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(RecordError):
        protocol.verify_record(signed, other)


@pytest.mark.parametrize(
    "change, reason",
    [
        (lambda r: r.pop("ts"), "malformed"),
        (lambda r: r.update(extra=1), "malformed"),
        (lambda r: r.update(seq=True), "malformed"),
        (lambda r: r.update(seq=0), "malformed"),
        (lambda r: r.update(dir="sideways"), "malformed"),
        (lambda r: r.update(v=2), "bad_version"),
        (lambda r: r["person"].update(name=5), "malformed"),
        (lambda r: r["person"].update(name="A" * 9000), "too_large"),
        (lambda r: r.update(type="other"), "malformed"),
        (lambda r: r.update(sealed="x"), "malformed"),  # person and sealed together
    ],
)
def test_invalid_records_are_refused_with_their_reason(change, reason):
    record = json.loads(json.dumps(protocol.sign_record(RECORD, KEY)))
    change(record)
    with pytest.raises(RecordError) as err:
        protocol.validate_record(record)
    assert err.value.reason == reason


def test_batches_round_trip_and_limits_hold():
    body = protocol.canonical_json(protocol.sign_record(RECORD, KEY))
    assert protocol.decode_batch(protocol.encode_batch([body, body])) == [json.loads(body)] * 2
    for bad in (b"\xff\xfe", b"[]", b'{"records": 5}', b"not json"):
        with pytest.raises(RecordError) as err:
            protocol.decode_batch(bad)
        assert err.value.reason == "malformed"
    with pytest.raises(RecordError) as err:
        protocol.decode_batch(b" " * (protocol.MAX_MESSAGE_BYTES + 1))
    assert err.value.reason == "too_large"


def test_topics_name_only_valid_station_ids():
    assert protocol.station_from_topic(protocol.records_topic("gate-1")) == "gate-1"
    for topic in ("qrgate/v1/stations/+/records", "qrgate/v1/stations/a/records",
                  "qrgate/v1/stations/gate-1/records/x", "other/v1/stations/gate-1/records"):
        assert protocol.station_from_topic(topic) is None


def test_unreadable_ack_is_an_error_not_a_crash():
    assert protocol.Ack.from_bytes(b'{"stored":[1,2]}').stored == (1, 2)
    for bad in (b"", b"{}", b'{"stored":"x"}', b"\x00"):
        with pytest.raises(RecordError):
            protocol.Ack.from_bytes(bad)


# Any text without lone surrogates (which have no UTF-8 form), 64-bit integers, and the
# settings' floats: the values a signed object can hold.
_TEXT = st.text(st.characters(blacklist_categories=("Cs",)), max_size=20)
_SCALARS = (st.none() | st.booleans() | st.integers(protocol.INT_MIN, protocol.INT_MAX) | _TEXT
            | st.floats(1, 604_800).map(lambda f: round(f, 3)))
_VALUES = st.recursive(_SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_TEXT, inner, max_size=4),
                       max_leaves=12)


def _reference_form(value) -> bytes:
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


@settings(max_examples=400, deadline=None)
@given(_VALUES)
def test_canonical_form_is_what_the_specification_says_for_any_value(value):
    # docs/protocol.md defines the form by the standard library's writer; the fast one
    # must give the same bytes, or signatures made by another implementation fail.
    assert protocol.canonical_json(value) == _reference_form(value)
    assert protocol.parse_json(protocol.canonical_json(value)) == json.loads(_reference_form(value))


@pytest.mark.parametrize("text", [b'{"a":"\\ud800"}', b'{"a":NaN}', b"\xef\xbb\xbf{\"a\":1}", b'{"a":1e400}'])
def test_json_the_fast_parser_refuses_is_read_as_the_standard_library_reads_it(text):
    # So one odd record in a batch gets its own refusal, not its whole batch.
    assert repr(protocol.parse_json(text)) == repr(json.loads(text))


def test_what_has_no_canonical_form_is_a_value_error():
    for value in ({"a": 2**64}, {"a": "\ud800"}):
        with pytest.raises(ValueError):
            protocol.canonical_json(value)
