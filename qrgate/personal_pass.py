"""The project's own signed personal pass (QG1), for people who have no phone.

A venue prints a pass for each person on its roster; any station that knows the issuing
key can check it offline. Layout (see docs/payloads.md for the test vector)::

    QG1.<base64url(canonical JSON claims)>.<base64url(Ed25519 signature)>

The signature covers the ASCII bytes of ``"QG1." + claims part``. Base64url is written
without padding. Claims: ``iss`` (issuer key id), ``pid`` (the person's id in the
venue's roster), ``n`` (name), ``b`` (birth, optional), ``iat`` and ``exp`` (ISO dates,
both inclusive).

This module lives in ``qrgate`` rather than ``edge`` because the server issues passes
and the stations verify them; ``PayloadRefused`` is defined here for the same reason and
re-exported by ``edge.payloads``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import re
import unicodedata
from collections.abc import Mapping
from datetime import date

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from qrgate.errors import RecordError, UserError

logger = logging.getLogger(__name__)

PASS_PREFIX = "QG1."
# The whole pass must fit the station's payload limit (see edge.payloads), so a pass we
# issue is never refused as too long by our own stations.
MAX_PASS_CHARS = 1024
MAX_PID_CHARS = 64

_B64URL = re.compile(r"[A-Za-z0-9_-]*", re.ASCII)
_BIRTH = re.compile(r"\d{4}(-(\d{2}|\*\*)-(\d{2}|\*\*))?", re.ASCII)
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
_KNOWN_CLAIMS = frozenset({"iss", "pid", "n", "b", "iat", "exp"})


class PayloadRefused(RecordError):
    """A scanned code was refused; ``reason`` is one of ``edge.payloads.REFUSAL_CODES``.

    ``detail`` says which field and rule failed, never the personal value itself, so the
    message can go to logs.
    """


def key_id(public_key: Ed25519PublicKey) -> str:
    """Issuer key id: 8 hex characters, the first 4 bytes of sha256(raw public key)."""
    raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
    return hashlib.sha256(raw).digest()[:4].hex()


def canonical_json(claims: Mapping[str, str]) -> bytes:
    """The exact bytes that are base64url-encoded into a pass (sorted keys, no spaces)."""
    return json.dumps(
        dict(claims), sort_keys=True, separators=(",", ":"), ensure_ascii=False
    ).encode()


def _has_control_chars(value: str) -> bool:
    # The pass id becomes a roster key and a log field: keep terminals and CSVs sane.
    return any(unicodedata.category(char) in ("Cc", "Cf", "Cs") for char in value)


def _b64url_encode(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(part: str) -> bytes:
    """Strict base64url without padding; raises ValueError on anything else."""
    if not _B64URL.fullmatch(part) or len(part) % 4 == 1:
        raise ValueError("not unpadded base64url")
    data = base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))
    # Unused trailing bits must be zero, so each pass has exactly one spelling.
    if _b64url_encode(data) != part:
        raise ValueError("non-canonical base64url")
    return data


def issue_pass(
    private_key: Ed25519PrivateKey,
    *,
    pid: str,
    name: str,
    issued: date,
    expires: date,
    birth: str = "",
) -> str:
    """Sign a pass for one roster entry and return its text (to be printed as a QR).

    Raises ``UserError`` for an empty or over-long id or name, a birth that is not
    ``YYYY``/``YYYY-MM-DD``, an expiry before the issue date, or a pass that would not
    fit ``MAX_PASS_CHARS``.
    """
    pid = pid.strip()
    name = unicodedata.normalize("NFC", " ".join(name.split()))
    if not 1 <= len(pid) <= MAX_PID_CHARS or _has_control_chars(pid):
        raise UserError(
            f"pass id must be 1-{MAX_PID_CHARS} printable characters, got {len(pid)}"
        )
    if not name:
        raise UserError("pass name must not be empty")
    if birth and not _BIRTH.fullmatch(birth):
        raise UserError("pass birth must be YYYY or YYYY-MM-DD")
    if expires < issued:
        raise UserError(f"pass expires ({expires}) before it is issued ({issued})")
    claims = {
        "iss": key_id(private_key.public_key()),
        "pid": pid,
        "n": name,
        "iat": issued.isoformat(),
        "exp": expires.isoformat(),
    }
    if birth:
        claims["b"] = birth
    signed = PASS_PREFIX + _b64url_encode(canonical_json(claims))
    signature = private_key.sign(signed.encode("ascii"))
    text = signed + "." + _b64url_encode(signature)
    if len(text) > MAX_PASS_CHARS:
        raise UserError(
            f"pass would be {len(text)} characters, over the {MAX_PASS_CHARS} limit: "
            "shorten the name or id"
        )
    return text


def _claim_date(claims: Mapping[str, object], key: str) -> date:
    value = claims.get(key)
    if not isinstance(value, str) or not _ISO_DATE.fullmatch(value):
        raise PayloadRefused("bad_field", f"pass claim {key!r} is not YYYY-MM-DD")
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise PayloadRefused("bad_field", f"pass claim {key!r} is not a real date") from None


def _check_claims(claims: Mapping[str, object]) -> tuple[date, date]:
    pid = claims.get("pid")
    if (
        not isinstance(pid, str)
        or not 1 <= len(pid) <= MAX_PID_CHARS
        or _has_control_chars(pid)
    ):
        raise PayloadRefused(
            "bad_field", f"pass claim 'pid' must be 1-{MAX_PID_CHARS} printable characters"
        )
    name = claims.get("n")
    if not isinstance(name, str) or not name.strip():
        raise PayloadRefused("bad_field", "pass claim 'n' must be a non-empty name")
    birth = claims.get("b", "")
    if not isinstance(birth, str) or (birth and not _BIRTH.fullmatch(birth)):
        raise PayloadRefused("bad_field", "pass claim 'b' must be YYYY or YYYY-MM-DD")
    issued = _claim_date(claims, "iat")
    expires = _claim_date(claims, "exp")
    if expires < issued:
        raise PayloadRefused("bad_field", "pass expires before it was issued")
    return issued, expires


def verify_pass(
    text: str, keys: Mapping[str, Ed25519PublicKey], today: date | None
) -> dict:
    """Check a QG1 pass and return its claims.

    ``keys`` maps issuer key ids (see ``key_id``) to public keys. ``today`` is the
    station's date; ``None`` means the date is not known (clock not yet synced), and
    then only the signature and fields are checked, not the validity window.

    Raises ``PayloadRefused`` with reason ``unknown_format`` (not a QG1 pass),
    ``too_long``, ``bad_field`` (malformed structure, claims or dates),
    ``unknown_issuer``, ``bad_signature``, ``not_yet_valid`` or ``expired``.
    """
    if not text.startswith(PASS_PREFIX):
        raise PayloadRefused("unknown_format", "not a QG1 pass")
    if len(text) > MAX_PASS_CHARS:
        raise PayloadRefused("too_long", f"pass over {MAX_PASS_CHARS} characters")
    parts = text[len(PASS_PREFIX):].split(".")
    if len(parts) != 2:
        raise PayloadRefused("bad_field", "pass must be QG1.<claims>.<signature>")
    claims_part, signature_part = parts
    try:
        claims = json.loads(_b64url_decode(claims_part).decode("utf-8"))
    except (ValueError, binascii.Error, RecursionError):
        # json.JSONDecodeError and UnicodeDecodeError are both ValueErrors.
        raise PayloadRefused("bad_field", "pass claims are not base64url JSON") from None
    if not isinstance(claims, dict):
        raise PayloadRefused("bad_field", "pass claims are not a JSON object")
    issuer = claims.get("iss")
    if not isinstance(issuer, str) or not re.fullmatch(r"[0-9a-f]{8}", issuer):
        raise PayloadRefused("bad_field", "pass claim 'iss' is not an 8-hex key id")
    public_key = keys.get(issuer)
    if public_key is None:
        raise PayloadRefused("unknown_issuer", f"no key for issuer {issuer}")
    try:
        signature = _b64url_decode(signature_part)
        public_key.verify(signature, (PASS_PREFIX + claims_part).encode("ascii"))
    except (ValueError, InvalidSignature):
        raise PayloadRefused("bad_signature", f"pass not signed by issuer {issuer}") from None
    issued, expires = _check_claims(claims)
    if today is not None:
        if today < issued:
            raise PayloadRefused("not_yet_valid", f"pass valid from {issued}")
        if today > expires:
            raise PayloadRefused("expired", f"pass expired on {expires}")
    unknown = set(claims) - _KNOWN_CLAIMS
    if unknown:
        # Signed by a key we trust, so a newer issuer added them: keep going, say so.
        logger.debug("pass from issuer %s has unknown claims %s", issuer, sorted(unknown))
    return claims
