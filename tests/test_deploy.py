"""Deployment files: the install script (dry run, shellcheck), the systemd units
(systemd-analyze verify), the udev rules."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import unavailable

REPO = Path(__file__).resolve().parents[1]
INSTALL = REPO / "provisioning" / "install.sh"
SCRIPTS = [INSTALL, REPO / "scripts" / "bootstrap.sh", REPO / "scripts" / "demo", REPO / "scripts" / "test",
           REPO / "scripts" / "boot-test",
           REPO / ".ci" / "run"]


def test_shell_scripts_pass_shellcheck():
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is installed by scripts/test (apt install shellcheck)"
    out = subprocess.run([tool, "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("role, unit, packages, etc_owner", [
    ("station", "qrgate-edge.service", ["python3-picamera2", "python3-lgpio", "python3-evdev", "python3-numpy"],
     "qrgate"),
    ("server", "qrgate-server.service", ["mosquitto"], "root"),
])
def test_install_dry_run_shows_every_step_and_changes_nothing(role, unit, packages, etc_owner, tmp_path):
    out = subprocess.run(["bash", str(INSTALL), "--dry-run", "--role", role, "--prefix", str(tmp_path / "opt")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = out.stdout
    for package in packages:
        assert package in steps
    # A/B layout (docs/updates.md): each release in its own folder and venv, "current" switched by rename.
    assert f"python3 -m venv --system-site-packages {tmp_path}/opt/releases/0.1.0/venv" in steps
    assert f"mv -T {tmp_path}/opt/.current.new {tmp_path}/opt/current" in steps
    assert f"install -d -m 0750 -o {etc_owner} -g qrgate /etc/qrgate" in steps
    assert "install -d -m 0700 -o qrgate -g qrgate /var/lib/qrgate" in steps
    assert f"systemctl enable {unit}" in steps
    assert ("99-qrgate.rules" in steps) == (role == "station")
    assert not (tmp_path / "opt").exists()  # a dry run changes nothing


def test_station_install_keeps_apts_numpy_and_evdev():
    """picamera2's simplejpeg is built against apt's numpy: pip must not put numpy 2 over it."""
    out = subprocess.run(["bash", str(INSTALL), "--dry-run"], capture_output=True, text=True, timeout=60)
    steps = out.stdout
    assert "grep -v -E '^(numpy|evdev)=='" in steps
    pip_line = next(line for line in steps.splitlines() if "pip install --prefer-binary" in line)
    assert "constraints-station.txt" in pip_line
    assert "check that the venv imports numpy from apt" in steps
    pyproject = (REPO / "pyproject.toml").read_text()
    # Bookworm's apt has numpy 1.24 and evdev 1.6: the ranges must admit them.
    assert '"numpy>=1.24"' in pyproject and '"evdev>=1.6"' in pyproject


def test_station_install_writes_a_setup_file_with_the_state_folder_the_unit_may_write():
    import tomllib

    setup = tomllib.loads((REPO / "provisioning" / "station.toml.in").read_text())
    unit = (REPO / "systemd" / "qrgate-edge.service").read_text()
    assert setup["station"]["state_dir"] == "/var/lib/qrgate"
    assert "StateDirectory=qrgate" in unit and "ProtectSystem=strict" in unit
    assert setup["source"]["kind"] == "picamera2" and setup["feedback"]["panel"] == "ssd1306"


def test_install_refuses_an_unknown_role():
    out = subprocess.run(["bash", str(INSTALL), "--role", "kiosk", "--dry-run"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "--role must be station or server" in out.stderr


@pytest.mark.parametrize("unit", ["qrgate-edge.service", "qrgate-server.service", "qrgate-broker.service",
                                  "qrgate-bridge@.service", "qrgate-web@.service", "qrgate-update.service",
                                  "qrgate-release-timestamp.service"])
def test_systemd_units_verify(unit, tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        unavailable("systemd-analyze is not on this machine (Debian: apt install systemd)")
    # Point ExecStart at this checkout's console scripts: verify insists the program exists.
    here = str(Path(sys.executable).parent)
    text = (REPO / "systemd" / unit).read_text()
    for installed in ("/opt/qrgate/venv/bin", "/opt/qrgate/current/venv/bin", "/opt/qrgate/good/venv/bin"):
        text = text.replace(installed, here)
    unit = unit.replace("@.", "@2.")  # a template is verified as one of its instances
    (tmp_path / unit).write_text(text)
    out = subprocess.run([tool, "verify", str(tmp_path / unit)], capture_output=True, text=True, timeout=60)
    problems = [line for line in (out.stdout + out.stderr).splitlines()
                if unit in line or "Unknown" in line or "Failed" in line]
    assert out.returncode == 0 and not problems, out.stdout + out.stderr


def test_station_unit_is_a_hardened_notify_service_with_a_watchdog():
    text = (REPO / "systemd" / "qrgate-edge.service").read_text()
    for line in ("Type=notify", "WatchdogSec=", "Restart=always", "StartLimitIntervalSec=0",
                 "ProtectSystem=strict", "NoNewPrivileges=yes", "Environment=LG_WD=/run/qrgate",
                 "SupplementaryGroups=gpio i2c video input dialout", "DevicePolicy=closed"):
        assert line in text


def test_udev_rules_name_serial_scanners_and_keep_modemmanager_off_them():
    rules = (REPO / "provisioning" / "udev" / "99-qrgate.rules").read_text()
    serial = next(line for line in rules.splitlines() if "SYMLINK" in line and not line.startswith("#"))
    assert 'SYMLINK+="qrgate/scanner-serial-%n", GROUP="dialout"' in serial
    assert 'ENV{ID_MM_DEVICE_IGNORE}="1"' in serial
    # No rule for keyboard-mode scanners: an event number (%n of eventN) is not stable
    # and a rule on ID_INPUT_KEYBOARD takes every USB keyboard; they go by /dev/input/by-id.
    assert not any('SUBSYSTEM=="input"' in line for line in rules.splitlines() if not line.startswith("#"))
    udevadm = shutil.which("udevadm")
    if udevadm:
        out = subprocess.run([udevadm, "verify", str(REPO / "provisioning" / "udev" / "99-qrgate.rules")],
                             capture_output=True, text=True, timeout=30)
        if "Unknown command" not in out.stderr and "invalid option" not in out.stderr:
            assert out.returncode == 0, out.stderr


def test_station_unit_lets_the_camera_and_the_clock_state_through():
    text = (REPO / "systemd" / "qrgate-edge.service").read_text()
    lines = [line.strip() for line in text.splitlines() if not line.startswith("#")]
    assert "DeviceAllow=char-dma_heap rw" in lines  # a folder path is ignored by systemd
    assert not any(line.startswith("DeviceAllow=/dev/dma_heap") for line in lines)
    assert "ProtectClock=yes" not in lines  # it blocks adjtimex(2), even to read the sync state
    assert "CapabilityBoundingSet=" in lines  # so the clock still cannot be set
    # glibc's adjtimex() is the clock_adjtime system call: @system-service lacks both.
    assert "SystemCallFilter=adjtimex clock_adjtime" in lines
    families = next(line for line in lines if line.startswith("RestrictAddressFamilies="))
    assert "AF_NETLINK" in families  # libcamera's udev monitor
    assert "ConditionPathExists=/etc/qrgate/mqtt.password" in lines
    assert "ConfigurationDirectoryMode=0750" in lines
