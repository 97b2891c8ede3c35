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
           REPO / ".ci" / "run"]


def test_shell_scripts_pass_shellcheck():
    tool = shutil.which("shellcheck")
    assert tool, "shellcheck is installed by scripts/test (apt install shellcheck)"
    out = subprocess.run([tool, "-x", *map(str, SCRIPTS)], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert out.returncode == 0, out.stdout


@pytest.mark.parametrize("role, unit, packages", [
    ("station", "qrgate-edge.service", ["python3-picamera2", "python3-lgpio", "python3-evdev"]),
    ("server", "qrgate-server.service", ["mosquitto"]),
])
def test_install_dry_run_shows_every_step_and_changes_nothing(role, unit, packages, tmp_path):
    out = subprocess.run(["bash", str(INSTALL), "--dry-run", "--role", role, "--prefix", str(tmp_path / "opt")],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr
    steps = out.stdout
    for package in packages:
        assert package in steps
    assert f"python3 -m venv --system-site-packages {tmp_path}/opt/venv" in steps
    assert "install -d -m 0750 -o root -g qrgate /etc/qrgate" in steps
    assert f"systemctl enable {unit}" in steps
    assert ("99-qrgate.rules" in steps) == (role == "station")
    assert not (tmp_path / "opt").exists()  # a dry run changes nothing


def test_install_refuses_an_unknown_role():
    out = subprocess.run(["bash", str(INSTALL), "--role", "kiosk", "--dry-run"], capture_output=True, text=True, timeout=30)
    assert out.returncode == 1 and "--role must be station or server" in out.stderr


@pytest.mark.parametrize("unit", ["qrgate-edge.service", "qrgate-server.service", "qrgate-broker.service",
                                  "qrgate-bridge@.service", "qrgate-web@.service"])
def test_systemd_units_verify(unit, tmp_path):
    tool = shutil.which("systemd-analyze")
    if tool is None:
        unavailable("systemd-analyze is not on this machine (Debian: apt install systemd)")
    # Point ExecStart at this checkout's console scripts: verify insists the program exists.
    text = (REPO / "systemd" / unit).read_text().replace("/opt/qrgate/venv/bin", str(Path(sys.executable).parent))
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


def test_udev_rules_give_scanners_stable_names_for_the_service_groups():
    rules = (REPO / "provisioning" / "udev" / "99-qrgate.rules").read_text()
    assert 'SYMLINK+="qrgate/scanner-serial-%n", GROUP="dialout"' in rules
    assert 'SYMLINK+="qrgate/scanner-hid-%n", GROUP="input"' in rules
    udevadm = shutil.which("udevadm")
    if udevadm:
        out = subprocess.run([udevadm, "verify", str(REPO / "provisioning" / "udev" / "99-qrgate.rules")],
                             capture_output=True, text=True, timeout=30)
        if "Unknown command" not in out.stderr and "invalid option" not in out.stderr:
            assert out.returncode == 0, out.stderr
