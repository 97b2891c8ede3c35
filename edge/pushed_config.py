"""Settings and the block list pushed by the server, checked and kept on the station.

The message is verified with the server keys the station trusts (station.toml
``pass_keys``), must name this station and be newer than what the station has. The
station keeps the last good message on disk, so it is applied after a reboot with no
network (a bus a week away from a depot).
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from edge.policy import PolicyConfig
from qrgate import protocol
from qrgate.errors import RecordError
from qrgate.protocol import MODES

FIELDS = {"v", "st", "version", "venue", "mode", "repeat_window_s", "anti_passback", "auto_checkout_s",
          "blocked_salt", "blocked", "sig"}
logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PushedConfig:
    version: int
    venue: str
    policy: PolicyConfig
    blocked_salt: bytes
    blocked: frozenset[str]

    def is_blocked(self, person_key: str) -> bool:
        if not self.blocked:
            return False
        return hashlib.sha256(self.blocked_salt + person_key.encode("utf-8")).hexdigest() in self.blocked


def parse_pushed_config(payload: bytes, station_id: str, keys: Mapping[str, Ed25519PublicKey]) -> PushedConfig:
    """Verify and parse a config message; RecordError with a reason if it is not acceptable."""
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise RecordError("malformed", "config is not UTF-8 JSON") from None
    if not isinstance(obj, dict) or set(obj) != FIELDS or obj.get("v") != 1:
        raise RecordError("malformed", "config does not have the version 1 fields")
    if obj["st"] != station_id:
        raise RecordError("misaddressed", f"config for {obj['st']!r}, not {station_id!r}")
    body = {k: v for k, v in obj.items() if k != "sig"}
    try:
        sig = base64.b64decode(obj["sig"], validate=True)
    except (ValueError, TypeError):
        raise RecordError("bad_signature", "config signature is not base64") from None
    signed = protocol.CONFIG_SIGNING_CONTEXT + protocol.canonical_json(body)
    for key in keys.values():
        try:
            key.verify(sig, signed)
            break
        except InvalidSignature:
            continue
    else:
        raise RecordError("bad_signature", "config is not signed by a server this station trusts")
    try:
        if obj["mode"] not in MODES or not isinstance(obj["blocked"], list):
            raise ValueError
        policy = PolicyConfig(
            mode=obj["mode"],
            repeat_window_s=float(obj["repeat_window_s"]),
            toggle_reset_s=float(obj["auto_checkout_s"]),
            anti_passback=bool(obj["anti_passback"]),
        )
        return PushedConfig(
            version=int(obj["version"]),
            venue=str(obj["venue"]),
            policy=policy,
            blocked_salt=base64.b64decode(obj["blocked_salt"], validate=True),
            blocked=frozenset(str(h) for h in obj["blocked"]),
        )
    except (ValueError, TypeError):
        raise RecordError("malformed", "config values out of range") from None


class PushedConfigFile:
    """The last accepted config message, kept verbatim next to the outbox."""

    def __init__(self, path: Path):
        self.path = path

    def load(self, station_id: str, keys: Mapping[str, Ed25519PublicKey]) -> PushedConfig | None:
        try:
            payload = self.path.read_bytes()
        except FileNotFoundError:
            return None
        except OSError as exc:
            logger.error("cannot read pushed config %s: %s", self.path, exc.strerror)
            return None
        try:
            return parse_pushed_config(payload, station_id, keys)
        except RecordError as exc:
            logger.error("ignoring stored config %s: %s", self.path, exc)
            return None

    def save(self, payload: bytes) -> None:
        tmp = self.path.with_name(self.path.name + ".new")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as fh:
            fh.write(payload)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, self.path)
