"""A station as a technician deploys it: install.sh, enrolment and its own unit on a booted
Debian 12, checked from outside by scripts/boot-test (docs/station.md, "The boot rig")."""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest

from conftest import REPO, unavailable

# The first run makes the Debian root (about a minute) and downloads every package; the
# update checks build two releases and watch two trials (a few minutes more).
pytestmark = [pytest.mark.rig, pytest.mark.timeout(2700)]


def test_a_station_installed_enrolled_and_run_by_its_unit_comes_up_and_delivers():
    if os.geteuid() != 0:
        unavailable("the boot rig needs root (debootstrap, systemd-nspawn): run scripts/test as root or with sudo")
    if shutil.which("apt-get") is None:
        unavailable("the boot rig needs a Debian machine (apt-get, debootstrap)")
    out = subprocess.run([str(REPO / "scripts" / "boot-test"), "--arch", "amd64", "--json"],
                         capture_output=True, text=True, timeout=2600)
    summary = json.loads(out.stdout.strip().splitlines()[-1]) if out.stdout.strip() else {}
    assert out.returncode == 0 and summary.get("ok"), (summary.get("failures"), out.stderr[-6000:])
    assert summary["installed"] and summary["enrolled"] and summary["active"]
    assert summary["user"] == "qrgate" and summary["state_dir"] == "/var/lib/qrgate"
    assert summary["numpy"].startswith("1.24")  # apt's, never pip's
    assert summary["scans_shown"] >= 9 and summary["scans_stored"] == summary["scans_shown"]
    assert summary["reboot_delivered"] and summary["missing_devices_ok"] and summary["clock_synced_seen"]
    assert summary["exposure"] is not None and summary["exposure"] <= 4.9
    # Fleet updates (scripts/boot_rig_updates.py): 0.2.0 kept, a broken 0.3.0 rolled back by
    # the station itself and its wave stopped, an expired timestamp, a replayed view and a
    # changed file refused, a release that never delivers rolled back, power cuts survived.
    assert summary["update_kept"] and summary["update_rolled_back"] and summary["wave_stopped"]
    assert summary["update_expired_refused"] and summary["update_replay_refused"]
    assert summary["update_bad_hash_refused"] and summary["update_silent_rolled_back"]
    assert summary["update_power_cuts_ok"]
