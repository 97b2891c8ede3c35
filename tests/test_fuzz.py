"""Hostile input to every parser (hypothesis): a clear refusal, never a crash or a hang."""

from __future__ import annotations

import json

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.config import load_station_config
from edge.pushed_config import parse_pushed_config
from qrgate import protocol
from qrgate.errors import ConfigError, RecordError
from qrgate.sealing import PersonOpener
from conftest import new_storage
from server.ingest.bridge import Bridge

FUZZ = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
KEY = Ed25519PrivateKey.generate()
json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(max_size=30),
    lambda children: st.lists(children, max_size=5) | st.dictionaries(st.text(max_size=10), children, max_size=6),
    max_leaves=20,
)
# Records that look almost right: the real field names with any values.
record_like = st.fixed_dictionaries(
    {}, optional={name: json_values for name in
                  ["v", "type", "st", "seq", "ts", "mono", "boot", "sync", "dir", "kind", "person", "sealed", "sig", "base"]}
)


@pytest.fixture(scope="module")
def bridge(tmp_path_factory):
    storage = new_storage(tmp_path_factory.mktemp("fuzz") / "s.sqlite3")
    venue = storage.add_venue("Fuzz")
    storage.add_station("gate-1", protocol.public_key_to_text(KEY.public_key()), venue)
    return Bridge(storage, opener=PersonOpener(X25519PrivateKey.generate()))


@FUZZ
@given(payload=st.binary(max_size=2000))
def test_bridge_survives_any_bytes(bridge, payload):
    ack = bridge.handle(protocol.records_topic("gate-1"), payload)
    assert ack is None or not ack.stored


@FUZZ
@given(records=st.lists(record_like, max_size=5), topic=st.sampled_from(
    [protocol.records_topic("gate-1"), protocol.records_topic("gate-2"), "qrgate/v1/stations/+/records", "x"]))
def test_bridge_refuses_almost_records_without_crashing(bridge, records, topic):
    before = bridge.storage.count_checkins()
    ack = bridge.handle(topic, json.dumps({"records": records}).encode())
    assert bridge.storage.count_checkins() == before  # none is validly signed
    if ack is not None:
        assert not ack.stored and all(r in protocol.REFUSAL_REASONS for r in ack.refused.values())


@FUZZ
@given(payload=st.binary(max_size=500) | st.text(max_size=500).map(str.encode))
def test_ack_and_pushed_config_parsers_refuse_cleanly(payload):
    for parse in (protocol.Ack.from_bytes,
                  lambda p: parse_pushed_config(p, "gate-1", {"k": KEY.public_key()})):
        try:
            parse(payload)
        except RecordError as exc:
            assert exc.reason in ("malformed", "misaddressed", "bad_signature")


@FUZZ
@given(sealed=st.text(max_size=300))
def test_sealed_field_opener_refuses_cleanly(sealed):
    with pytest.raises(RecordError):
        PersonOpener(X25519PrivateKey.generate()).open(sealed, "gate-1")


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(text=st.text(max_size=400) | st.builds(
    lambda section, key, value: f"[{section}]\n{key} = {value}\n",
    st.sampled_from(["station", "policy", "mqtt", "source", "feedback", "decoder", "nope"]),
    st.sampled_from(["id", "mode", "port", "kind", "repeat_window_s", "panel", "x"]),
    st.sampled_from(['"gate-1"', "-5", "99999999", "true", '"toggle"', "[1, 2]", '"=cmd|x"', "1e400"])))
def test_station_config_gives_a_config_error_or_a_config(tmp_path, text):
    path = tmp_path / "station.toml"
    path.write_text(text, encoding="utf-8")
    try:
        load_station_config(path)
    except ConfigError as exc:
        assert str(path) in str(exc)
