"""Secret key files: generated where they are used, written 0600, never overwritten.

A station's Ed25519 signing key and presence-hash key, the server's pass-signing key:
only public keys ever leave the machine that made them.
"""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate.errors import DriverError


def _create_private_file(path: Path, data: bytes) -> None:
    """Write a new secret file atomically with mode 0600; never overwrite one."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".new")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())
    os.link(tmp, path)  # fails if another process made the file first: keep theirs
    os.unlink(tmp)


def _create_once(path: Path, data: bytes) -> None:
    try:
        _create_private_file(path, data)
    except FileExistsError:
        pass
    except OSError as exc:
        # Typically a state folder owned by another user (enrolment run as root, the
        # service as qrgate): say which file and why, not a traceback.
        raise DriverError(f"cannot create {path}: {exc.strerror} (the state folder must be writable "
                          f"by the user running this, user id {os.getuid()})") from exc


def load_or_create_key(path: Path, kind: type = Ed25519PrivateKey):
    """Load the private key at ``path``, generating it first if there is none.

    ``kind`` is Ed25519PrivateKey (signing) or X25519PrivateKey (sealing).
    """
    if not path.exists():
        key = kind.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
        _create_once(path, pem)
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (OSError, ValueError) as exc:
        raise DriverError(f"key file {path}: {exc}") from exc
    if not isinstance(key, kind):
        raise DriverError(f"key file {path} is not an {kind.__name__.removesuffix('PrivateKey')} key")
    return key


def load_or_create_secret(path: Path) -> bytes:
    if not path.exists():
        _create_once(path, secrets.token_bytes(32))
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise DriverError(f"secret file {path}: {exc.strerror}") from exc
    if len(data) != 32:
        raise DriverError(f"secret file {path} must be 32 bytes")
    return data
