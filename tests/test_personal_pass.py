"""Tests for the project's own signed pass (QG1): round trip, tampering, keys, dates."""

from __future__ import annotations

import base64
import json
from datetime import date

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate.errors import UserError
from qrgate.personal_pass import (
    MAX_PASS_CHARS,
    PayloadRefused,
    canonical_json,
    issue_pass,
    key_id,
    verify_pass,
)

# The documented test vector (docs/payloads.md): key from the seed bytes 00 01 .. 1f.
VECTOR_SEED = bytes(range(32))
VECTOR_KEY_ID = "56475aa7"
VECTOR_TEXT = (
    "QG1.eyJiIjoiMTk5MCIsImV4cCI6IjIwMjUtMTItMzEiLCJpYXQiOiIyMDI1LTAxLTAxIiwiaXNzIjoiNTY0"
    "NzVhYTciLCJuIjoiVHLhuqduIFRo4buLIE1haSIsInBpZCI6IlctMDA0MiJ9.UqrIjRu1XZlv58vhAjeknmIS"
    "zvRp6Wjh63_YgR0UuzUxE0-_NKUxyEWEo8ZjDIItHvRrYkFZpvSPsO1COcxNDA"
)
VECTOR_CLAIMS = {
    "b": "1990",
    "exp": "2025-12-31",
    "iat": "2025-01-01",
    "iss": VECTOR_KEY_ID,
    "n": "Trần Thị Mai",
    "pid": "W-0042",
}


@pytest.fixture
def signing_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def trusted(signing_key):
    return {key_id(signing_key.public_key()): signing_key.public_key()}


@pytest.fixture
def issued_pass(signing_key) -> str:
    return issue_pass(signing_key, pid="HR-000731", name="Đỗ Thị Hồng Nhung",
                      issued=date(2025, 3, 1), expires=date(2025, 8, 31), birth="1998-07-04")


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(part: str) -> bytes:
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def refusal_reason(text, keys, today) -> str:
    with pytest.raises(PayloadRefused) as caught:
        verify_pass(text, keys, today)
    return caught.value.reason


def test_documented_test_vector_is_reproduced_exactly():
    key = Ed25519PrivateKey.from_private_bytes(VECTOR_SEED)
    assert key_id(key.public_key()) == VECTOR_KEY_ID
    text = issue_pass(key, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1),
                      expires=date(2025, 12, 31), birth="1990")
    assert text == VECTOR_TEXT
    keys = {VECTOR_KEY_ID: key.public_key()}
    assert verify_pass(VECTOR_TEXT, keys, date(2025, 6, 1)) == VECTOR_CLAIMS


def test_claims_part_is_canonical_json():
    claims_part = VECTOR_TEXT.split(".")[1]
    assert unb64(claims_part) == canonical_json(VECTOR_CLAIMS)
    assert b" " not in canonical_json({"n": "A B"}).replace(b"A B", b"")
    assert "Trần".encode() in canonical_json(VECTOR_CLAIMS)  # UTF-8, not \u escapes


def test_issued_pass_verifies_and_returns_its_claims(issued_pass, trusted, signing_key):
    claims = verify_pass(issued_pass, trusted, date(2025, 5, 15))
    assert claims == {
        "iss": key_id(signing_key.public_key()),
        "pid": "HR-000731",
        "n": "Đỗ Thị Hồng Nhung",
        "b": "1998-07-04",
        "iat": "2025-03-01",
        "exp": "2025-08-31",
    }


def test_pass_is_valid_on_its_first_and_last_day(issued_pass, trusted):
    assert verify_pass(issued_pass, trusted, date(2025, 3, 1))["pid"] == "HR-000731"
    assert verify_pass(issued_pass, trusted, date(2025, 8, 31))["pid"] == "HR-000731"


def test_pass_after_expiry_is_refused_as_expired(issued_pass, trusted):
    assert refusal_reason(issued_pass, trusted, date(2025, 9, 1)) == "expired"


def test_pass_before_issue_is_refused_as_not_yet_valid(issued_pass, trusted):
    assert refusal_reason(issued_pass, trusted, date(2025, 2, 28)) == "not_yet_valid"


def test_tampered_claims_are_refused_as_bad_signature(issued_pass, trusted):
    _, claims_part, signature_part = issued_pass.split(".")
    claims = json.loads(unb64(claims_part))
    claims["exp"] = "2099-12-31"
    forged = f"QG1.{b64(canonical_json(claims))}.{signature_part}"
    assert refusal_reason(forged, trusted, date(2025, 5, 15)) == "bad_signature"


def test_tampered_signature_is_refused_as_bad_signature(issued_pass, trusted):
    head, signature_part = issued_pass.rsplit(".", 1)
    signature = bytearray(unb64(signature_part))
    signature[0] ^= 0x01
    assert refusal_reason(f"{head}.{b64(bytes(signature))}", trusted, None) == "bad_signature"
    assert refusal_reason(f"{head}.!!", trusted, None) == "bad_signature"
    assert refusal_reason(f"{head}.", trusted, None) == "bad_signature"


def test_pass_signed_by_a_key_we_do_not_know_is_unknown_issuer(issued_pass):
    stranger = Ed25519PrivateKey.generate().public_key()
    assert refusal_reason(issued_pass, {key_id(stranger): stranger}, None) == "unknown_issuer"


def test_issuer_id_pointing_at_another_trusted_key_fails_the_signature(signing_key):
    # A forger who writes our iss into claims signed with their own key gets nowhere.
    forger = Ed25519PrivateKey.generate()
    our_id = key_id(signing_key.public_key())
    claims = {"iss": our_id, "pid": "X", "n": "Giả Mạo", "iat": "2025-01-01",
              "exp": "2025-12-31"}
    signed = "QG1." + b64(canonical_json(claims))
    text = signed + "." + b64(forger.sign(signed.encode()))
    keys = {our_id: signing_key.public_key()}
    assert refusal_reason(text, keys, date(2025, 6, 1)) == "bad_signature"


@pytest.mark.parametrize(
    "claims",
    [
        {"pid": "", "n": "A B", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"pid": "x" * 65, "n": "A B", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"pid": "P1", "n": " ", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"pid": "P1", "n": "A B", "iat": "2025-02-30", "exp": "2025-12-31"},
        {"pid": "P1", "n": "A B", "iat": "2025-01-01", "exp": "31/12/2025"},
        {"pid": "P1", "n": "A B", "iat": "2025-06-01", "exp": "2025-01-01"},
        {"pid": "P1", "n": "A B", "b": "04/07/1998", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"pid": 7, "n": "A B", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"pid": "P\x1b1", "n": "A B", "iat": "2025-01-01", "exp": "2025-12-31"},
        {"n": "A B", "iat": "2025-01-01", "exp": "2025-12-31"},
    ],
    ids=["empty-pid", "long-pid", "blank-name", "bad-date", "dmy-date", "exp-before-iat",
         "bad-birth", "pid-not-text", "pid-control", "no-pid"],
)
def test_signed_but_malformed_claims_are_bad_field(signing_key, trusted, claims):
    claims = {"iss": key_id(signing_key.public_key()), **claims}
    signed = "QG1." + b64(canonical_json(claims))
    text = signed + "." + b64(signing_key.sign(signed.encode()))
    assert refusal_reason(text, trusted, date(2025, 6, 1)) == "bad_field"


@pytest.mark.parametrize(
    "text",
    ["QG1.", "QG1.abc", "QG1.a.b.c", "QG1.====.AAAA", "QG1." + b64(b"[1,2]") + ".AA",
     "QG1." + b64(b'{"iss":"nothex!!"}') + ".AA", "QG1." + b64(b"\xff\xfe{}") + ".AA",
     "QG1." + b64(b"[" * 300 + b"]" * 300) + ".AA"],
    ids=["no-parts", "one-part", "three-parts", "padding", "json-array", "bad-iss",
         "not-utf8", "deep-nesting"],
)
def test_structurally_broken_passes_are_bad_field(text, trusted):
    assert refusal_reason(text, trusted, date(2025, 6, 1)) == "bad_field"


def test_non_pass_text_is_unknown_format_and_huge_pass_is_too_long(trusted):
    assert refusal_reason("024083123451|x", trusted, None) == "unknown_format"
    assert refusal_reason("QG1." + "A" * MAX_PASS_CHARS, trusted, None) == "too_long"


def test_pass_name_is_normalised_when_issued(signing_key, trusted):
    text = issue_pass(signing_key, pid=" P-9 ", name="  Tra\u0302\u0300n   Mai ",
                      issued=date(2025, 1, 1), expires=date(2025, 1, 1))
    claims = verify_pass(text, trusted, date(2025, 1, 1))
    assert (claims["pid"], claims["n"]) == ("P-9", "Trần Mai")


@pytest.mark.parametrize(
    "kwargs",
    [
        {"pid": ""},
        {"pid": "x" * 65},
        {"pid": "a\nb"},
        {"name": "   "},
        {"birth": "04/07/1998"},
        {"expires": date(2024, 12, 31)},
        {"name": "N" * 800},
    ],
    ids=["empty-pid", "long-pid", "newline-pid", "blank-name", "bad-birth", "exp-before-iat",
         "too-long"],
)
def test_issue_pass_refuses_bad_arguments_with_a_user_error(signing_key, kwargs):
    arguments = {"pid": "P1", "name": "Lê Văn Tám", "issued": date(2025, 1, 1),
                 "expires": date(2025, 12, 31), **kwargs}
    with pytest.raises(UserError):
        issue_pass(signing_key, **arguments)


def test_longest_allowed_pass_still_fits_the_station_limit(signing_key, trusted):
    text = issue_pass(signing_key, pid="P" * 64, name="Ữ" * 150, issued=date(2025, 1, 1),
                      expires=date(2025, 12, 31), birth="1990-01-01")
    assert len(text) <= MAX_PASS_CHARS
    assert verify_pass(text, trusted, None)["n"] == "Ữ" * 150
