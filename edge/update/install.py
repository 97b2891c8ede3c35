"""Installing a verified release beside the running one: its source, and its own venv
made from the wheels it carries (``pip install --no-index --only-binary=:all:``: no
index, no compiler). The venv sees apt's packages (numpy, evdev, picamera2, lgpio), as
install.sh makes it. ``release.json`` is written last: a folder without it is an install
cut short, deleted and done again.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import tarfile
from pathlib import Path

from edge.update.layout import MARKER, Layout, fsync_dir, write_json
from qrgate.errors import QrgateError
from qrgate.updates import MANIFEST, MANIFEST_FORMAT, SOURCE_TAR, WHEELS, file_sha256

logger = logging.getLogger(__name__)

SYSTEM_PYTHON = "/usr/bin/python3"


class InstallFailed(QrgateError):
    """The release could not be installed; the running one is untouched."""


def _safe_members(tar: tarfile.TarFile) -> list[tarfile.TarInfo]:
    members = []
    for member in tar.getmembers():
        path = Path(member.name)
        if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
            raise InstallFailed(f"release file holds an entry it must not: {member.name!r}")
        members.append(member)
    return members


def _extract(tar: tarfile.TarFile, dest: Path) -> None:
    members = _safe_members(tar)
    if hasattr(tarfile, "data_filter"):
        tar.extractall(dest, members=members, filter="data")
    else:  # Python before 3.11.4: the members were checked above
        tar.extractall(dest, members=members)


def read_manifest(bundle: Path) -> dict:
    with tarfile.open(bundle) as tar:
        try:
            data = tar.extractfile(MANIFEST).read()
        except (KeyError, AttributeError):
            raise InstallFailed(f"{bundle.name} has no {MANIFEST}") from None
    try:
        manifest = json.loads(data)
    except ValueError:
        raise InstallFailed(f"{bundle.name}: {MANIFEST} is not JSON") from None
    found = manifest.get("format") if isinstance(manifest, dict) else None
    if found != MANIFEST_FORMAT:
        raise InstallFailed(f"{bundle.name}: manifest format {found!r} is not one this updater knows")
    return manifest


def install_release(bundle: Path, layout: Layout, version: str, arch: str, log: Path,
                    python: str = SYSTEM_PYTHON, timeout: float = 1800) -> Path:
    """Install the verified release file as ``releases/<version>``; return the folder."""
    manifest = read_manifest(bundle)
    if manifest.get("version") != version or manifest.get("arch") != arch:
        raise InstallFailed(f"{bundle.name} holds {manifest.get('version')} for {manifest.get('arch')}, "
                            f"not {version} for {arch}")
    folder = layout.folder(version)
    if layout.complete(version):
        return folder
    shutil.rmtree(folder, ignore_errors=True)
    folder.mkdir(parents=True)
    unpack = folder / "release"
    with tarfile.open(bundle) as tar:
        _extract(tar, unpack)
    for name, digest in manifest.get("files", {}).items():
        path = unpack / name
        if not path.is_file() or file_sha256(path) != digest:
            raise InstallFailed(f"{name} in {bundle.name} does not match its manifest")
    with tarfile.open(unpack / SOURCE_TAR) as tar:
        _extract(tar, folder)
    if not (folder / "src" / "pyproject.toml").is_file():
        raise InstallFailed(f"{bundle.name} holds no source tree")
    venv = folder / "venv"
    steps = [
        [python, "-m", "venv", "--system-site-packages", str(venv)],
        [str(venv / "bin" / "python"), "-m", "pip", "install", "--disable-pip-version-check", "--no-index",
         "--only-binary=:all:", "--find-links", str(unpack / WHEELS), manifest["requirement"]],
    ]
    with open(log, "a", encoding="utf-8") as out:
        for cmd in steps:
            out.write("$ " + " ".join(cmd) + "\n")
            out.flush()
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT, timeout=timeout)
            if done.returncode != 0:
                tail = log.read_text(encoding="utf-8", errors="replace")[-1500:]
                raise InstallFailed(f"installing {version} failed ({cmd[2] if cmd[1] == '-m' else cmd[0]}): {tail}")
    # The wheels served their purpose; the source and the venv stay.
    shutil.rmtree(unpack, ignore_errors=True)
    subprocess.run(["sync", "-f", str(folder)], timeout=300, check=False)
    write_json(folder / MARKER, {"version": version, "arch": arch, "made": manifest.get("made", "")})
    fsync_dir(layout.releases)
    return folder
