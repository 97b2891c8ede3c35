"""Personal fields sealed to the server's key, so a stolen station's SD card reveals no one.

Each station boot makes an ephemeral X25519 key pair and derives one ChaCha20-Poly1305
key with the server's X25519 public key; the ephemeral private key and the derived key
live only in memory. Every record's ``person`` is sealed with that key and a random
nonce: ``sealed = base64(ephemeral_public[32] || nonce[12] || ciphertext+tag)``. The
server derives the same key once per ephemeral public key and caches it.
"""

from __future__ import annotations

import base64
import os
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from qrgate import protocol
from qrgate.errors import RecordError

INFO = b"qrgate-person-v1"
KEY_BYTES, NONCE_BYTES = 32, 12


def _raw(public: X25519PublicKey) -> bytes:
    return public.public_bytes(Encoding.Raw, PublicFormat.Raw)


def _derive(shared: bytes, ephemeral_public: bytes, server_public: bytes) -> ChaCha20Poly1305:
    key = HKDF(hashes.SHA256(), KEY_BYTES, salt=None, info=INFO + ephemeral_public + server_public).derive(shared)
    return ChaCha20Poly1305(key)


def _aad(station_id: str) -> bytes:
    return INFO + b"|" + station_id.encode("ascii")


def x25519_public_from_text(text: str) -> X25519PublicKey:
    try:
        return X25519PublicKey.from_public_bytes(base64.b64decode(text.strip(), validate=True))
    except ValueError as exc:
        raise RecordError("malformed", "server encryption key is not base64 of 32 bytes") from exc


def x25519_public_to_text(key: X25519PublicKey) -> str:
    return base64.b64encode(_raw(key)).decode("ascii")


class PersonSealer:
    """Station side: seals person fields; a new ephemeral key every ``rotate_after_s``."""

    def __init__(self, server_public: X25519PublicKey, station_id: str, *, rotate_after_s: float = 86400.0,
                 clock: Callable[[], float] = time.monotonic):
        self.server_public = _raw(server_public)
        self._server_key = server_public
        self.aad = _aad(station_id)
        self.rotate_after_s = rotate_after_s
        self.clock = clock
        self._made_at = float("-inf")
        self._aead: ChaCha20Poly1305 | None = None
        self._ephemeral_public = b""

    def _rotate(self, ephemeral: X25519PrivateKey | None = None) -> None:
        ephemeral = ephemeral or X25519PrivateKey.generate()
        self._ephemeral_public = _raw(ephemeral.public_key())
        self._aead = _derive(ephemeral.exchange(self._server_key), self._ephemeral_public, self.server_public)
        self._made_at = self.clock()

    def seal(self, person: Mapping[str, Any], *, ephemeral: X25519PrivateKey | None = None,
             nonce: bytes | None = None) -> str:
        """Seal ``person``; ``ephemeral`` and ``nonce`` are for test vectors only."""
        if ephemeral is not None or self._aead is None or self.clock() - self._made_at > self.rotate_after_s:
            self._rotate(ephemeral)
        nonce = nonce or os.urandom(NONCE_BYTES)
        plain = protocol.canonical_json(person)
        sealed = self._ephemeral_public + nonce + self._aead.encrypt(nonce, plain, self.aad)
        return base64.b64encode(sealed).decode("ascii")


class PersonOpener:
    """Server side: opens sealed person fields, one key exchange per station boot."""

    def __init__(self, private: X25519PrivateKey, cache_size: int = 4096):
        self._private = private
        self._public = _raw(private.public_key())
        self._cache: OrderedDict[bytes, ChaCha20Poly1305] = OrderedDict()
        self._cache_size = cache_size
        self._lock = threading.Lock()  # the bridge opens records on several threads

    def open(self, sealed: str, station_id: str) -> dict[str, Any]:
        """Return the person object; RecordError('bad_sealed') if it cannot be opened."""
        try:
            blob = protocol.b64decode_strict(sealed)
        except ValueError:
            raise RecordError("bad_sealed", "not base64") from None
        if len(blob) < 32 + NONCE_BYTES + 16:
            raise RecordError("bad_sealed", "too short")
        eph, nonce, body = blob[:32], blob[32:32 + NONCE_BYTES], blob[32 + NONCE_BYTES:]
        with self._lock:
            aead = self._cache.get(eph)
            if aead is not None:
                self._cache.move_to_end(eph)
        if aead is None:
            try:
                shared = self._private.exchange(X25519PublicKey.from_public_bytes(eph))
            except ValueError:
                raise RecordError("bad_sealed", "ephemeral key is not a valid point") from None
            aead = _derive(shared, eph, self._public)
            with self._lock:
                self._cache[eph] = aead
                if len(self._cache) > self._cache_size:
                    self._cache.popitem(last=False)
        try:
            plain = aead.decrypt(nonce, body, _aad(station_id))
            person = protocol.parse_json(plain)
        except (InvalidTag, ValueError):
            raise RecordError("bad_sealed", f"cannot open sealed fields of station {station_id}") from None
        if not isinstance(person, dict):
            raise RecordError("bad_sealed", "sealed content is not an object")
        return person
