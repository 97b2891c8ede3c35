"""Where releases live on a station, the two links that choose one, and the updater's
own files, each changed so that a power cut at any instant leaves a bootable station.

    /opt/qrgate/releases/<version>/   src/, venv/, release.json (written last)
    /opt/qrgate/current -> releases/<version>   what qrgate-edge.service runs
    /opt/qrgate/good    -> releases/<version>   the last release kept (the updater runs
                                                from it, and rolls back to it)
    /var/lib/qrgate-update/journal.json         a switch or trial under way
    /var/lib/qrgate-update/status.json          what the updater last did, and why

A link is replaced by renaming a new link over it (rename(2) is atomic), then the
folder is fsync'd; a JSON file is written to a temporary name, fsync'd and renamed.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

RELEASES = "releases"
CURRENT = "current"
GOOD = "good"
MARKER = "release.json"  # written last into a complete release folder


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, ensure_ascii=False, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    fsync_dir(path.parent)


def read_json(path: Path) -> dict[str, Any] | None:
    try:
        obj = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):  # absent; torn cannot happen (rename), but hand-edited can
        return None
    return obj if isinstance(obj, dict) else None


class Layout:
    """The release folders and links under ``prefix``."""

    def __init__(self, prefix: str | Path):
        self.prefix = Path(prefix)
        self.releases = self.prefix / RELEASES

    def folder(self, version: str) -> Path:
        return self.releases / version

    def complete(self, version: str) -> bool:
        """Installed to the end (its marker is written last)."""
        return (self.folder(version) / MARKER).is_file()

    def _target(self, name: str) -> str | None:
        try:
            target = os.readlink(self.prefix / name)
        except OSError:
            return None
        parts = Path(target).parts
        return parts[-1] if len(parts) == 2 and parts[0] == RELEASES else None

    def current(self) -> str | None:
        """The version qrgate-edge runs (the `current` link), or None."""
        return self._target(CURRENT)

    def good(self) -> str | None:
        """The last version kept (the `good` link), or None."""
        return self._target(GOOD)

    def point(self, name: str, version: str) -> None:
        """Make link ``name`` (current or good) point at ``version``, atomically and durably."""
        if not self.complete(version):
            raise FileNotFoundError(f"release {version} is not installed completely in {self.folder(version)}")
        link = self.prefix / name
        tmp = self.prefix / f".{name}.new"
        try:
            tmp.unlink()
        except FileNotFoundError:
            pass
        os.symlink(f"{RELEASES}/{version}", tmp)
        os.replace(tmp, link)
        fsync_dir(self.prefix)

    def installed(self) -> list[str]:
        if not self.releases.is_dir():
            return []
        return sorted(p.name for p in self.releases.iterdir() if p.is_dir() and self.complete(p.name))

    def prune(self, keep_extra: int, order_key) -> list[str]:
        """Delete partial folders and old releases, never current or good; return what went."""
        removed = []
        if not self.releases.is_dir():
            return removed
        protected = {self.current(), self.good()}
        for entry in self.releases.iterdir():
            if entry.is_dir() and not self.complete(entry.name) and entry.name not in protected:
                shutil.rmtree(entry, ignore_errors=True)  # an install cut short
                removed.append(entry.name)
        spare = [v for v in self.installed() if v not in protected]
        spare.sort(key=order_key)
        for version in spare[:max(0, len(spare) - keep_extra)]:
            shutil.rmtree(self.folder(version), ignore_errors=True)
            removed.append(version)
        return removed
