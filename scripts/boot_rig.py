"""The boot rig: a station deployed as a technician deploys it, on a booted Debian 12, checked from outside.

Two Debian 12 (bookworm) roots made with debootstrap (cached outside the clone, reused)
are booted with systemd-nspawn: a server installed with install.sh --role server and set
up as docs/operator.md says, and a station installed, bound and started as
docs/technician.md says. The shell blocks of both guides marked `<!-- boot-test: NAME -->`
are what the rig runs, with only the words in GUIDE_WORDS replaced. Where a technician
would do what a container cannot, the rig uses documented stand-ins (docs/station.md,
"The boot rig"): a folder of QR images as the camera (an image dropped in is a code held
up), gpiozero's MockFactory for the pins, luma's dummy panel mirrored to a PNG, and the
kernel's "synchronised" flag set as an NTP daemon would (no NTP server is reachable).

Both containers share this machine's network (the package registries must be reached);
the broker and the web server listen on free loopback ports.

    scripts/boot-test [--arch amd64|arm64] [--json] [--keep]

Needs root. Prints one JSON summary with --json; exits 1 when any check fails.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from boot_machines import (  # noqa: E402  (beside this file; the rig runs as a script)
    CACHE, Machine, RigError, ensure_base, ensure_host_tools, free_port, guide_step, make_root, say,
)
from boot_rig_updates import check_updates  # noqa: E402

CAMERA = "/srv/qrgate-camera"  # the stand-in camera: a folder of images (edge/drivers/source_folder.py)
SCREEN = "/run/qrgate/screen.png"
IMAGES = "/var/tmp/rig-images"  # made in the server machine (its /tmp is a tmpfs the host cannot see)
READY_LIMIT_S = {"amd64": 60.0, "arm64": 300.0}  # systemctl start to READY=1
STATION_SOURCE = {"kind": "folder", "path": CAMERA, "loop": True, "interval_s": 0.1}
STATION_FEEDBACK = {"indicators": "gpio", "pin_factory": "mock", "panel": "dummy", "screen_png": SCREEN}

def toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    return json.dumps(value, ensure_ascii=False)


def write_setup_file(station: Machine, source: dict, feedback: dict) -> None:
    """The technician's edit of /etc/qrgate/station.toml: [source] and [feedback], with the rig's stand-ins."""
    path = station.root / "etc/qrgate/station.toml"
    text = path.read_text(encoding="utf-8")
    for section, values in (("source", source), ("feedback", feedback)):
        body = "".join(f"{k} = {toml_value(v)}\n" for k, v in values.items())
        text, count = re.subn(rf"^\[{section}\]\n(?:(?!\[).*\n?)*", f"[{section}]\n{body}\n", text, flags=re.M)
        if count != 1:
            raise RigError(f"/etc/qrgate/station.toml has no [{section}] section to edit")
    # Rewritten in place, as an editor would: owner and mode stay as install.sh made them.
    with open(path, "r+", encoding="utf-8") as fh:
        fh.write(text)
        fh.truncate()


# --- the checks ---

class Rig:
    def __init__(self, arch: str, keep: bool):
        self.arch, self.keep = arch, keep
        self.summary: dict = {"arch": arch}
        self.failures: list[str] = []
        self.broker_port, self.web_port = free_port(), free_port()
        self.words = {
            "git clone <this repository> qrgate && cd qrgate": "cd /root/qrgate",
            "qr.example.vn": "127.0.0.1", "0.0.0.0": "127.0.0.1",
            "8883": str(self.broker_port), "8080": str(self.web_port),
        }
        # Each run its own copies: two runs at once (a developer's and the suite's) must
        # not boot or delete each other's machines.
        self.run_dir = run_dir = CACHE / f"run-{arch}-{os.getpid()}"
        self.server = Machine("qrgate-server", run_dir / "server", arch)
        self.station = Machine("qrgate-station", run_dir / "station", arch)
        self.station_id = ""
        self.clock_was_unsynced: bool | None = None
        self.power_cuts = 3

    def note(self, message: str) -> None:
        say(message)

    def check(self, name: str, ok: bool, detail: str = "") -> bool:
        say(f"{'PASS' if ok else 'FAIL'} {name}{': ' + detail if detail else ''}")
        if not ok:
            self.failures.append(f"{name}: {detail}")
        return ok

    def run(self) -> dict:
        started = time.monotonic()
        ensure_host_tools(self.arch)
        base = ensure_base(self.arch)
        for machine in (self.server, self.station):
            make_root(base, machine.root, machine.name)
        boot_limit = READY_LIMIT_S[self.arch] * 3
        try:
            for machine in (self.server, self.station):
                say(f"{machine.name}: booted in {machine.boot(boot_limit):.1f} s")
                machine.sh("update-ca-certificates >/dev/null")
            self.install_both()
            self.set_up_server()
            self.enrol_station()
            self.start_station()
            self.scan_images()
            self.power_cut_while_offline()
            self.missing_devices()
            self.exposure()
            check_updates(self, guide_step)  # scripts/boot_rig_updates.py: releases, A/B, rollback
        except BaseException:
            self.station_diagnostics()
            raise
        finally:
            self.summary["seconds"] = round(time.monotonic() - started, 1)
            self.restore_clock()
            if not self.keep:
                for machine in (self.station, self.server):
                    machine.poweroff()
                shutil.rmtree(self.run_dir, ignore_errors=True)
            else:
                say(f"left running; their roots are in {self.run_dir}")
        self.check("every scan shown green is stored once, at the end",
                   self.summary.get("scans_stored") == self.summary.get("scans_shown"),
                   f"shown {self.summary.get('scans_shown')}, stored {self.summary.get('scans_stored')}")
        self.summary["failures"] = self.failures
        return self.summary

    def station_diagnostics(self) -> None:
        """What the station's unit said, for a failed run's log."""
        with contextlib.suppress(Exception):
            out = self.station.sh("systemctl status --no-pager -l qrgate-edge; "
                                  "journalctl -b -u qrgate-edge --no-pager -n 60", check=False, timeout=60)
            say("station unit at the failure:\n" + out.stdout[-6000:])

    def install_both(self) -> None:
        """install.sh in both machines at once, as the two guides say."""
        errors: list[BaseException] = []
        times: dict[str, float] = {}

        def install(machine: Machine, doc: str, step: str) -> None:
            try:
                times[machine.name] = guide_step(machine, doc, step, self.words)
            except BaseException as exc:  # reported below, in this thread
                errors.append(exc)

        threads = [threading.Thread(target=install, args=(self.server, "operator.md", "install")),
                   threading.Thread(target=install, args=(self.station, "technician.md", "install"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        self.summary["install_s"] = {k: round(v, 1) for k, v in times.items()}
        self.summary["installed"] = True
        numpy = self.station.sh("/opt/qrgate/venv/bin/python -c 'import numpy; print(numpy.__version__, numpy.__file__)'",
                                check=False).stdout.split()
        self.summary["numpy"] = numpy[0] if numpy else None
        self.check("numpy in the station venv is apt's", len(numpy) == 2 and numpy[1].startswith("/usr/lib/python3/"),
                   " ".join(numpy))
        built = re.findall(r"Building wheel for (\S+)", self.station.sh(
            "cat /var/log/qrgate-install.log", check=False).stdout)
        self.summary["wheels_built"] = sorted(set(built) - {"qrgate"})  # the project itself is always built

    def set_up_server(self) -> None:
        guide_step(self.server, "operator.md", "server-setup", self.words)
        self.server.sh(f"for i in $(seq 60); do python3 -c 'import urllib.request; "
                       f"urllib.request.urlopen(\"http://127.0.0.1:{self.web_port}/healthz\", timeout=2)' "
                       f"2>/dev/null && exit 0; sleep 1; done; exit 1", timeout=120)
        guide_step(self.server, "operator.md", "bind-code", self.words)

    def enrol_station(self) -> None:
        # install.sh enabled the unit: before the binding it must stay quietly inactive,
        # not fail and restart every 2 s.
        self.station.sh("systemctl start qrgate-edge")
        before = self.unit_show()
        self.check("before enrolment the enabled unit waits (no restart loop)",
                   before.get("ActiveState") == "inactive" and before.get("ConditionResult") == "no"
                   and before.get("NRestarts") == "0", str(before))
        write_setup_file(self.station, STATION_SOURCE, STATION_FEEDBACK)
        camera = self.station.root / CAMERA.lstrip("/")
        camera.mkdir(parents=True, exist_ok=True)
        os.chmod(camera, 0o755)
        # The technician holds the code the operator made in front of the camera.
        (camera / "setup-code.png").write_bytes(self.server.read_bytes("/tmp/setup-code.png"))
        try:
            guide_step(self.station, "technician.md", "enroll", self.words, timeout=300)
        finally:
            (camera / "setup-code.png").unlink(missing_ok=True)
        config = (self.station.root / "etc/qrgate/station.toml").read_text(encoding="utf-8")
        match = re.search(r'^id = "([^"]+)"', config, flags=re.M)
        self.station_id = match.group(1) if match else ""
        self.summary["enrolled"] = self.check("enrolled", bool(self.station_id), self.station_id)
        state_dir = re.search(r'^state_dir = "([^"]+)"', config, flags=re.M)
        self.summary["state_dir"] = state_dir.group(1) if state_dir else None
        self.check("state under /var/lib/qrgate", self.summary["state_dir"] == "/var/lib/qrgate",
                   str(self.summary["state_dir"]))

    def mark_clock_synchronised(self) -> None:
        """Stand-in for NTP: set the kernel's 'synchronised' status as timesyncd or chrony
        would after a sync (the time itself is not touched). Undone at the end."""
        was_unsynced = self.station.sh(f"python3 -c {shlex.quote(ADJTIMEX)} sync").stdout.strip() == "1"
        if self.clock_was_unsynced is None:  # the kernel is this machine's: note how it was found
            self.clock_was_unsynced = was_unsynced

    def restore_clock(self) -> None:
        """Leave the kernel's status as the rig found it (a synchronised machine stays so)."""
        if self.clock_was_unsynced:
            with contextlib.suppress(Exception):
                self.station.sh(f"python3 -c {shlex.quote(ADJTIMEX)} unsync")
        self.clock_was_unsynced = None

    def start_station(self) -> None:
        self.mark_clock_synchronised()
        self.summary["ready_s"] = round(guide_step(self.station, "technician.md", "start", self.words, timeout=600), 1)
        show = self.unit_show()
        limit = READY_LIMIT_S[self.arch]
        self.summary["active"] = self.check(
            "the unit reached READY and is active", show.get("ActiveState") == "active" and
            self.summary["ready_s"] < limit, f"{show.get('ActiveState')}/{show.get('SubState')} in "
            f"{self.summary['ready_s']} s (limit {limit:.0f} s)")
        guide_step(self.station, "technician.md", "check", self.words, timeout=120)
        user = self.station.sh(f"ps -o user= -p {show.get('MainPID', '0')}", check=False).stdout.strip()
        self.summary["user"] = user
        self.check("runs as qrgate", user == "qrgate", user)
        self.check_file_access()

    def unit_show(self, unit: str = "qrgate-edge.service") -> dict[str, str]:
        out = self.station.sh(f"systemctl show {unit} -p ActiveState,SubState,MainPID,NRestarts,StatusText,ConditionResult",
                              check=False).stdout
        return dict(line.split("=", 1) for line in out.splitlines() if "=" in line)

    def check_file_access(self) -> None:
        secrets = ["/etc/qrgate/station.toml", "/etc/qrgate/mqtt.password", "/var/lib/qrgate/station.key",
                   "/var/lib/qrgate/outbox.sqlite3"]
        service_reads = all(self.station.sh(f"sudo -u qrgate test -r {p}", check=False).returncode == 0 for p in secrets)
        others_read = [p for p in secrets if self.station.sh(f"sudo -u nobody test -r {p}", check=False).returncode == 0]
        listing = self.station.sh("stat -c '%U:%G %a %n' /etc/qrgate /etc/qrgate/* /var/lib/qrgate /var/lib/qrgate/*",
                                  check=False).stdout
        open_to_all = [line for line in listing.splitlines()
                       if line.split()[1][-1] != "0" and "/etc/qrgate/ca.crt" not in line]
        self.summary["private"] = self.check(
            "config and keys readable by the service and no one else",
            service_reads and not others_read and not open_to_all,
            f"service reads all: {service_reads}; others read: {others_read or 'none'}; "
            f"world bits: {open_to_all or 'none'}")

    # --- scanning ---
    def decisions(self) -> list[str]:
        """The station's log lines for each decision, in order (they name no one)."""
        return DECISION.findall(self.station.journal("qrgate-edge"))

    def show_image(self, image: Path, name: str, timeout: float = 60, camera: str = CAMERA) -> str:
        """Hold one code in front of the camera until the station decides; then take it away."""
        before = len(self.decisions())
        target = self.station.root / camera.lstrip("/") / name
        shutil.copyfile(image, target)
        deadline = time.monotonic() + timeout
        try:
            while time.monotonic() < deadline:
                lines = self.decisions()
                if len(lines) > before:
                    return lines[before]
                time.sleep(0.2)  # polling the station's journal, bounded by the deadline
        finally:
            target.unlink(missing_ok=True)
        raise RigError(f"the station decided nothing about {name} within {timeout:.0f} s")

    def make_images(self) -> Path:
        self.server.sh(f"sudo -u qrgate /opt/qrgate/venv/bin/python -c {shlex.quote(MAKE_IMAGES)}", timeout=120)
        return self.server.root / IMAGES.lstrip("/")

    def stored(self) -> int:
        out = self.server.sh(f"sudo -u qrgate /opt/qrgate/venv/bin/python -c {shlex.quote(COUNT_STORED)} "
                             f"{shlex.quote(self.station_id)}", check=False)
        return int(out.stdout.strip() or -1)

    def wait_stored(self, want: int, timeout: float) -> int:
        deadline = time.monotonic() + timeout
        got = self.stored()
        while got != want and time.monotonic() < deadline:
            time.sleep(1)  # polling the server's database, bounded by the deadline
            got = self.stored()
        return got

    def scan_images(self) -> None:
        images = self.make_images()
        expected = json.loads((images / "expected.json").read_text())
        shown = 0
        wrong = []
        lines = {}
        for name, expect in sorted(expected.items()):
            if name.startswith(("offline-", "late-")):
                continue
            line = lines[name] = self.show_image(images / name, name)
            accepted = line.startswith("recorded seq")
            shown += accepted
            if (expect == "accepted") != accepted or (expect != "accepted" and f"({expect})" not in line):
                wrong.append(f"{name}: expected {expect}, station logged {line!r}")
        self.summary["scans_shown"] = shown
        self.check("each code decided as expected", not wrong, "; ".join(wrong) or f"{len(lines)} codes")
        # Dates are checked only on a synchronised clock: this refusal shows the unit can read it.
        self.summary["clock_synced_seen"] = self.check(
            "a pass past its date is refused under the unit", "(expired)" in lines.get("99-expired-pass.png", ""),
            lines.get("99-expired-pass.png", "not shown"))
        stored = self.wait_stored(shown, 60)
        self.summary["scans_stored"] = stored
        self.check("every scan shown green is stored once at the server", stored == shown,
                   f"shown {shown}, stored {stored}")
        fleet = json.loads(self.server.sh(
            "sudo -u qrgate /opt/qrgate/venv/bin/qrgate-provision fleet --server-config /etc/qrgate/server.toml --json"
        ).stdout)
        mine = [row for row in fleet if row.get("station_id") == self.station_id]
        self.summary["fleet"] = mine[0] if mine else None

    def power_cut_while_offline(self) -> None:
        images = self.server.root / IMAGES.lstrip("/")
        self.server.sh("systemctl stop qrgate-broker")
        before = self.stored()
        offline = sorted(p.name for p in images.glob("offline-*.png"))
        shown = sum(self.show_image(images / name, name).startswith("recorded seq") for name in offline)
        self.check("scans accepted while the broker is away", shown == len(offline), f"{shown} of {len(offline)}")
        self.station.power_cut()
        say("station: power cut (its PID 1 killed) with the broker away; booting again")
        self.station.boot(READY_LIMIT_S[self.arch] * 3)
        self.mark_clock_synchronised()
        self.server.sh("systemctl start qrgate-broker")
        want = before + shown
        got = self.wait_stored(want, 120)
        self.summary["reboot_delivered"] = self.check(
            "records queued before the power cut arrive after the boot", got == want, f"stored {got} of {want}")
        self.summary["scans_shown"] = self.summary.get("scans_shown", 0) + shown
        self.summary["scans_stored"] = got

    def missing_devices(self) -> None:
        """No panel and no camera at start: the unit comes up, says so, and recovers when the camera appears."""
        missing = CAMERA + "-unplugged"
        self.station.sh("systemctl stop qrgate-edge")
        original = (self.station.root / "etc/qrgate/station.toml").read_text(encoding="utf-8")
        write_setup_file(self.station, {**STATION_SOURCE, "path": missing},
                         {**STATION_FEEDBACK, "panel": "ssd1306", "screen_png": ""})
        try:
            restarts = self.unit_show().get("NRestarts", "0")
            self.station.sh("systemctl start qrgate-edge", timeout=READY_LIMIT_S[self.arch] * 2)
            came_up = self.unit_show()
            selftest = self.station.sh("sudo -u qrgate /opt/qrgate/venv/bin/qrgate-edge selftest "
                                       "--config /etc/qrgate/station.toml", check=False)
            says_camera = selftest.returncode != 0 and "camera" in selftest.stdout.lower()
            # The camera is plugged in: the folder appears, and a code held up is counted.
            self.station.sh(f"mkdir -p {missing} && chmod 755 {missing}")
            images = self.server.root / IMAGES.lstrip("/")
            name = sorted(p.name for p in images.glob("late-*.png"))[0]
            line = self.show_image(images / name, name, timeout=120, camera=missing)
            after = self.unit_show()
            counted = line.startswith("recorded seq")
            self.summary["scans_shown"] += counted
            self.summary["scans_stored"] = self.wait_stored(self.summary["scans_shown"], 60)
            ok = (came_up.get("ActiveState") == "active" and says_camera and counted
                  and after.get("NRestarts") == restarts and after.get("ActiveState") == "active")
            self.summary["missing_devices_ok"] = self.check(
                "no panel and no camera at start: up, fault shown, recovers", ok,
                f"{came_up.get('ActiveState')}, selftest: {selftest.stdout.strip()[-300:]!r}, "
                f"then {line!r}, restarts {restarts}->{after.get('NRestarts')}")
        finally:
            self.station.sh("systemctl stop qrgate-edge", check=False)
            (self.station.root / "etc/qrgate/station.toml").write_text(original, encoding="utf-8")
            self.station.sh("systemctl start qrgate-edge", check=False)

    def exposure(self) -> None:
        out = self.station.sh("systemd-analyze security --no-pager qrgate-edge.service", check=False).stdout
        match = re.search(r"Overall exposure level for qrgate-edge.service: ([\d.]+) (\w+)", out)
        self.summary["exposure"] = float(match.group(1)) if match else None
        self.summary["exposure_level"] = match.group(2) if match else None
        self.check("systemd-analyze security: OK or better", bool(match) and float(match.group(1)) <= 4.9,
                   match.group(0) if match else out[-500:])


DECISION = re.compile(r"(recorded seq \d+.*|refused code \(.*|refused a \S+ card.*)$", re.M)

# Run inside the containers with their own python3 (ctypes): adjtimex(2) ADJ_STATUS.
ADJTIMEX = r"""
import ctypes, ctypes.util, sys
class Timex(ctypes.Structure):
    _fields_ = [("modes", ctypes.c_uint), ("offset", ctypes.c_long), ("freq", ctypes.c_long),
                ("maxerror", ctypes.c_long), ("esterror", ctypes.c_long), ("status", ctypes.c_int),
                ("rest", ctypes.c_byte * 512)]
libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
t = Timex()
libc.adjtimex(ctypes.byref(t))
if sys.argv[1] == "sync":
    print(1 if t.status & 0x40 else 0)  # STA_UNSYNC before
    t.modes, t.status, t.maxerror, t.esterror = 0x10 | 0x04 | 0x08, t.status & ~0x40, 1000, 100
else:
    t.modes, t.status = 0x10, t.status | 0x40
if libc.adjtimex(ctypes.byref(t)) < 0:
    sys.exit("adjtimex: errno %d" % ctypes.get_errno())
"""

# Run in the server container as qrgate: the people at the gate, as QR images.
MAKE_IMAGES = r"""
import datetime as dt, json, pathlib
from qrgate.keyfiles import load_or_create_key
from qrgate.personal_pass import issue_pass
from qrgate.samples import cccd, demo_samples, write_qr_png
from server.config import load_server_config
cfg = load_server_config("/etc/qrgate/server.toml")
key = load_or_create_key(cfg.pass_key_file)
out = pathlib.Path("/var/tmp/rig-images"); out.mkdir(exist_ok=True)
expected = {}
for s in demo_samples(key):
    write_qr_png(s.text, out / (s.name + ".png")); expected[s.name + ".png"] = s.expect
today = dt.date.today()
old = issue_pass(key, pid="W-0099", name="Hồ Văn Cũ", issued=today - dt.timedelta(days=40),
                 expires=today - dt.timedelta(days=2))
write_qr_png(old, out / "99-expired-pass.png"); expected["99-expired-pass.png"] = "expired"
people = [("offline-1", "079190000101", "Phan Thị Mây"), ("offline-2", "079190000102", "Lý Văn Gió"),
          ("late-1", "079190000103", "Chu Thị Nắng")]
for name, number, person in people:
    write_qr_png(cccd(number, "", person, "01011990", "Nữ", "Phường Bến Thành, TP Hồ Chí Minh", "01012022"),
                 out / (name + ".png"))
    expected[name + ".png"] = "accepted"
(out / "expected.json").write_text(json.dumps(expected))
"""

COUNT_STORED = r"""
import sys
from server.config import load_server_config
from server.storage.postgres import open_configured
print(open_configured(load_server_config("/etc/qrgate/server.toml")).count_checkins(sys.argv[1]))
"""


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="boot-test", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", choices=("amd64", "arm64"), default="amd64")
    parser.add_argument("--json", action="store_true", help="print one JSON summary on stdout")
    parser.add_argument("--keep", action="store_true", help="leave both machines running (for a look inside)")
    parser.add_argument("--power-cuts", type=int, default=3,
                        help="power cuts at random moments of an update (docs/updates.md; default 3)")
    args = parser.parse_args(argv)
    if os.geteuid() != 0:
        parser.error("run as root: debootstrap and systemd-nspawn need it")
    rig = Rig(args.arch, args.keep)
    rig.power_cuts = args.power_cuts
    try:
        summary = rig.run()
    except (RigError, subprocess.TimeoutExpired, OSError) as exc:
        say(f"FAIL {exc}")
        summary = {**rig.summary, "failures": [*rig.failures, str(exc)]}
    summary["ok"] = not summary["failures"]
    print(json.dumps(summary, ensure_ascii=False) if args.json else json.dumps(summary, ensure_ascii=False, indent=2))
    return 0 if summary["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
