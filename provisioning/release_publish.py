"""Publishing a release on the server: the signed repository copied into the server's
data folder in an order no station can catch half-way, a fresh timestamp signed with
the server's timestamp key, and the retained notice on the release topic.

Order of the copy: targets, then the versioned metadata (N.root.json, N.targets.json,
N.snapshot.json), and timestamp.json last, replaced by a rename. A station reading
during the copy sees the old timestamp (naming the old snapshot, whose files are all
still there) or the new one (whose files are all there already).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from pathlib import Path

from provisioning.release_repo import ReleaseRepository, copy_file_durably, load_key_file
from qrgate.errors import UserError

logger = logging.getLogger(__name__)

SERVED = "releases"  # under the server's data folder
TIMESTAMP_KEY = "release-timestamp.pem"  # the server's timestamp key, in its data folder


def served_folder(data_dir: Path) -> Path:
    return Path(data_dir) / SERVED


def copy_repository(repo: Path, served: Path) -> int:
    """Copy what the served folder lacks (never replacing a versioned file); return how many."""
    repo = Path(repo)
    copied = 0
    for kind in ("targets", "metadata"):
        (served / kind).mkdir(parents=True, exist_ok=True)
        names = sorted(p.name for p in (repo / kind).glob("*") if p.is_file() and not p.name.endswith(".tmp"))
        if kind == "metadata":
            names = [n for n in names if n != "timestamp.json"]
        for name in names:
            dest = served / kind / name
            if dest.exists():
                continue
            copy_file_durably(repo / kind / name, dest)
            copied += 1
    return copied


def publish(repo: Path, data_dir: Path, timestamp_key: Path | None = None) -> dict:
    """Copy ``repo`` into the server's served folder and sign a new timestamp there."""
    served = served_folder(data_dir)
    if not (Path(repo) / "metadata" / "1.root.json").exists():
        raise UserError(f"{repo} is not a release repository (no metadata/1.root.json)")
    copied = copy_repository(Path(repo), served)
    key = load_key_file(timestamp_key or Path(data_dir) / TIMESTAMP_KEY)
    repository = ReleaseRepository(served)
    stamp = repository.sign_timestamp(key)
    _owned_like(served, Path(data_dir))
    releases = repository.releases()
    newest = releases[-1]["version"] if releases else None
    logger.info("published %d file(s); timestamp version %d; newest release %s", copied, stamp.signed.version, newest)
    return {"copied": copied, "timestamp_version": stamp.signed.version, "newest": newest}


def _owned_like(served: Path, data_dir: Path) -> None:
    """Run as root (sudo), hand the served folder to the data folder's owner: the server
    serves it, and its timer (as that user) re-signs the timestamp there."""
    if os.geteuid() != 0:
        return
    owner = data_dir.stat()
    for path in [served, *served.rglob("*")]:
        os.chown(path, owner.st_uid, owner.st_gid, follow_symlinks=False)


def refresh_timestamp(data_dir: Path, timestamp_key: Path | None = None,
                      expires: dt.timedelta | None = None) -> int:
    """Sign a new timestamp.json for what is served (every few hours, by a timer)."""
    served = served_folder(data_dir)
    key = load_key_file(timestamp_key or Path(data_dir) / TIMESTAMP_KEY)
    return ReleaseRepository(served).sign_timestamp(key, expires).signed.version
