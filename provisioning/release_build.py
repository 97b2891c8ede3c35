"""Building a station release on the operator's machine: the project's wheel at the
release's version, every wheel it needs on a station, its source, and a manifest, in one
tar file that becomes a TUF target (provisioning/release_repo.py signs it).

Everything is downloaded here, with this machine's pip and index; a station installs the
release with ``pip install --no-index --only-binary=:all: --find-links`` and no compiler.
What apt provides on a station (numpy, evdev: picamera2 is built against apt's numpy) is
left out, as install.sh leaves it out. A dependency with no wheel on the index is built
here, and only if it is pure Python (sdnotify has no wheel at all).
"""

from __future__ import annotations

import datetime as dt
import io
import json
import logging
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from provisioning.release_repo import parse_version
from qrgate.errors import UserError
from qrgate.updates import MANIFEST, MANIFEST_FORMAT, SOURCE_TAR, WHEELS, machine_arch, manifest_files

logger = logging.getLogger(__name__)

# What a station has from apt (install.sh APT_PROVIDES): never in a release.
APT_PROVIDES = ("numpy", "evdev")
# The pi extra is only evdev, which apt provides: a release needs the base requirements.
PYTHON = "3.11"  # Debian 12 and Raspberry Pi OS Bookworm
ARCH_PLATFORMS = {"amd64": "x86_64", "arm64": "aarch64"}
GLIBC_MINOR = 36  # Debian 12 and Raspberry Pi OS Bookworm: glibc 2.36
SKIP_SOURCE = {".git", ".venv", "demo-data", "__pycache__", ".pytest_cache", "build", "qrgate.egg-info"}


def platform_tags(arch: str) -> list[str]:
    """The wheel platforms a station of ``arch`` runs, newest first: pip takes one
    ``--platform`` literally, and most wheels are tagged with an older glibc (2.28, 2.17)."""
    machine = ARCH_PLATFORMS[arch]
    return [f"manylinux_2_{minor}_{machine}" for minor in range(GLIBC_MINOR, 16, -1)] + [f"manylinux2014_{machine}"]


def target_name(version: str, arch: str) -> str:
    return f"qrgate-{version}-{arch}.tar"


def _pip(*args: str, log: Path) -> None:
    cmd = [sys.executable, "-m", "pip", "--disable-pip-version-check", *args]
    with open(log, "a", encoding="utf-8") as fh:
        fh.write("$ " + " ".join(cmd) + "\n")
        fh.flush()
        done = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, timeout=1800)
    if done.returncode != 0:
        tail = log.read_text(encoding="utf-8", errors="replace")[-3000:]
        raise UserError(f"pip failed ({' '.join(args[:2])} ...): its output is in {log}\n{tail}")


def copy_source(source: Path, dest: Path, version: str) -> None:
    """The source tree as install.sh copies it, with the release's version written in."""
    def ignore(folder, names):
        return [n for n in names if n in SKIP_SOURCE or n.endswith(".pyc")]

    shutil.copytree(source, dest, ignore=ignore, symlinks=True)
    _set_version_line(source, dest, "pyproject.toml", "version", version)
    _set_version_line(source, dest, "qrgate/__init__.py", "__version__", version)


def _set_version_line(source: Path, dest: Path, name: str, variable: str, version: str) -> None:
    path = dest / name
    text, n = re.subn(rf'^{variable} = "[^"]*"', f'{variable} = "{version}"', path.read_text(encoding="utf-8"),
                      count=1, flags=re.M)
    if n != 1:
        raise UserError(f"{source}/{name} has no {variable} line to set")
    path.write_text(text, encoding="utf-8")


def resolve(project_wheel: Path, constraints: Path, work: Path, log: Path) -> list[tuple[str, str]]:
    """Every (name, version) a station needs, resolved by pip for Python 3.11."""
    report = work / "resolve.json"
    _pip("install", "--dry-run", "--ignore-installed", "--quiet", "--report", str(report), "-c", str(constraints),
         f"qrgate @ {project_wheel.resolve().as_uri()}", log=log)
    found = json.loads(report.read_text(encoding="utf-8"))
    pins = []
    for item in found.get("install", []):
        meta = item["metadata"]
        name = meta["name"]
        if name.lower() == "qrgate" or name.lower() in APT_PROVIDES:
            continue
        pins.append((name, meta["version"]))
    return sorted(pins)


def fetch_wheels(pins: list[tuple[str, str]], arch: str, wheels: Path, work: Path, log: Path) -> None:
    """A wheel of each pin for ``arch``: from the index, else built here if pure Python."""
    same_arch = arch == machine_arch()
    for name, version in pins:
        spec = f"{name}=={version}"
        args = ["download", "--no-deps", "--only-binary=:all:", "-d", str(wheels), spec]
        if not same_arch:
            args += [*(f"--platform={tag}" for tag in platform_tags(arch)), "--python-version", PYTHON,
                     "--implementation", "cp"]
        try:
            _pip(*args, log=log)
            continue
        except UserError:
            logger.info("%s has no wheel for %s on the index: building it here", spec, arch)
        built = work / "built" / name
        _pip("wheel", "--no-deps", "-w", str(built), spec, log=log)
        for wheel in built.glob("*.whl"):
            if not wheel.name.endswith("-py3-none-any.whl") and not wheel.name.endswith("-py2.py3-none-any.whl"):
                raise UserError(f"{spec} has no wheel for {arch} and is not pure Python: a station cannot "
                                f"install it without a compiler")
            shutil.copy2(wheel, wheels / wheel.name)


def build_release(source: Path, version: str, arch: str, out_dir: Path, constraints: Path | None = None) -> Path:
    """Build the release tar for ``arch``; return its path in ``out_dir``."""
    parse_version(version)
    if arch not in ARCH_PLATFORMS:
        raise UserError(f"--arch must be one of {', '.join(ARCH_PLATFORMS)}, not {arch!r}")
    source = Path(source).resolve()
    if not (source / "pyproject.toml").exists():
        raise UserError(f"{source} is not the project's source (no pyproject.toml)")
    constraints = Path(constraints or source / "constraints.txt")
    out_dir.mkdir(parents=True, exist_ok=True)
    log = out_dir / f"build-{version}-{arch}.log"
    log.write_text("", encoding="utf-8")
    with tempfile.TemporaryDirectory(prefix="qrgate-release-") as tmp:
        work = Path(tmp)
        src = work / "src"
        copy_source(source, src, version)
        wheels = work / WHEELS
        wheels.mkdir()
        _pip("wheel", "--no-deps", "-w", str(wheels), str(src), log=log)
        project = next(wheels.glob("qrgate-*.whl"), None)
        if project is None:
            raise UserError(f"building the project's wheel made nothing: see {log}")
        fetch_wheels(resolve(project, constraints, work, log), arch, wheels, work, log)
        with tarfile.open(work / SOURCE_TAR, "w:gz") as tar:
            tar.add(src, arcname="src")
        manifest = {
            "format": MANIFEST_FORMAT, "version": version, "arch": arch, "python": PYTHON,
            "requirement": f"qrgate=={version}", "apt_provides": list(APT_PROVIDES),
            "made": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "files": manifest_files(work),
        }
        out = out_dir / target_name(version, arch)
        tmp_out = out.with_name(out.name + ".tmp")
        with tarfile.open(tmp_out, "w") as tar:
            data = json.dumps(manifest, indent=2, sort_keys=True).encode()
            info = tarfile.TarInfo(MANIFEST)
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
            for name in manifest["files"]:
                tar.add(work / name, arcname=name)
        tmp_out.replace(out)
    return out
