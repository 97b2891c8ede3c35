"""Tests for payload recognition: every format's variants and every refusal code.

All people here are made up; numbers have the right shape but belong to no one.
"""

from __future__ import annotations

import logging
import unicodedata
from datetime import date
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edge.payloads import (
    MAX_PAYLOAD_CHARS,
    REFUSAL_CODES,
    PayloadRefused,
    Person,
    parse_payload,
)
from qrgate.errors import RecordError
from qrgate.personal_pass import issue_pass, key_id
from conftest import require_qr_photos

TODAY = date(2025, 6, 1)

CCCD = (
    "024083123451|3099789364|Nguyễn Gia Mạnh|21031983|Nam|"
    "165/7 Nguyễn Thị Minh Khai, Quận 3, TP Hồ Chí Minh|06042021"
)


def hexed(text: str) -> str:
    return text.encode("utf-8").hex()


def cccd(name: str = "Nguyễn Gia Mạnh", *, sex: str = "Nam", birth: str = "21031983",
         old_id: str = "3099789364", trailing: int = 0) -> str:
    fields = ["024083123451", old_id, name, birth, sex, "12 Lê Lợi, Huế", "06042021"]
    return "|".join(fields + [""] * trailing)


def bhyt_old(name: str = "Lê Việt Hưng", *, birth: str = "15/08/1990", sex: str = "1",
             name_field: str | None = None) -> str:
    fields = [
        "DN4797915123456",
        hexed(name) if name_field is None else name_field,
        birth,
        sex,
        hexed("Số 8 Hai Bà Trưng, Quận 1, TP Hồ Chí Minh"),
        "79 - 79024",
        "01/01/2025",
        "31/12/2025",
        "01/01/2025",
        "79024-0001",
        "-",
        "4",
        " 01/01/2029",
        "a1b2c3d4e5f60789-AB12",
        "$",
    ]
    return "|".join(fields)


def bhyt_new(name: str = "Phạm Thu Trang") -> str:
    fields = [
        "7915123456",
        hexed(name),
        "1992",
        "2",
        "-",
        "79 - 79024",
        "01/01/2025",
        "-",
        "01/01/2025",
        "79024-0002",
        "-",
        "-",
        "-",
        "0f1e2d3c4b5a6978-CD34",
        "4",
        hexed("Bảo hiểm xã hội TP Hồ Chí Minh"),
        "$",
    ]
    return "|".join(fields)


NATIONAL_MASKED = "******123451|NGUYEN GIA MANH|1983-**-**|0|a1b2c3d4e5|M<0912345678"


@pytest.fixture
def pass_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


@pytest.fixture
def pass_keys(pass_key):
    return {key_id(pass_key.public_key()): pass_key.public_key()}


def refusal(payload, **kwargs) -> PayloadRefused:
    with pytest.raises(PayloadRefused) as caught:
        parse_payload(payload, **kwargs)
    return caught.value


# ------------------------------------------------------------------------------ CCCD


def test_cccd_gives_id_name_birth_and_sex():
    person = parse_payload(CCCD, today=TODAY)
    assert person == Person(
        kind="cccd",
        id_number="024083123451",
        name="Nguyễn Gia Mạnh",
        birth="1983-03-21",
        sex="M",
        extra=(
            ("old_id", "3099789364"),
            ("address", "165/7 Nguyễn Thị Minh Khai, Quận 3, TP Hồ Chí Minh"),
            ("issued", "2021-04-06"),
        ),
    )
    assert person.person_key == "cccd:024083123451"


@pytest.mark.parametrize(
    "payload",
    [
        "\ufeff" + CCCD,
        CCCD + "\r\n",
        CCCD + "\n",
        CCCD + "\x00",
        CCCD + "\r\n\x00\x00",
        ("\ufeff" + CCCD + "\r\n").encode("utf-8"),
        CCCD.encode("utf-8"),
    ],
    ids=["bom", "crlf", "lf", "nul", "crlf-nul", "bytes-bom-crlf", "bytes"],
)
def test_cccd_reader_noise_is_stripped(payload):
    person = parse_payload(payload)
    assert person.id_number == "024083123451"
    assert dict(person.extra)["issued"] == "2021-04-06"


def test_cccd_with_empty_old_id_parses_without_old_id():
    person = parse_payload(cccd(old_id=""))
    assert person.id_number == "024083123451"
    assert "old_id" not in dict(person.extra)


@pytest.mark.parametrize("trailing", [1, 4])
def test_cccd_with_trailing_empty_fields_of_newer_cards_parses(trailing):
    payload = cccd(trailing=trailing)
    assert payload.count("|") + 1 == 7 + trailing
    assert parse_payload(payload).name == "Nguyễn Gia Mạnh"


def test_cccd_without_issue_date_parses():
    payload = "|".join(cccd().split("|")[:6])
    person = parse_payload(payload)
    assert "issued" not in dict(person.extra)


@pytest.mark.parametrize(
    ("sex", "expected"),
    [("Nam", "M"), ("nam", "M"), ("NAM", "M"), ("Nữ", "F"), ("nữ", "F"), ("NỮ", "F"),
     ("Nu", "F"), ("nu", "F"), (unicodedata.normalize("NFD", "Nữ"), "F")],
)
def test_cccd_sex_accepts_case_and_unaccented_variants(sex, expected):
    assert parse_payload(cccd(sex=sex)).sex == expected


def test_name_is_nfc_normalised_and_whitespace_collapsed():
    decomposed = unicodedata.normalize("NFD", "  Trần\u00a0 Thị   Mai ")
    person = parse_payload(cccd(name=decomposed))
    assert person.name == "Trần Thị Mai"
    assert unicodedata.is_normalized("NFC", person.name)


def test_invisible_format_characters_are_removed_from_names():
    # Zero-width space and a right-to-left override could make a name look different
    # on screen than in the records.
    person = parse_payload(cccd(name="Trần\u200b Thị \u202eMai"))
    assert person.name == "Trần Thị Mai"


# ------------------------------------------------------------------------------ BHYT


def test_bhyt_old_layout_decodes_hex_name_and_address():
    person = parse_payload(bhyt_old(), today=TODAY)
    assert person.kind == "bhyt"
    assert person.id_number == "DN4797915123456"
    assert person.name == "Lê Việt Hưng"
    assert person.birth == "1990-08-15"
    assert person.sex == "M"
    extra = dict(person.extra)
    assert extra["address"] == "Số 8 Hai Bà Trưng, Quận 1, TP Hồ Chí Minh"
    assert extra["clinic"] == "79 - 79024"
    assert extra["valid_to"] == "2025-12-31"
    assert person.person_key == "bhxh:7915123456"


def test_bhyt_hex_of_the_spec_example_decodes():
    assert hexed("Lê Việt Hưng") == "4cc3aa205669e1bb87742048c6b06e67"
    person = parse_payload(bhyt_old(name_field="4CC3AA205669E1BB87742048C6B06E67"))
    assert person.name == "Lê Việt Hưng"


def test_bhyt_new_layout_with_year_only_birth_and_no_address():
    person = parse_payload(bhyt_new())
    assert person.id_number == "7915123456"
    assert person.name == "Phạm Thu Trang"
    assert person.birth == "1992"
    assert person.sex == "F"
    extra = dict(person.extra)
    assert "address" not in extra
    assert "valid_to" not in extra
    assert extra["office"] == "Bảo hiểm xã hội TP Hồ Chí Minh"


def test_old_and_new_cards_of_one_person_share_a_person_key():
    assert parse_payload(bhyt_old()).person_key == parse_payload(bhyt_new()).person_key


def test_bhyt_truncated_sample_ending_in_dollar_parses():
    payload = "|".join(bhyt_old().split("|")[:9] + ["$"])
    assert payload.count("|") + 1 == 10
    person = parse_payload(payload)
    assert person.name == "Lê Việt Hưng"
    assert dict(person.extra)["issued"] == "2025-01-01"


def test_bhyt_dollar_glued_to_last_field_parses():
    payload = bhyt_old().removesuffix("|$") + "$"
    assert parse_payload(payload).name == "Lê Việt Hưng"


def test_bhyt_expired_cover_is_still_recognised():
    # The gate records presence; an expired insurance card still says who it is.
    person = parse_payload(bhyt_old(), today=date(2030, 1, 1))
    assert dict(person.extra)["valid_to"] == "2025-12-31"


# ------------------------------------------------------------------- national QR


def test_national_qr_with_masked_id_and_birth():
    person = parse_payload(NATIONAL_MASKED, today=TODAY)
    assert person.kind == "national"
    assert person.id_number == "******123451"
    assert person.name == "NGUYEN GIA MANH"
    assert person.birth == "1983-**-**"
    assert person.sex == ""
    assert dict(person.extra) == {
        "declared_by_other": "0",
        "qid": "a1b2c3d4e5",
        "ext": "M<0912345678",
    }
    assert person.person_key == "national:******123451|NGUYEN GIA MANH|1983-**-**"


def test_national_qr_with_full_id_matches_the_same_persons_cccd():
    national = parse_payload("024083123451|NGUYEN GIA MANH|1983-03-21|1|a1b2c3d4e5|")
    assert national.kind == "national"
    assert national.birth == "1983-03-21"
    assert national.person_key == parse_payload(CCCD).person_key


def test_national_qr_without_qid_and_ext_parses():
    person = parse_payload("******123451|TRAN THI MAI|1990-**-15|1")
    assert person.birth == "1990-**-15"
    assert dict(person.extra) == {"declared_by_other": "1"}


# ----------------------------------------------------------------- hostile names


@pytest.mark.parametrize(
    "name",
    ["=cmd' /C calc'!A0", "@SUM(1+1)*cmd", "+1-1", "<script>alert(1)</script>",
     "Robert'); DROP TABLE scans;--", "Nguyễn 🙂 Văn"],
)
def test_hostile_names_are_kept_as_given_for_output_to_escape(name):
    assert parse_payload(cccd(name=name)).name == name


def test_formula_with_a_pipe_cannot_pass_as_a_cccd_name():
    # The pipe splits the name, pushing the layout out of shape: refused, not parsed.
    error = refusal(cccd(name="=cmd|' /C calc'!A0"))
    assert error.reason == "bad_field"


def test_600_character_name_parses_while_the_payload_fits():
    name = "Nguyễn " + "A" * 593
    assert len(name) == 600
    person = parse_payload(cccd(name=name))
    assert person.name == name


def test_name_that_pushes_the_payload_over_the_limit_is_too_long():
    name = "A" * MAX_PAYLOAD_CHARS
    assert refusal(cccd(name=name)).reason == "too_long"


# --------------------------------------------------------------- refusal codes


@pytest.mark.parametrize("payload", ["", "\r\n", "\x00\x00", "   ", b"", b"\xef\xbb\xbf"])
def test_empty_payloads_are_refused_as_empty(payload):
    assert refusal(payload).reason == "empty"


@pytest.mark.parametrize(
    "payload",
    [
        "A" * 1025,
        "ữ" * 700,  # 700 characters but 2,100 UTF-8 bytes
        b"A" * 4096,
        "024083123451|" + "x" * 4096,
        b"\xff" * 4096,  # too long wins over bad encoding: nothing is parsed
    ],
    ids=["1025-chars", "2100-bytes", "4k-bytes", "4k-cccd", "4k-garbage"],
)
def test_oversized_payloads_are_refused_before_parsing(payload):
    assert refusal(payload).reason == "too_long"


def test_payload_exactly_at_the_character_limit_is_not_too_long():
    payload = "https://example.org/?" + "a" * (MAX_PAYLOAD_CHARS - 21)
    assert len(payload) == MAX_PAYLOAD_CHARS
    assert refusal(payload).reason == "unknown_format"


@pytest.mark.parametrize(
    "payload",
    [
        b"\xff\xfe0\x002\x004\x00",  # UTF-16
        CCCD.encode("utf-8")[:-30] + b"\xc3",  # cut inside a character
        "Nguy\ufffdn Gia Mạnh".join(CCCD.split("Nguyễn Gia Mạnh", 1)),
        CCCD.encode("cp1258", errors="replace"),
        "024083123451|\ud800|x",  # lone surrogate from a broken decoder
        bhyt_old(name_field="c328a0a1"),  # hex that is not UTF-8
        bhyt_old(name_field="Lê Việt Hưng"),  # plain text where hex belongs
        bhyt_old(name_field="4cc"),  # odd number of hex digits
        bhyt_old(name_field="zz"),
    ],
    ids=["utf16", "cut", "replacement-char", "cp1258", "surrogate", "hex-not-utf8",
         "plain-text-name", "odd-hex", "not-hex"],
)
def test_badly_encoded_payloads_are_refused_as_bad_encoding(payload):
    assert refusal(payload).reason == "bad_encoding"


@pytest.mark.parametrize(
    "payload",
    [
        cccd(name="Nguyễn\x1b[31m Gia Mạnh"),
        cccd(name="Nguyễn\tGia"),
        CCCD.replace("|Nam|", "|Nam\x00|"),
        "\r\n" + CCCD,
        bhyt_old(name="Lê\x07Việt"),  # control character hidden in hex
    ],
    ids=["escape", "tab", "inner-nul", "leading-crlf", "hex-bell"],
)
def test_control_characters_are_refused(payload):
    assert refusal(payload).reason == "control_chars"


@pytest.mark.parametrize(
    "payload",
    [
        "https://tokhaiyte.vn/?page=Checkin&venue=123",
        "WIFI:T:WPA;S:factory-gate;P:secret;;",
        "BEGIN:VCARD\nVERSION:3.0\nFN:Test\nEND:VCARD",
        "024083123451",
        "02408312345|x|Nguyễn|21031983|Nam|addr|06042021",
        "DN4797915123456|4cc3|15/08/1990|1",  # BHYT code but no closing '$'
        "QG2.eyJ9.AAAA",
        "hello|world",
        "日本語のテキスト",
    ],
    ids=["url", "wifi", "vcard", "bare-id", "11-digit-id", "bhyt-no-dollar", "qg2",
         "pipes", "japanese"],
)
def test_other_codes_are_refused_as_unknown_format(payload):
    assert refusal(payload).reason == "unknown_format"


def test_digits_from_other_scripts_do_not_pass_for_ascii_digits():
    fullwidth_id = "".join(chr(0xFF10 + int(d)) for d in "024083123451")
    assert refusal(CCCD.replace("024083123451", fullwidth_id)).reason == "unknown_format"
    arabic_indic_birth = "".join(chr(0x0660 + int(d)) for d in "21031983")
    assert refusal(cccd(birth=arabic_indic_birth)).reason == "bad_field"


@pytest.mark.parametrize(
    "payload",
    [
        cccd(birth="31022000"),  # no 31 February
        cccd(birth="1983-03-21"),
        cccd(birth="21031883"),
        cccd(sex="Male"),
        cccd(sex=""),
        cccd(old_id="CMND12345"),
        cccd(name="   "),
        "|".join(cccd().split("|")[:5]),  # 5 fields
        cccd(trailing=5),  # 12 fields
        CCCD[:-8] + "32132021",
        bhyt_old(sex="3"),
        bhyt_old(birth="15-08-1990"),
        bhyt_old(name=" "),
        "******123451|NGUYEN VAN A|1985-13-**|0|q|",
        "******123451|NGUYEN VAN A|1985-02-30|0|q|",
        "******123451|NGUYEN VAN A|1985-**-**|2|q|",
        "******|NGUYEN VAN A|1985-**-**|0|q|",
        "******123451||1985-**-**|0|q|",
        "******123451|A|1985-**-**|0|q|x|y",
    ],
)
def test_recognised_layouts_with_broken_fields_are_refused_as_bad_field(payload):
    assert refusal(payload).reason == "bad_field"


def test_birth_in_the_future_is_a_bad_field_only_when_today_is_known():
    payload = cccd(birth="01012030")
    assert refusal(payload, today=TODAY).reason == "bad_field"
    assert parse_payload(payload).birth == "2030-01-01"


def test_valid_pass_is_recognised(pass_key, pass_keys):
    text = issue_pass(pass_key, pid="W-0042", name="Trần Thị Mai", issued=date(2025, 1, 1),
                      expires=date(2025, 12, 31), birth="1990")
    person = parse_payload(text, pass_keys=pass_keys, today=TODAY)
    assert (person.kind, person.id_number, person.name, person.birth) == (
        "pass", "W-0042", "Trần Thị Mai", "1990")
    assert person.person_key == "pass:W-0042"
    assert dict(person.extra)["valid_to"] == "2025-12-31"


def test_pass_refusals_come_through_parse_payload(pass_key, pass_keys):
    text = issue_pass(pass_key, pid="W-1", name="Lê Văn Tám", issued=date(2025, 1, 1),
                      expires=date(2025, 3, 31))
    claims, signature = text.split(".")[1:]
    forged = f"QG1.{claims}.{'A' * len(signature)}"
    assert refusal(forged, pass_keys=pass_keys, today=TODAY).reason == "bad_signature"
    assert refusal(text, pass_keys=pass_keys, today=TODAY).reason == "expired"
    assert refusal(text, pass_keys=pass_keys, today=date(2024, 12, 31)).reason == "not_yet_valid"
    assert refusal(text, today=date(2025, 2, 1)).reason == "unknown_issuer"
    assert refusal("QG1.not-json.sig", pass_keys=pass_keys).reason == "bad_field"


def test_pass_date_is_not_checked_while_the_clock_is_unsynced(pass_key, pass_keys):
    text = issue_pass(pass_key, pid="W-1", name="Lê Văn Tám", issued=date(2025, 1, 1),
                      expires=date(2025, 3, 31))
    assert parse_payload(text, pass_keys=pass_keys, today=None).id_number == "W-1"


def test_every_refusal_code_is_documented_in_docs():
    docs = Path(__file__).resolve().parents[1] / "docs" / "payloads.md"
    text = docs.read_text(encoding="utf-8")
    for code in REFUSAL_CODES:
        assert f"`{code}`" in text, code


# ------------------------------------------------------- refusals, logs, privacy


def test_refusal_is_a_record_error_with_a_code_and_no_personal_data(caplog):
    caplog.set_level(logging.DEBUG, logger="edge.payloads")
    error = refusal(cccd(name="Hoàng Thị Bí Mật", sex="X"))
    assert isinstance(error, RecordError)
    assert error.reason == "bad_field"
    assert "sex" in str(error)
    assert "Bí Mật" not in str(error)
    assert "024083123451" not in str(error)
    assert "bad_field" in caplog.text
    assert "Bí Mật" not in caplog.text


def test_non_text_input_is_a_programming_error():
    with pytest.raises(TypeError):
        parse_payload(12345)  # type: ignore[arg-type]


# ------------------------------------------------------------------ property tests

# Any code point, lone surrogates included. Naming the alphabet also avoids text()'s
# default UTF-8 codec table, which takes seconds to build in a fresh checkout.
_any_char = st.characters(exclude_categories=[])
# Fields that steer generated payloads into each layout's parser, mixed with noise.
_field = st.one_of(
    st.text(_any_char, max_size=20),
    st.sampled_from([
        "", "-", "$", " ", "Nam", "Nữ", "nu", "0", "1", "2", "\ufeff", "\r\n", "\x00",
        "024083123451", "7915123456", "DN4797915123456", "******123451", "3099789364",
        "21031983", "31022000", "15/08/1990", "1992", "1983-03-21", "1985-**-**",
        "1985-13-**", "4cc3aa205669e1bb87742048c6b06e67", "c328", "4cc", "Lê Văn Tám",
        "QG1.eyJpc3MiOiIwMDAwMDAwMCJ9.AA",
    ]),
)
_VALID = [CCCD, cccd(trailing=4), bhyt_old(), bhyt_new(), NATIONAL_MASKED]


def _replace_field(payload: str, index: int, value: str) -> str:
    fields = payload.split("|")
    fields[index % len(fields)] = value
    return "|".join(fields)


# A valid payload with one field swapped reaches every field rule of every layout.
_mutated = st.builds(_replace_field, st.sampled_from(_VALID), st.integers(0, 16), _field)

_payloads = st.one_of(
    _mutated,
    _mutated.map(lambda text: text.encode("utf-8", "surrogatepass")),
    st.text(_any_char, max_size=300),
    st.binary(max_size=300),
    st.lists(_field, min_size=1, max_size=18).map("|".join),
    st.lists(_field, min_size=1, max_size=18).map(lambda f: "|".join(f).encode("utf-8", "surrogatepass")),
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(payload=_payloads)
def test_any_input_gives_a_person_or_a_documented_refusal(payload):
    try:
        person = parse_payload(payload, today=TODAY)
    except PayloadRefused as error:
        assert error.reason in REFUSAL_CODES
        return
    assert person.kind in {"cccd", "bhyt", "national", "pass"}
    assert person.name and person.name == " ".join(person.name.split())
    assert not any(unicodedata.category(c) in ("Cc", "Cf") for c in person.name)
    assert person.sex in {"M", "F", ""}
    assert person.person_key.startswith(("cccd:", "bhxh:", "national:", "pass:"))


# -------------------------------------------------------------- third-party codes


def _third_party_texts() -> list[Path]:
    folder = require_qr_photos()
    return [
        path
        for path in sorted(folder.rglob("*.txt"))
        if path.name != "README.txt" and not path.name.endswith((".metadata.txt", ".result.txt"))
    ]


def test_real_world_qr_texts_from_decoder_test_sets_are_refused_not_crashed():
    paths = _third_party_texts()
    assert paths, "the sample sets hold no expected texts"
    reasons = set()
    for path in paths:
        with pytest.raises(PayloadRefused) as caught:
            parse_payload(path.read_bytes())
        reasons.add(caught.value.reason)
    # None of these public sample codes is an ID payload: URLs, text, Shift_JIS...
    assert "unknown_format" in reasons
    assert reasons <= set(REFUSAL_CODES)
