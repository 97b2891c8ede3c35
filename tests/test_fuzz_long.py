"""The long fuzz run (`python -m bench.fuzz_long --inputs 100000`, figures in
docs/reliability.md) in a few seconds: the same mutations and oracles, fewer inputs, so a
change that breaks an oracle or the harness is seen in every test run."""

from __future__ import annotations

import pytest

from bench import fuzz_long

pytestmark = pytest.mark.timeout(180)


@pytest.mark.parametrize("target, inputs", [("payloads", 2000), ("bridge", 600), ("api", 300)])
def test_a_short_fuzz_run_finds_no_crash_no_server_error_and_no_wrong_accept(tmp_path, target, inputs):
    [result] = fuzz_long.run(inputs, seed=19, targets=[target], workdir=tmp_path)
    assert result.inputs == inputs
    assert len(result.kinds) >= 3  # the mutations reach more than one kind of input
    assert (result.crashes, result.errors_5xx or 0, result.wrong_accepts) == (0, 0, 0), result.examples


def test_the_bridge_oracle_catches_an_ack_under_an_unsigned_number(tmp_path, monkeypatch):
    # The oracle must see the fault this suite was written for: a bridge that acks a
    # refusal before checking the signature.
    from server.ingest.bridge import Bridge

    real = Bridge._check_chunk

    def acks_everything(self, raw_records, station_id, keys, from_station=False):
        return [fuzz_long_refusal(r) if type(r) is dict and type(r.get("seq")) is int else c
                for r, c in zip(raw_records, real(self, raw_records, station_id, keys, from_station))]

    def fuzz_long_refusal(record):
        from server.ingest.bridge import Refusal

        return Refusal("malformed", "acked without a signature", record["seq"])

    monkeypatch.setattr(Bridge, "_check_chunk", acks_everything)
    [result] = fuzz_long.run(300, seed=19, targets=["bridge"], workdir=tmp_path)
    assert result.wrong_accepts > 0


def test_inputs_are_shared_between_the_targets_and_add_up():
    counts = fuzz_long.split_inputs(100_000, ["payloads", "bridge", "api"])
    assert counts == {"payloads": 40_000, "bridge": 40_000, "api": 20_000}
    assert sum(fuzz_long.split_inputs(1001, ["bridge", "api"]).values()) == 1001
