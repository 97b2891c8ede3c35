"""The boot rig's machines: Debian 12 roots made with debootstrap (cached outside the
clone, reused), each booted with systemd-nspawn and driven from outside (a shell in it,
its files, a clean poweroff or a power cut), and the guides' shell blocks marked
`<!-- boot-test: NAME -->` run in them as written. scripts/boot_rig.py says what is
installed on them and checked.
"""

from __future__ import annotations

import contextlib
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
CACHE = Path(os.environ.get("QRGATE_BOOT_CACHE", "/var/cache/qrgate-boot-test"))
MIRROR = "http://deb.debian.org/debian"
# What a Raspberry Pi OS Lite image has that debootstrap's minbase lacks.
BASE_PACKAGES = "systemd,systemd-sysv,dbus,udev,sudo,python3,ca-certificates,procps,iproute2"
BASE_RECIPE = f"bookworm minbase {BASE_PACKAGES} v1"

log_lines: list[str] = []


def say(message: str) -> None:
    line = f"[{time.strftime('%H:%M:%S')}] {message}"
    log_lines.append(line)
    print(line, file=sys.stderr, flush=True)


class RigError(Exception):
    pass


def host(*cmd: str, timeout: float = 900, check: bool = True, **kw) -> subprocess.CompletedProcess:
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    if check and out.returncode != 0:
        raise RigError(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()[-2000:]}")
    return out


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --- the host side: tools, the cached root ---

def ensure_host_tools(arch: str) -> None:
    wanted = {"debootstrap": "debootstrap", "systemd-nspawn": "systemd-container", "nsenter": "util-linux"}
    if arch != host_arch():
        wanted.update({"qemu-aarch64-static": "qemu-user-static", "update-binfmts": "binfmt-support"})
    missing = sorted({pkg for tool, pkg in wanted.items() if shutil.which(tool) is None})
    if missing:
        say(f"installing on this machine: {' '.join(missing)}")
        host("apt-get", "update", "-qq")
        host("apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing,
             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    if arch != host_arch():
        if not Path("/proc/sys/fs/binfmt_misc/status").exists():
            host("mount", "-t", "binfmt_misc", "binfmt_misc", "/proc/sys/fs/binfmt_misc")
        host("update-binfmts", "--enable", "qemu-aarch64", check=False)
        if not Path("/proc/sys/fs/binfmt_misc/qemu-aarch64").exists():
            raise RigError("qemu-aarch64 is not registered with binfmt_misc: cannot run arm64 programs here")


def host_arch() -> str:
    return host("dpkg", "--print-architecture").stdout.strip()


def ensure_base(arch: str) -> Path:
    """The pristine Debian 12 root for ``arch``: made once with debootstrap, then reused."""
    base = CACHE / f"bookworm-{arch}"
    marker = base / ".qrgate-base"
    if marker.exists() and marker.read_text() == BASE_RECIPE:
        say(f"reusing the cached Debian 12 {arch} root {base}")
        return base
    tmp = CACHE / f"bookworm-{arch}.new"
    shutil.rmtree(tmp, ignore_errors=True)
    shutil.rmtree(base, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    say(f"debootstrap Debian 12 {arch} into {tmp} (once; about 1 minute on amd64, 5 on arm64)")
    started = time.monotonic()
    host("debootstrap", f"--arch={arch}", "--variant=minbase", f"--include={BASE_PACKAGES}",
         "bookworm", str(tmp), MIRROR, timeout=3600)
    # The updates of a maintained Debian 12, as a Raspberry Pi OS image has them.
    (tmp / "etc/apt/sources.list").write_text(
        f"deb {MIRROR} bookworm main\ndeb {MIRROR} bookworm-updates main\n"
        "deb http://deb.debian.org/debian-security bookworm-security main\n")
    (tmp / ".qrgate-base").write_text(BASE_RECIPE)
    tmp.rename(base)
    say(f"root made in {time.monotonic() - started:.0f} s")
    return base


def trust_settings() -> Path | None:
    """The certificate bundle this machine's pip is told to trust (its `cert` setting)."""
    for candidate in (os.environ.get("PIP_CERT"), _pip_cert_setting(), "/etc/ssl/certs/ca-certificates.crt"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    return None


def _pip_cert_setting() -> str | None:
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        out = subprocess.run([sys.executable, "-m", "pip", "config", "get", "global.cert"],
                             capture_output=True, text=True, timeout=30)
        if out.returncode == 0:
            return out.stdout.strip()
    return None


def make_root(base: Path, root: Path, name: str) -> None:
    """A fresh copy of the base root, with this machine's trust settings and the project's source."""
    shutil.rmtree(root, ignore_errors=True)
    root.parent.mkdir(parents=True, exist_ok=True)
    host("cp", "-a", "--reflink=auto", str(base), str(root), timeout=600)
    # debootstrap copies this machine's host name; a Pi image has its own, resolvable one.
    (root / "etc/hostname").write_text(name + "\n")
    (root / "etc/hosts").write_text(f"127.0.0.1 localhost\n127.0.1.1 {name}\n::1 localhost ip6-localhost\n")
    bundle = trust_settings()
    if bundle is not None:
        # The machine's own trust (apt over https, pip): installed as a local CA file and
        # picked up by update-ca-certificates at first boot (see boot()).
        shutil.copyfile(bundle, root / "usr/local/share/ca-certificates/host-trust.crt")
        (root / "etc/pip.conf").write_text("[global]\ncert = /etc/ssl/certs/ca-certificates.crt\n")
    # The technician's clone: the working tree as it is, less the venv and git history.
    dest = root / "root/qrgate"
    dest.mkdir(parents=True)
    tar = subprocess.Popen(["tar", "-C", str(REPO), "--exclude=./.venv", "--exclude=./.git", "--exclude=./demo-data",
                            "--exclude=__pycache__", "-cf", "-", "."], stdout=subprocess.PIPE)
    host("tar", "-C", str(dest), "-xf", "-", stdin=tar.stdout)
    tar.wait(timeout=60)


# --- a booted container ---

class Machine:
    """One booted Debian 12 root (systemd as PID 1 inside), driven through nsenter."""

    def __init__(self, name: str, root: Path, arch: str):
        self.name, self.root, self.arch = name, root, arch
        self.proc: subprocess.Popen | None = None
        self.log = root.parent / f"{name}.console.log"
        cache = CACHE / "downloads" / f"{arch}-{name}"
        self.binds = [(cache / "apt", "/var/cache/apt/archives"), (cache / "pip", "/root/.cache/pip")]

    def boot(self, timeout: float) -> float:
        for src, _ in self.binds:
            src.mkdir(parents=True, exist_ok=True)
        cmd = ["systemd-nspawn", "-D", str(self.root), "--boot", "--register=no", "--keep-unit",
               f"--machine={self.name}", "--capability=CAP_SYS_TIME", "--console=read-only"]
        cmd += [f"--bind={src}:{dst}" for src, dst in self.binds]
        started = time.monotonic()
        with open(self.log, "ab") as console:
            self.proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=console, stderr=subprocess.STDOUT)
        deadline = started + timeout
        state = ""
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RigError(f"{self.name}: systemd-nspawn exited with {self.proc.returncode} (see {self.log})")
            if self.leader() is not None:
                state = self.sh("systemctl is-system-running", check=False, timeout=30).stdout.strip()
                if state in ("running", "degraded"):
                    return time.monotonic() - started
            time.sleep(0.5)  # polling the booting machine, bounded by the deadline
        raise RigError(f"{self.name}: not booted within {timeout:.0f} s (state {state!r}; see {self.log})")

    def leader(self) -> int | None:
        """The container's PID 1, as seen from this machine."""
        if self.proc is None:
            return None
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            with contextlib.suppress(OSError):
                stat = (entry / "stat").read_text()
                ppid = int(stat.rsplit(")", 1)[1].split()[1])
                if ppid == self.proc.pid and "systemd" in stat.split("(", 1)[1].split(")", 1)[0]:
                    return int(entry.name)
        return None

    def command(self, script: str) -> list[str]:
        """A bash script run as root inside, with a login-like environment (no host variables)."""
        pid = self.leader()
        if pid is None:
            raise RigError(f"{self.name} is not running")
        return ["nsenter", "-t", str(pid), "-m", "-u", "-i", "-p", "-C", "-r", "-w",
                "env", "-i", "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "HOME=/root", "LANG=C.UTF-8", "TERM=dumb", "/bin/bash", "-c", f"cd /root && {script}"]

    def read_bytes(self, path: str) -> bytes:
        """A file as the machine sees it (its /tmp is a tmpfs of its own)."""
        out = subprocess.run(self.command(f"cat {shlex.quote(path)}"), capture_output=True, timeout=60)
        if out.returncode != 0:
            raise RigError(f"{self.name}: cannot read {path}: {out.stderr.decode(errors='replace').strip()}")
        return out.stdout

    def sh(self, script: str, *, check: bool = True, timeout: float = 900) -> subprocess.CompletedProcess:
        out = subprocess.run(self.command(script), capture_output=True, text=True, timeout=timeout)
        if check and out.returncode != 0:
            raise RigError(f"{self.name}: `{script.strip()[:300]}` failed ({out.returncode}):\n"
                           f"{(out.stdout + out.stderr).strip()[-3000:]}")
        return out

    def poweroff(self, timeout: float = 120) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        with contextlib.suppress(RigError, subprocess.TimeoutExpired):
            self.sh("systemctl poweroff", check=False, timeout=30)
        try:
            self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            # Killing nspawn alone would leave the container's PID 1 running on its own.
            self.power_cut()

    def power_cut(self) -> None:
        """Kill the container's PID 1: every process in it dies at once, nothing is shut down."""
        pid = self.leader()
        if pid is not None:
            os.kill(pid, 9)
        assert self.proc is not None
        try:
            self.proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=30)

    def journal(self, unit: str) -> str:
        return self.sh(f"journalctl -b -u {unit} -o cat --no-pager", check=False, timeout=60).stdout


# --- the guides ---

def guide_blocks(doc: str) -> dict[str, str]:
    """The shell blocks of a guide marked `<!-- boot-test: NAME -->`, by name."""
    text = (REPO / "docs" / doc).read_text(encoding="utf-8")
    blocks = dict(re.findall(r"<!-- boot-test: ([\w-]+) -->\s*```sh\n(.*?)```", text, flags=re.S))
    if not blocks:
        raise RigError(f"docs/{doc} has no block marked <!-- boot-test: NAME -->")
    return blocks


def with_words(block: str, words: dict[str, str]) -> str:
    for old, new in words.items():
        block = block.replace(old, new)
    return block


def guide_step(machine: Machine, doc: str, name: str, words: dict[str, str], timeout: float = 1800) -> float:
    block = guide_blocks(doc).get(name)
    if block is None:
        raise RigError(f"docs/{doc} has no block <!-- boot-test: {name} -->")
    script = with_words(block, words)
    say(f"{machine.name}: docs/{doc} [{name}]: " + "; ".join(
        line.split("#")[0].strip() for line in script.splitlines() if line.split("#")[0].strip()))
    started = time.monotonic()
    machine.sh("set -euo pipefail\n" + script, timeout=timeout)
    return time.monotonic() - started
