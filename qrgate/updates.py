"""Fleet updates as both sides see them: the release topic, the notice on it, and the
station's signed update report (docs/protocol.md, "Releases"; docs/updates.md).

The notice carries no authority: it only says "look now". What a station installs is
what the TUF metadata it verifies says, whatever the notice claimed.
"""

from __future__ import annotations

import base64
import hashlib
import json
import platform
import re
from pathlib import Path
from typing import Any

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from qrgate.errors import RecordError
from qrgate.protocol import canonical_json

# Retained, published by the server when a release is out; every station may read it.
RELEASES_TOPIC = "qrgate/v1/releases"
REPORT_SIGNING_CONTEXT = b"qrgate-update-report-v1\n"
MAX_NOTICE_BYTES = 1024
VERSION_RE = re.compile(r"^\d{1,4}\.\d{1,4}\.\d{1,4}$")

# The release file: provisioning/release_build.py makes it, edge/update/install.py reads it.
MANIFEST = "manifest.json"
MANIFEST_FORMAT = 1
WHEELS = "wheels"  # the folder of wheels in a release file
SOURCE_TAR = "src.tar.gz"

# What a station's updater says about itself (the fleet page shows it). The refusals
# are TUF's (docs/updates.md, "What a station refuses").
STATES = {
    "idle": "running the newest release it was offered",
    "downloading": "fetching a release",
    "installing": "installing a release beside the running one",
    "trying": "running a new release on trial",
    "kept": "the new release came back healthy and is kept",
    "rolled_back": "the new release was not healthy in time: the previous one runs again",
    "refused": "the release metadata or file failed verification: nothing was installed",
    "failed": "a release could not be installed (the running one is untouched)",
    "unreachable": "the release server could not be reached",
}
REFUSALS = {
    "rollback": "metadata older than what the station already trusts (a replayed release)",
    "expired": "expired metadata (a frozen or stale view of the releases)",
    "mixed": "metadata files that do not belong together (a mixed snapshot)",
    "bad_hash": "a file whose length or hash differs from the signed metadata",
    "bad_signature": "metadata not signed by the keys the station's root trusts (a revoked or unknown key)",
    "bad_metadata": "metadata the station cannot read",
}

# Why a release on trial was rolled back (the status's "cause"; the reason says it in words).
CAUSES = {
    "not_ready": "the new release did not reach READY in time",
    "restarted": "the new release stopped or was restarted after READY (a crash or the watchdog)",
    "no_watchdog": "the new release did not keep feeding the watchdog",
    "no_heartbeat": "no heartbeat of the new release reached the server",
    "no_record": "records were waiting and the server acked none from the new release",
    "interrupted": "the trial was interrupted too often (power cuts, reboots)",
}


def version_key(text: str) -> tuple[int, ...]:
    """A release version "MAJOR.MINOR.PATCH" as a tuple that compares as releases do."""
    if not isinstance(text, str) or not VERSION_RE.match(text):
        raise ValueError(f"not a release version: {text!r}")
    return tuple(int(part) for part in text.split("."))


def machine_arch() -> str:
    """This machine's architecture by dpkg's name (amd64, arm64), as releases are named."""
    machine = platform.machine()
    return {"x86_64": "amd64", "aarch64": "arm64"}.get(machine, machine)


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def manifest_files(folder: Path) -> dict[str, str]:
    """The manifest's "files": each wheel under ``folder/wheels`` and the source tar, by sha256."""
    files = {f"{WHEELS}/{w.name}": file_sha256(w) for w in sorted((folder / WHEELS).glob("*.whl"))}
    return files | {SOURCE_TAR: file_sha256(folder / SOURCE_TAR)}


def notice(version: str, published_ms: int) -> bytes:
    return canonical_json({"v": 1, "version": version, "published_ms": published_ms})


def parse_notice(payload: bytes) -> dict[str, Any]:
    """A release notice, checked for shape only (it is a hint, never trusted)."""
    if len(payload) > MAX_NOTICE_BYTES:
        raise RecordError("too_large", f"release notice of {len(payload)} bytes")
    try:
        obj = json.loads(payload)
    except (ValueError, UnicodeDecodeError):
        raise RecordError("malformed", "release notice is not JSON") from None
    if not isinstance(obj, dict) or obj.get("v") != 1 or not VERSION_RE.match(str(obj.get("version", ""))):
        raise RecordError("malformed", "release notice without v 1 and a version")
    return obj


def sign_report(key: Ed25519PrivateKey, body: dict[str, Any]) -> dict[str, Any]:
    sig = key.sign(REPORT_SIGNING_CONTEXT + canonical_json(body))
    return {**body, "sig": base64.b64encode(sig).decode("ascii")}


def verify_report(public: Ed25519PublicKey, signed: dict[str, Any]) -> dict[str, Any]:
    """The report without its signature; RecordError("bad_signature") if it does not verify."""
    body = {k: v for k, v in signed.items() if k != "sig"}
    try:
        public.verify(base64.b64decode(str(signed.get("sig", "")), validate=True),
                      REPORT_SIGNING_CONTEXT + canonical_json(body))
    except (InvalidSignature, ValueError):
        raise RecordError("bad_signature", "update report") from None
    return body


def announce(version: str, mqtt_settings, base: Path, timeout: float = 15.0) -> None:
    """The retained notice on the release topic: every station looks at once (or when it connects)."""
    import os
    import threading
    import time

    from qrgate.errors import UserError
    from qrgate.mqtt import make_client

    client, props = make_client(f"qrgate-release-{os.getpid()}", mqtt_settings, base, persistent=False)
    connected = threading.Event()
    client.on_connect = lambda c, u, f, rc, p: connected.set() if not rc.is_failure else None
    try:
        client.connect(mqtt_settings.host, mqtt_settings.port, keepalive=mqtt_settings.keepalive, properties=props)
    except OSError as exc:
        raise UserError(f"cannot reach the broker at {mqtt_settings.host}:{mqtt_settings.port}: {exc}") from None
    client.loop_start()
    try:
        if not connected.wait(timeout):
            raise UserError(f"cannot reach the broker at {mqtt_settings.host}:{mqtt_settings.port}")
        info = client.publish(RELEASES_TOPIC, notice(version, int(time.time() * 1000)), qos=1, retain=True)
        info.wait_for_publish(timeout)
    finally:
        client.disconnect()
        client.loop_stop()
