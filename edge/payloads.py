"""Payload recognition: turn a decoded QR text into a Person, or refuse it with a code.

Pure: no I/O and no clock (the caller passes ``today``). Formats and the rules that tell
them apart are in docs/payloads.md; every refusal is a ``PayloadRefused`` whose
``reason`` is one of ``REFUSAL_CODES``. The ``detail`` text names the field and the
rule, never the personal value, so it is safe to log.
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import date
from types import MappingProxyType

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from qrgate import persons
from qrgate.personal_pass import PASS_PREFIX, PayloadRefused, verify_pass

__all__ = [
    "MAX_PAYLOAD_BYTES",
    "MAX_PAYLOAD_CHARS",
    "REFUSAL_CODES",
    "Person",
    "PayloadRefused",
    "parse_payload",
]

logger = logging.getLogger(__name__)

# A QR code holds at most ~2,950 bytes; real ID payloads are under 400 characters. The
# limit is on the whole text, so a long name still parses while the total fits.
MAX_PAYLOAD_CHARS = 1024
MAX_PAYLOAD_BYTES = 2048

REFUSAL_CODES: dict[str, str] = {
    "empty": "The code holds no text.",
    "too_long": (
        f"The text is over {MAX_PAYLOAD_CHARS} characters or {MAX_PAYLOAD_BYTES} UTF-8 bytes."
    ),
    "bad_encoding": (
        "Bytes that are not UTF-8, a U+FFFD replacement character, or a hex field that is"
        " not hex of UTF-8."
    ),
    "control_chars": "Control characters other than trailing CR, LF or NUL.",
    "unknown_format": "Not a CCCD, BHYT, national personal QR or QG1 pass.",
    "bad_field": (
        "A recognised layout with a field that breaks its rule (date, digits, sex, count)."
    ),
    "bad_signature": "A QG1 pass whose signature does not match its issuer's key.",
    "expired": "A QG1 pass used after its expiry date.",
    "not_yet_valid": "A QG1 pass used before its issue date.",
    "unknown_issuer": "A QG1 pass signed by a key this station does not know.",
}

_NO_KEYS: Mapping[str, Ed25519PublicKey] = MappingProxyType({})

_CCCD_ID = re.compile(r"\d{12}", re.ASCII)
_CMND_ID = re.compile(r"\d{9,12}", re.ASCII)
_DMY_COMPACT = re.compile(r"(\d{2})(\d{2})(\d{4})", re.ASCII)
_DMY_SLASHED = re.compile(r"(\d{2})/(\d{2})/(\d{4})", re.ASCII)
_YEAR = re.compile(r"\d{4}", re.ASCII)
_BHYT_CODE = re.compile(r"[A-Z]{2}\d{13}|\d{10}", re.ASCII)
_HEX = re.compile(r"(?:[0-9A-Fa-f]{2})+", re.ASCII)
_NATIONAL_DATE_SHAPE = re.compile(r"[\d*]{4}-[\d*]{2}-[\d*]{2}", re.ASCII)
_NATIONAL_DATE = re.compile(r"(\d{4})-(\d{2}|\*\*)-(\d{2}|\*\*)", re.ASCII)
_NATIONAL_ID = re.compile(r"[0-9A-Z*]{6,20}", re.ASCII)
_SEX_CCCD = {"nam": "M", "nữ": "F", "nu": "F"}
_SEX_BHYT = {"1": "M", "2": "F"}
_EARLIEST_YEAR = 1900


@dataclass(frozen=True, slots=True)
class Person:
    """One recognised person, whatever code they showed.

    ``birth`` is ``YYYY-MM-DD``, ``YYYY``, or has ``**`` where the source masked it.
    ``extra`` keeps the other fields worth keeping as (key, value) pairs; which keys
    each kind sets is listed in docs/payloads.md.
    """

    kind: str  # "cccd" | "bhyt" | "national" | "pass"
    id_number: str
    name: str
    birth: str
    sex: str  # "M", "F" or ""
    extra: tuple[tuple[str, str], ...] = ()

    @property
    def person_key(self) -> str:
        """Stable text naming the person, for repeat-scan suppression and tracing."""
        return persons.person_key(self.kind, self.id_number, self.name, self.birth)


def _clean_name(value: str) -> str:
    """NFC, control and format characters removed, whitespace collapsed."""
    kept = "".join(c for c in value if unicodedata.category(c) not in ("Cc", "Cf"))
    return unicodedata.normalize("NFC", " ".join(kept.split()))


def _require_name(value: str, where: str) -> str:
    name = _clean_name(value)
    if not name:
        raise PayloadRefused("bad_field", f"{where}: name is empty")
    return name


def _real_date(year: int, month: int, day: int, where: str) -> date:
    try:
        return date(year, month, day)
    except ValueError:
        raise PayloadRefused("bad_field", f"{where}: not a real date") from None


def _check_birth_year(year: int, today: date | None, where: str) -> None:
    latest = today.year if today else 9999
    if not _EARLIEST_YEAR <= year <= latest:
        raise PayloadRefused("bad_field", f"{where}: birth year out of range")


def _check_birth_date(born: date, today: date | None, where: str) -> None:
    _check_birth_year(born.year, today, where)
    if today and born > today:
        raise PayloadRefused("bad_field", f"{where}: birth date is in the future")


def _dmy(value: str, pattern: re.Pattern[str], where: str) -> date:
    match = pattern.fullmatch(value.strip())
    if not match:
        raise PayloadRefused("bad_field", f"{where}: date is not in the expected form")
    day, month, year = (int(part) for part in match.groups())
    if year < _EARLIEST_YEAR:
        raise PayloadRefused("bad_field", f"{where}: year out of range")
    return _real_date(year, month, day, where)


def _check_text(value: str, where: str) -> str:
    """Rules every piece of text obeys, including text decoded from hex fields."""
    if "\ufffd" in value:
        raise PayloadRefused("bad_encoding", f"{where}: holds U+FFFD (text was mis-decoded)")
    for char in value:
        category = unicodedata.category(char)
        if category == "Cs":
            raise PayloadRefused("bad_encoding", f"{where}: holds a lone surrogate")
        if category == "Cc":
            raise PayloadRefused(
                "control_chars", f"{where}: holds control character U+{ord(char):04X}"
            )
    return value


def _from_hex(value: str, where: str) -> str:
    value = value.strip()
    if not _HEX.fullmatch(value):
        # The layout says hex here: text that is not hex is a field in the wrong encoding.
        raise PayloadRefused("bad_encoding", f"{where}: not an even run of hex digits")
    try:
        text = bytes.fromhex(value).decode("utf-8")
    except UnicodeDecodeError:
        raise PayloadRefused("bad_encoding", f"{where}: hex is not UTF-8") from None
    return _check_text(text, where)


def _optional_hex(fields: list[str], index: int, where: str) -> str:
    """A hex field that may be absent or ``-``; returns the decoded text or ``""``."""
    if index >= len(fields) or fields[index].strip() in ("", "-"):
        return ""
    return _from_hex(fields[index], where)


def _optional_dmy(fields: list[str], index: int, where: str) -> str:
    if index >= len(fields) or fields[index].strip() in ("", "-"):
        return ""
    return _dmy(fields[index], _DMY_SLASHED, where).isoformat()


# ---------------------------------------------------------------------------- CCCD


def _parse_cccd(fields: list[str], today: date | None) -> Person:
    if not 6 <= len(fields) <= 11:
        raise PayloadRefused("bad_field", f"cccd: {len(fields)} fields, need 6 to 11")
    id_number = fields[0].strip()
    old_id = fields[1].strip()
    if old_id and not _CMND_ID.fullmatch(old_id):
        raise PayloadRefused("bad_field", "cccd field 1: old id must be empty or 9-12 digits")
    name = _require_name(fields[2], "cccd field 2")
    born = _dmy(fields[3], _DMY_COMPACT, "cccd field 3 (birth)")
    _check_birth_date(born, today, "cccd field 3 (birth)")
    sex = _SEX_CCCD.get(unicodedata.normalize("NFC", fields[4].strip()).casefold())
    if sex is None:
        raise PayloadRefused("bad_field", "cccd field 4: sex must be Nam or Nữ")
    address = " ".join(fields[5].split())
    issued = ""
    if len(fields) > 6 and fields[6].strip():
        issued_date = _dmy(fields[6], _DMY_COMPACT, "cccd field 6 (issued)")
        if today and issued_date > today:
            raise PayloadRefused("bad_field", "cccd field 6: issue date is in the future")
        issued = issued_date.isoformat()
    # Fields 7-10 appear (empty) on newer cards; their meaning is not published, so
    # they are accepted and not kept.
    extra = [("old_id", old_id), ("address", address), ("issued", issued)]
    return Person(
        kind="cccd",
        id_number=id_number,
        name=name,
        birth=born.isoformat(),
        sex=sex,
        extra=tuple((key, value) for key, value in extra if value),
    )


# ---------------------------------------------------------------------------- BHYT


def _bhyt_birth(value: str, today: date | None) -> str:
    value = value.strip()
    where = "bhyt field 2 (birth)"
    if _YEAR.fullmatch(value):
        _check_birth_year(int(value), today, where)
        return value
    born = _dmy(value, _DMY_SLASHED, where)
    _check_birth_date(born, today, where)
    return born.isoformat()


def _parse_bhyt(fields: list[str], today: date | None) -> Person:
    # The last field is "$" (or ends with it); drop the marker, keep the positions.
    if fields[-1].strip() == "$":
        fields = fields[:-1]
    else:
        fields = [*fields[:-1], fields[-1].rstrip()[:-1]]
    if len(fields) < 4:
        raise PayloadRefused("bad_field", f"bhyt: {len(fields)} fields before '$', need 4 or more")
    code = fields[0].strip()
    name = _require_name(_from_hex(fields[1], "bhyt field 1 (name)"), "bhyt field 1")
    birth = _bhyt_birth(fields[2], today)
    sex = _SEX_BHYT.get(fields[3].strip())
    if sex is None:
        raise PayloadRefused("bad_field", "bhyt field 3: sex must be 1 or 2")
    address = _optional_hex(fields, 4, "bhyt field 4 (address)")
    clinic = fields[5].strip() if len(fields) > 5 and fields[5].strip() != "-" else ""
    valid_from = _optional_dmy(fields, 6, "bhyt field 6 (valid from)")
    valid_to = _optional_dmy(fields, 7, "bhyt field 7 (valid to)")
    if valid_from and valid_to and valid_to < valid_from:
        raise PayloadRefused("bad_field", "bhyt fields 6-7: cover ends before it starts")
    issued = _optional_dmy(fields, 8, "bhyt field 8 (issued)")
    # The guardian is a third person: checked so a broken card is refused, not kept.
    _optional_hex(fields, 10, "bhyt field 10 (guardian)")
    office = ""
    if len(fields) >= 16:  # the 17-field layout of cards with a 10-digit code
        office = _optional_hex(fields, 15, "bhyt field 15 (office)")
    # Cover dates are kept, not enforced: the gate records presence, and an expired
    # insurance card still says who the person is.
    extra = [
        ("address", " ".join(address.split())),
        ("clinic", clinic),
        ("valid_from", valid_from),
        ("valid_to", valid_to),
        ("issued", issued),
        ("office", " ".join(office.split())),
    ]
    return Person(
        kind="bhyt",
        id_number=code,
        name=name,
        birth=birth,
        sex=sex,
        extra=tuple((key, value) for key, value in extra if value),
    )


# ---------------------------------------------------------------- national personal QR


def _parse_national(fields: list[str], today: date | None) -> Person:
    if not 4 <= len(fields) <= 6:
        raise PayloadRefused("bad_field", f"national: {len(fields)} fields, need 4 to 6")
    id_number = fields[0].strip()
    if not _NATIONAL_ID.fullmatch(id_number) or len(id_number.replace("*", "")) < 3:
        raise PayloadRefused(
            "bad_field", "national field 0: id must be 6-20 digits, capitals or '*'"
        )
    name = _require_name(fields[1], "national field 1")
    where = "national field 2 (birth)"
    match = _NATIONAL_DATE.fullmatch(fields[2].strip())
    if not match:
        raise PayloadRefused("bad_field", f"{where}: must be YYYY-MM-DD, day/month may be '**'")
    year_text, month_text, day_text = match.groups()
    year = int(year_text)
    _check_birth_year(year, today, where)
    if month_text != "**" and not 1 <= int(month_text) <= 12:
        raise PayloadRefused("bad_field", f"{where}: month out of range")
    if day_text != "**":
        if month_text == "**":
            if not 1 <= int(day_text) <= 31:
                raise PayloadRefused("bad_field", f"{where}: day out of range")
        else:
            born = _real_date(year, int(month_text), int(day_text), where)
            _check_birth_date(born, today, where)
    declaration = fields[3].strip()
    if declaration not in ("0", "1"):
        raise PayloadRefused("bad_field", "national field 3: type must be 0 or 1")
    qid = fields[4].strip() if len(fields) > 4 else ""
    # EXT's layout is not confirmed, so it is kept as opaque text.
    ext = fields[5].strip() if len(fields) > 5 else ""
    extra = [("declared_by_other", declaration), ("qid", qid), ("ext", ext)]
    return Person(
        kind="national",
        id_number=id_number,
        name=name,
        birth=match.group(0),
        sex="",
        extra=tuple((key, value) for key, value in extra if value),
    )


# ------------------------------------------------------------------------- QG1 pass


def _parse_pass(text: str, keys: Mapping[str, Ed25519PublicKey], today: date | None) -> Person:
    claims = verify_pass(text, keys, today)
    extra = [("issuer", claims["iss"]), ("issued", claims["iat"]), ("valid_to", claims["exp"])]
    return Person(
        kind="pass",
        id_number=claims["pid"],
        name=_require_name(claims["n"], "pass claim n"),
        birth=claims.get("b", ""),
        sex="",
        extra=tuple(extra),
    )


# ------------------------------------------------------------------------ dispatch


def _to_text(payload: str | bytes) -> str:
    if isinstance(payload, (bytes, bytearray, memoryview)):
        raw = bytes(payload)
        if len(raw) > MAX_PAYLOAD_BYTES:
            raise PayloadRefused("too_long", f"{len(raw)} bytes, limit {MAX_PAYLOAD_BYTES}")
        try:
            return raw.removeprefix(b"\xef\xbb\xbf").decode("utf-8")
        except UnicodeDecodeError as exc:
            raise PayloadRefused("bad_encoding", f"not UTF-8 at byte {exc.start}") from None
    if isinstance(payload, str):
        return payload
    raise TypeError(f"payload must be str or bytes, not {type(payload).__name__}")


def _recognise(text: str) -> Callable[[list[str], date | None], Person] | None:
    fields = text.split("|")
    if len(fields) >= 3 and _NATIONAL_DATE_SHAPE.fullmatch(fields[2].strip()):
        # Checked before CCCD: an unmasked national QR also starts with 12 digits,
        # but a CCCD's third field is a name, never a date.
        return _parse_national
    first = fields[0].strip()
    if _CCCD_ID.fullmatch(first) and len(fields) > 1:
        return _parse_cccd
    if _BHYT_CODE.fullmatch(first) and text.rstrip().endswith("$"):
        return _parse_bhyt
    return None


def parse_payload(
    text: str | bytes,
    *,
    pass_keys: Mapping[str, Ed25519PublicKey] = _NO_KEYS,
    today: date | None = None,
) -> Person:
    """Recognise a decoded QR payload; raise ``PayloadRefused`` for anything else.

    Bytes are decoded as strict UTF-8 after dropping a BOM. A leading BOM and trailing
    CR/LF/NUL are stripped. ``pass_keys`` are the QG1 issuer keys this station trusts.
    ``today`` is the station's date; ``None`` (clock not synced) skips the checks that
    need it (pass validity window, birth dates in the future).
    """
    try:
        person = _parse(text, pass_keys, today)
    except PayloadRefused as exc:
        logger.debug("payload refused: %s", exc)
        raise
    return person


def _parse(
    payload: str | bytes, keys: Mapping[str, Ed25519PublicKey], today: date | None
) -> Person:
    text = _to_text(payload)
    if len(text) > MAX_PAYLOAD_CHARS:
        raise PayloadRefused("too_long", f"{len(text)} characters, limit {MAX_PAYLOAD_CHARS}")
    if len(text.encode("utf-8", "surrogatepass")) > MAX_PAYLOAD_BYTES:
        raise PayloadRefused("too_long", f"over {MAX_PAYLOAD_BYTES} UTF-8 bytes")
    text = text.removeprefix("\ufeff").rstrip("\r\n\x00")
    if not text.strip():
        raise PayloadRefused("empty", "no text")
    if "\ufffd" in text or any(unicodedata.category(c) == "Cs" for c in text):
        raise PayloadRefused("bad_encoding", "payload: U+FFFD or lone surrogate (mis-decoded)")
    if text.startswith(PASS_PREFIX):
        _check_text(text, "payload")
        return _parse_pass(text, keys, today)
    parser = _recognise(text)
    if parser is None:
        # Checked before control characters: a vCard or a multi-line note is "not an
        # ID code" to the person holding it, whatever characters it holds.
        raise PayloadRefused("unknown_format", "not CCCD, BHYT, national QR or QG1 pass")
    _check_text(text, "payload")
    return parser(text.split("|"), today)
