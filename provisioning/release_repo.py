"""The release repository: TUF metadata (root, targets, snapshot, timestamp) signed with
keys kept apart, as python-tuf's examples/repository does it, on plain files.

Where each key lives (docs/updates.md):

- ``root.pem``: offline (a USB stick kept in a safe). It signs only root.json: which
  keys may sign each role. Needed to start the repository and to rotate a key.
- ``targets.pem`` and ``snapshot.pem``: the operator's release machine. They sign a
  release (which files, their hashes) and the list of metadata versions.
- ``timestamp.pem``: the server. It re-signs timestamp.json, which expires after a
  day, every few hours (``qrgate-release timestamp``), so a station can tell a fresh
  view of the releases from a frozen one.

The repository uses consistent snapshots: every metadata file but timestamp.json is
written as ``N.<role>.json`` and every target as ``<sha256>.<name>``, so a server that is
copying a new release never serves a mix of two (timestamp.json is replaced last).
"""

from __future__ import annotations

import datetime as dt
import hashlib
import logging
import os
import shutil
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from securesystemslib.signer import CryptoSigner
from tuf.api.metadata import (
    Key,
    Metadata,
    MetaFile,
    Root,
    Snapshot,
    TargetFile,
    Targets,
    Timestamp,
)

from qrgate.errors import UserError
from qrgate.updates import version_key

logger = logging.getLogger(__name__)

ROLES = ("root", "targets", "snapshot", "timestamp")
# How long each role's signature holds (docs/updates.md, "Expiry").
EXPIRY = {"root": dt.timedelta(days=365), "targets": dt.timedelta(days=90), "snapshot": dt.timedelta(days=90),
          "timestamp": dt.timedelta(days=1)}


def parse_version(text: str) -> tuple[int, ...]:
    """A release version "MAJOR.MINOR.PATCH" as a tuple that compares as releases do."""
    try:
        return version_key(text)
    except ValueError:
        raise UserError(f"a release version is three numbers such as 0.2.0, not {text!r}") from None


def copy_file_durably(src: Path, dest: Path) -> None:
    """Copy to a temporary name, fsync, rename: ``dest`` is whole or absent after a crash."""
    tmp = dest.with_name(dest.name + ".tmp")
    shutil.copyfile(src, tmp)
    with open(tmp, "rb") as fh:
        os.fsync(fh.fileno())
    os.replace(tmp, dest)


def _expiry(role: str, override: dt.timedelta | None = None) -> dt.datetime:
    now = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)
    return now + (override if override is not None else EXPIRY[role])


# --- keys ---

def key_path(folder: Path, role: str) -> Path:
    return Path(folder) / f"{role}.pem"


def new_key_file(path: Path) -> CryptoSigner:
    """Make an Ed25519 key in a new 0600 PEM file (never overwriting one)."""
    signer = CryptoSigner(Ed25519PrivateKey.generate())
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        raise UserError(f"{path} exists already: a key is never overwritten (move it away first)") from None
    with os.fdopen(fd, "wb") as fh:
        fh.write(signer.private_bytes)
        fh.flush()
        os.fsync(fh.fileno())
    return signer


def load_key_file(path: Path) -> CryptoSigner:
    try:
        private = load_pem_private_key(Path(path).read_bytes(), None)
    except FileNotFoundError:
        raise UserError(f"no key file {path}") from None
    except ValueError as exc:
        raise UserError(f"{path} is not a PEM private key: {exc}") from None
    if not isinstance(private, Ed25519PrivateKey):
        raise UserError(f"{path} is not an Ed25519 key")
    return CryptoSigner(private)


# --- the repository ---

class ReleaseRepository:
    """A TUF repository in one folder: ``metadata/`` and ``targets/``."""

    def __init__(self, folder: str | Path):
        self.folder = Path(folder)
        self.metadata_dir = self.folder / "metadata"
        self.targets_dir = self.folder / "targets"

    # reading
    def latest(self, role: str) -> Metadata:
        """The newest version of a role's metadata in the folder."""
        return Metadata.from_file(str(self._latest_path(role)))

    def _latest_path(self, role: str) -> Path:
        if role == "timestamp":
            path = self.metadata_dir / "timestamp.json"
        else:
            versions = sorted(int(p.name.split(".", 1)[0]) for p in self.metadata_dir.glob(f"*.{role}.json")
                              if p.name.split(".", 1)[0].isdigit())
            if not versions:
                raise UserError(f"{self.folder} holds no {role} metadata: run `qrgate-release init` first")
            path = self.metadata_dir / f"{versions[-1]}.{role}.json"
        if not path.exists():
            raise UserError(f"{self.folder} holds no {role} metadata")
        return path

    def _meta_of(self, role: str) -> MetaFile:
        """The newest ``role`` file as the next role up names it: version, length, hash."""
        data = self._latest_path(role).read_bytes()
        return MetaFile(version=Metadata.from_bytes(data).signed.version, length=len(data),
                        hashes={"sha256": hashlib.sha256(data).hexdigest()})

    def releases(self) -> list[dict]:
        """Every release the signed targets list: version, arch, target path, length."""
        targets = self.latest("targets").signed
        out = []
        for path, info in targets.targets.items():
            custom = info.unrecognized_fields.get("qrgate")
            if isinstance(custom, dict):
                out.append({"path": path, "length": info.length, **custom})
        return sorted(out, key=lambda r: (parse_version(r["version"]), r.get("arch", "")))

    # writing
    def _write(self, md: Metadata) -> Path:
        """Write metadata atomically (and durably: the server copies what is here)."""
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        role = md.signed.type
        path = self.metadata_dir / ("timestamp.json" if role == "timestamp" else f"{md.signed.version}.{role}.json")
        tmp = path.with_name(path.name + ".tmp")
        data = md.to_bytes()
        with open(tmp, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
        return path

    def init(self, keys_dir: Path, root_keys_dir: Path) -> dict[str, str]:
        """Make the four keys and version 1 of every role; return the key ids."""
        if (self.metadata_dir / "1.root.json").exists():
            raise UserError(f"{self.folder} is a release repository already")
        signers = {"root": new_key_file(key_path(root_keys_dir, "root"))}
        for role in ("targets", "snapshot", "timestamp"):
            signers[role] = new_key_file(key_path(keys_dir, role))
        root = Root(expires=_expiry("root"), consistent_snapshot=True)
        for role, signer in signers.items():
            root.add_key(signer.public_key, role)
        root_md = Metadata(root)
        root_md.sign(signers["root"])
        self._write(root_md)
        targets_md = Metadata(Targets(expires=_expiry("targets")))
        targets_md.sign(signers["targets"])
        self._write(targets_md)
        self._snapshot_and_timestamp(signers["snapshot"], signers["timestamp"])
        return {role: s.public_key.keyid for role, s in signers.items()}

    def add_target(self, file: Path, name: str, custom: dict, signers: dict[str, CryptoSigner]) -> TargetFile:
        """Add (or replace) one target, signed into a new targets, snapshot and timestamp.

        ``signers`` holds "targets" and "snapshot", and "timestamp" when this machine
        has it (otherwise the server signs the timestamp when it publishes).
        """
        info = TargetFile.from_file(name, str(file), ["sha256"])
        info.unrecognized_fields["qrgate"] = custom
        self.targets_dir.mkdir(parents=True, exist_ok=True)
        digest = info.hashes["sha256"]
        dest = self.targets_dir / f"{digest}.{Path(name).name}"
        if not dest.exists():
            copy_file_durably(Path(file), dest)
        targets_md = self.latest("targets")
        targets_md.signed.targets[name] = info
        targets_md.signed.version += 1
        targets_md.signed.expires = _expiry("targets")
        self._sign_checked(targets_md, signers["targets"], "targets")
        self._write(targets_md)
        self._snapshot_and_timestamp(signers["snapshot"], signers.get("timestamp"))
        return info

    def _sign_checked(self, md: Metadata, signer: CryptoSigner, role: str) -> None:
        """Sign, refusing a key the root no longer trusts for the role (rotated out)."""
        root = self.latest("root").signed
        allowed = root.roles[role].keyids
        if signer.public_key.keyid not in allowed:
            raise UserError(f"this {role} key ({signer.public_key.keyid[:12]}...) is not one root.json trusts for "
                            f"{role}: it was rotated out, or belongs to another repository")
        md.sign(signer)

    def _snapshot_and_timestamp(self, snapshot_signer: CryptoSigner, timestamp_signer: CryptoSigner | None) -> None:
        try:
            snapshot_md = self.latest("snapshot")
            snapshot_md.signed.version += 1
        except UserError:
            snapshot_md = Metadata(Snapshot(expires=_expiry("snapshot")))
        snapshot_md.signed.expires = _expiry("snapshot")
        snapshot_md.signed.meta["targets.json"] = self._meta_of("targets")
        self._sign_checked(snapshot_md, snapshot_signer, "snapshot")
        self._write(snapshot_md)
        if timestamp_signer is not None:
            self.sign_timestamp(timestamp_signer)

    def sign_timestamp(self, signer: CryptoSigner, expires: dt.timedelta | None = None) -> Metadata:
        """A new timestamp.json naming the newest snapshot (the server's job, every few hours)."""
        try:
            version = self.latest("timestamp").signed.version + 1
        except UserError:
            version = 1
        md = Metadata(Timestamp(version=version, expires=_expiry("timestamp", expires),
                                snapshot_meta=self._meta_of("snapshot")))
        self._sign_checked(md, signer, "timestamp")
        self._write(md)
        return md

    def rotate_key(self, role: str, old_keyid: str, new_public: Key, root_signer: CryptoSigner,
                   also_root_signers: list[CryptoSigner] = ()) -> Metadata:
        """A new root.json that trusts ``new_public`` for ``role`` instead of ``old_keyid``.

        Signed by the root key in force (and, when the root key itself is replaced, by
        the new root key too, as the TUF specification asks). Metadata the old key
        signed is refused by every station from then on; re-sign the role with the new
        key (``qrgate-release resign``).
        """
        if role not in ROLES:
            raise UserError(f"role must be one of {', '.join(ROLES)}")
        root_md = self.latest("root")
        root = root_md.signed
        if old_keyid not in root.roles[role].keyids:
            raise UserError(f"{role} has no key {old_keyid[:12]}...: nothing to rotate")
        root.add_key(new_public, role)
        root.revoke_key(old_keyid, role)
        root.version += 1
        root.expires = _expiry("root")
        root_md.signatures.clear()
        for signer in (root_signer, *also_root_signers):
            root_md.sign(signer, append=True)
        self._write(root_md)
        return root_md

    def resign(self, role: str, signer: CryptoSigner, snapshot_signer: CryptoSigner | None = None,
               timestamp_signer: CryptoSigner | None = None) -> None:
        """Sign a new version of ``role`` (targets or snapshot) with a (rotated) key."""
        if role == "targets":
            if snapshot_signer is None:  # before anything is written
                raise UserError("a new targets.json needs the snapshot key too")
            md = self.latest("targets")
            md.signed.version += 1
            md.signed.expires = _expiry("targets")
            self._sign_checked(md, signer, "targets")
            self._write(md)
            self._snapshot_and_timestamp(snapshot_signer, timestamp_signer)
        elif role == "snapshot":
            self._snapshot_and_timestamp(signer, timestamp_signer)
        elif role == "timestamp":
            self.sign_timestamp(signer)
        else:
            raise UserError("only targets, snapshot or timestamp are re-signed (root: rotate-key)")

    def keyids(self) -> dict[str, list[str]]:
        root = self.latest("root").signed
        return {role: list(root.roles[role].keyids) for role in ROLES}


def describe(repo: ReleaseRepository) -> str:
    """What the repository holds, in lines (for `qrgate-release list`)."""
    lines = []
    for role in ROLES:
        md = repo.latest(role)
        lines.append(f"{role:9} version {md.signed.version}, expires {md.signed.expires:%Y-%m-%d %H:%M} UTC")
    for rel in repo.releases():
        lines.append(f"release {rel['version']} for {rel.get('arch', '?')}: {rel['path']} ({rel['length']} bytes)")
    return "\n".join(lines)

