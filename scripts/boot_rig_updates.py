"""The boot rig's fleet-update checks (docs/updates.md), run after the station is up.

The operator's blocks of docs/operator.md make the release keys and repository, build
release 0.2.0 from the source, publish it and start its wave; the station hears the
notice over MQTT, installs 0.2.0 beside the running release and keeps it once it is
healthy. Then a broken 0.3.0 (its station exits at start) is released: the station
switches to it, sees it never become READY and switches back by itself, saying why, and
the wave stops by itself. A timestamp left to expire is refused with a clear status.
Last, the power is cut at random moments of further updates. Nobody touches the station
meanwhile. Every wait has its own deadline and, past it, says what it waited for.
"""

from __future__ import annotations

import json
import random
import shlex
import time

STATUS = "/var/lib/qrgate-update/status.json"
VENV = "/opt/qrgate/venv/bin"
SERVER_CONFIG = "/etc/qrgate/server.toml"
# A station that exits at once: the release that never becomes READY.
BREAK_AT_START = ("import pathlib; p = pathlib.Path('/root/qrgate-broken/edge/cli.py'); t = p.read_text(); "
                  "p.write_text(t.replace('    from edge.app import Station\\n', "
                  "'    raise SystemExit(\"broken on purpose\")\\n', 1))")
UPDATES_SEEN = r"""
import json, sys
from server.config import load_server_config
from server.storage.postgres import open_configured
db = open_configured(load_server_config("/etc/qrgate/server.toml")).sql
row = db.one("SELECT state, version, reason FROM station_updates WHERE station_id = ?", [sys.argv[1]])
fw = db.one("SELECT fw FROM station_status WHERE station_id = ?", [sys.argv[1]])
print(json.dumps({"update": list(row) if row else None, "fw": fw[0] if fw else None}))
"""
# A release that starts, feeds its watchdog and scans, but whose heartbeats never reach
# the server (sent to a topic the broker's ACL refuses): "starts and never delivers".
SILENT = ("import pathlib; p = pathlib.Path('/root/qrgate-silent/qrgate/protocol.py'); t = p.read_text(); "
          "p.write_text(t.replace('/{station_id}/status\"', '/{station_id}/silent\"', 1))")
SERVED = "/var/lib/qrgate/releases"
MORE_PEOPLE = r"""
import json, pathlib, sys
from qrgate.samples import cccd, write_qr_png
out = pathlib.Path("/var/tmp/rig-images")
name, number = sys.argv[1], sys.argv[2]
write_qr_png(cccd(number, "", "Trần Văn Mới", "02021991", "Nam", "Xã Tân Phú, Đồng Nai", "02022022"),
             out / (name + ".png"))
"""


def status(rig) -> dict:
    out = rig.station.sh(f"cat {STATUS} 2>/dev/null || echo '{{}}'", check=False).stdout
    try:
        return json.loads(out)
    except ValueError:
        return {}


def wait_status(rig, version: str, states: tuple[str, ...], timeout: float) -> dict:
    """Poll the updater's status until it reaches one of ``states`` for ``version``; past
    the deadline, say what it is doing instead (its status, its unit, its last words)."""
    deadline = time.monotonic() + timeout
    now = status(rig)
    while time.monotonic() < deadline:
        now = status(rig)
        if now.get("version") == version and now.get("state") in states:
            return now
        time.sleep(2)  # polling the station's status file, bounded by the deadline
    unit = rig.station.sh("systemctl show qrgate-update.service -p ActiveState,SubState,Result --value | tr '\\n' ' '; "
                          "journalctl -u qrgate-update.service -o cat --no-pager -n 8", check=False, timeout=60).stdout
    rig.note(f"no {'/'.join(states)} of {version} within {timeout:.0f} s: status {now}; updater {unit.strip()}")
    return {**now, "waited_for": f"{'/'.join(states)} of {version}", "updater": unit.strip()[-600:]}


def build_and_publish(rig, version: str, source: str = "/root/qrgate") -> None:
    """Build and publish ``version`` (docs/operator.md's commands): served, no wave yet."""
    rig.server.sh(f"{VENV}/qrgate-release build --repo /root/releases --keys /root/release-keys "
                  f"--source {source} --version {version} && "
                  f"{VENV}/qrgate-release publish --repo /root/releases --server-config {SERVER_CONFIG}", timeout=1800)


def start_wave(rig, version: str) -> None:
    """Release ``version`` to every station (again: the notice is sent anew)."""
    rig.server.sh(f"sudo -u qrgate {VENV}/qrgate-server release-wave --config {SERVER_CONFIG} --version {version} "
                  "--percent 100")


def release(rig, version: str, source: str = "/root/qrgate") -> None:
    build_and_publish(rig, version, source)
    start_wave(rig, version)


def wait_edge_active(rig, seconds: int) -> None:
    """Until the station's unit is active again (a restart or a rollback settles), bounded."""
    rig.station.sh(f"for i in $(seq {seconds}); do systemctl is-active -q qrgate-edge && exit 0; sleep 1; done; "
                   "exit 1", check=False, timeout=seconds + 30)


def wave(rig, version: str) -> dict:
    out = rig.server.sh(f"sudo -u qrgate {VENV}/qrgate-server release-waves --config {SERVER_CONFIG}",
                        check=False, timeout=120).stdout
    try:
        return next((w for w in json.loads(out.strip().splitlines()[-1]) if w["version"] == version), {})
    except (ValueError, IndexError):
        return {}


def server_view(rig) -> dict:
    out = rig.server.sh(f"sudo -u qrgate {VENV}/python -c {shlex.quote(UPDATES_SEEN)} {shlex.quote(rig.station_id)}",
                        check=False)
    try:
        return json.loads(out.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        return {}


def running_release(rig) -> str:
    show = rig.unit_show()
    cmd = rig.station.sh(f"tr '\\0' ' ' < /proc/{show.get('MainPID', '0')}/cmdline", check=False).stdout
    link = rig.station.sh("readlink /opt/qrgate/current", check=False).stdout.strip()
    return f"{show.get('ActiveState')}/{show.get('SubState')} {link} {cmd.split(' ')[0]}"


def scan_counts(rig, name: str, number: str) -> bool:
    """A new person passes: accepted by the running release and stored once at the server."""
    rig.server.sh(f"sudo -u qrgate {VENV}/python -c {shlex.quote(MORE_PEOPLE)} {name} {number}")
    images = rig.server.root / "var/tmp/rig-images"
    line = rig.show_image(images / f"{name}.png", f"{name}.png", timeout=90)
    accepted = line.startswith("recorded seq")
    rig.summary["scans_shown"] += accepted
    rig.summary["scans_stored"] = rig.wait_stored(rig.summary["scans_shown"], 90)
    return accepted and rig.summary["scans_stored"] == rig.summary["scans_shown"]


def check_updates(rig, guide_step) -> None:
    started = time.monotonic()
    server = rig.server
    guide_step(server, "operator.md", "release-init", rig.words, timeout=300)
    guide_step(server, "operator.md", "release-build", rig.words, timeout=1800)
    kept = wait_status(rig, "0.2.0", ("kept", "rolled_back", "refused", "failed"), 600)
    notice = rig.station.sh("cat /run/qrgate/release-notice 2>/dev/null", check=False).stdout.strip()
    seen = server_view(rig)
    where = running_release(rig)
    rig.summary["update_kept"] = rig.check(
        "release 0.2.0 announced, installed beside 0.1.0, switched to and kept",
        kept.get("state") == "kept" and "releases/0.2.0" in where and where.startswith("active/running")
        and seen.get("fw") == "0.2.0" and (seen.get("update") or [None])[0] == "kept",
        f"notice {notice!r}; status {kept}; running {where}; server {seen}")
    rig.check("a check-in under 0.2.0 is stored", scan_counts(rig, "upd-1", "079190000201"))
    # Kept for later: the view of the releases as it is now, to be replayed once stale.
    server.sh(f"cp {SERVED}/metadata/timestamp.json /root/replay-timestamp.json")

    # A broken 0.3.0: its station exits at start. Nobody touches the station.
    server.sh("rm -rf /root/qrgate-broken && cp -a /root/qrgate /root/qrgate-broken && "
              f"python3 -c {shlex.quote(BREAK_AT_START)}")
    release(rig, "0.3.0", "/root/qrgate-broken")
    back = wait_status(rig, "0.3.0", ("rolled_back", "kept", "refused", "failed"), 600)
    wait_edge_active(rig, 60)
    seen = server_view(rig)
    where = running_release(rig)
    rig.summary["update_rolled_back"] = rig.check(
        "a broken 0.3.0 is rolled back by the station itself, and says why",
        back.get("state") == "rolled_back" and "not READY" in back.get("reason", "")
        and "releases/0.2.0" in where and (seen.get("update") or [None])[0] == "rolled_back",
        f"status {back}; running {where}; server {seen}")
    stopped = wave(rig, "0.3.0")
    rig.summary["wave_stopped"] = rig.check(
        "the broken release's wave stopped by itself (1 of 1 station rolled it back)",
        stopped.get("state") == "stopped" and stopped.get("counts", {}).get("rolled_back") == 1, str(stopped))
    rig.check("a check-in after the rollback is stored", scan_counts(rig, "upd-2", "079190000202"))

    # A frozen view: the timestamp is left to expire. The station refuses it, changes nothing.
    server.sh(f"sudo -u qrgate {VENV}/qrgate-release timestamp --server-config {SERVER_CONFIG} --expires 1s")
    time.sleep(2)  # the timestamp's one second of validity has to pass
    rig.station.sh("systemctl start qrgate-update.service", check=False, timeout=300)
    refused = status(rig)
    rig.summary["update_expired_refused"] = rig.check(
        "an expired timestamp is refused with a clear status",
        refused.get("state") == "refused" and refused.get("refusal") == "expired"
        and "releases/0.2.0" in running_release(rig), str(refused))
    server.sh(f"sudo -u qrgate {VENV}/qrgate-release timestamp --server-config {SERVER_CONFIG}")
    refusals_and_silence(rig)
    power_cuts_during_updates(rig, rig.power_cuts)
    rig.summary["updates_s"] = round(time.monotonic() - started, 1)


def refusals_and_silence(rig) -> None:
    """A replayed older view of the releases and a changed release file are refused with
    a clear status; the same release, once whole, starts but never delivers: rolled back."""
    server = rig.server
    # The view saved after 0.2.0 was kept, served again: older than what the station trusts.
    server.sh(f"cp {SERVED}/metadata/timestamp.json /root/current-timestamp.json && "
              f"install -o qrgate -g qrgate -m 0644 /root/replay-timestamp.json {SERVED}/metadata/timestamp.json")
    rig.station.sh("systemctl start qrgate-update.service", check=False, timeout=300)
    replayed = status(rig)
    rig.summary["update_replay_refused"] = rig.check(
        "a replayed older view of the releases is refused as a rollback",
        replayed.get("state") == "refused" and replayed.get("refusal") == "rollback"
        and "releases/0.2.0" in running_release(rig), str(replayed))
    server.sh(f"install -o qrgate -g qrgate -m 0644 /root/current-timestamp.json {SERVED}/metadata/timestamp.json && "
              f"sudo -u qrgate {VENV}/qrgate-release timestamp --server-config {SERVER_CONFIG}")

    # 0.3.5: heartbeats to a topic the broker refuses. Its file is changed on the server first.
    server.sh("rm -rf /root/qrgate-silent && cp -a /root/qrgate /root/qrgate-silent && "
              f"python3 -c {shlex.quote(SILENT)} && grep -q '/silent\"' /root/qrgate-silent/qrgate/protocol.py")
    build_and_publish(rig, "0.3.5", "/root/qrgate-silent")
    target = server.sh(f"ls {SERVED}/targets/ | grep 'qrgate-0.3.5-' | head -1").stdout.strip()
    server.sh(f"cp {SERVED}/targets/{target} /root/whole-target && "
              f"printf 'X' | dd of={SERVED}/targets/{target} bs=1 seek=4096 conv=notrunc status=none")
    start_wave(rig, "0.3.5")
    changed = wait_status(rig, "0.3.5", ("refused", "kept", "rolled_back", "failed"), 300)
    rig.summary["update_bad_hash_refused"] = rig.check(
        "a release file changed on the server is refused (its hash is not the signed one)",
        changed.get("state") == "refused" and changed.get("refusal") == "bad_hash"
        and "releases/0.2.0" in running_release(rig), str(changed))
    server.sh(f"install -o qrgate -g qrgate -m 0644 /root/whole-target {SERVED}/targets/{target}")
    start_wave(rig, "0.3.5")
    silent = wait_status(rig, "0.3.5", ("rolled_back", "kept", "failed"), 600)
    wait_edge_active(rig, 60)
    rig.summary["update_silent_rolled_back"] = rig.check(
        "a release that starts but never delivers is rolled back by the station itself",
        silent.get("state") == "rolled_back" and silent.get("cause") in ("no_heartbeat", "restarted")
        and "releases/0.2.0" in running_release(rig), str(silent))


def power_cuts_during_updates(rig, times: int, seed: int | None = None) -> None:
    """Pull the plug at a random moment of an update (download, unpack, switch, first
    start), ``times`` times: the station must always boot into a release that works."""
    chance = random.Random(seed)
    results = []
    for i in range(times):
        version = f"0.4.{i}"
        before = status(rig).get("n", 0)
        release(rig, version)
        # The notice starts the updater. Cut in turn while it installs, while the new
        # release is on trial, and at a random moment of the first 60 s.
        aim = ("installing", "trying", None)[i % 3]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            now = status(rig)
            if now.get("n", 0) != before and (aim is None or now.get("state") == aim):
                break
            time.sleep(0.2)  # polling the station's status file, bounded by the deadline
        else:
            rig.note(f"the updater did not reach {aim or 'work'} on {version} within 120 s: {status(rig)}")
        delay = chance.uniform(0, 3) if aim else chance.uniform(0, 60)
        time.sleep(delay)  # the random moment of the cut
        phase = status(rig).get("state", "?")
        rig.station.power_cut()
        rig.station.boot(180)
        rig.mark_clock_synchronised()
        # After the boot the updater finishes a trial or rollback at once, and a download
        # or install the cut stopped starts again when the retained notice arrives.
        final = wait_status(rig, version, ("kept", "rolled_back"), 420)
        wait_edge_active(rig, 90)
        where = running_release(rig)
        counted = scan_counts(rig, f"cut-{i}", f"07919000030{i}")
        ok = final.get("state") in ("kept", "rolled_back") and where.startswith("active/running") and counted
        results.append(ok)
        rig.check(f"power cut {i + 1} during an update: the station boots into a working release",
                  ok, f"cut {delay:.1f} s after {aim or 'the start'} (updater {phase}); then {final.get('state')} {final.get('version')} "
                      f"{final.get('reason', '')}{' (waited for ' + final['waited_for'] + ')' if 'waited_for' in final else ''}; "
                      f"running {where}; a check-in stored: {counted}")
    rig.summary["update_power_cuts_ok"] = bool(results) and all(results)
