"""The station's updater without the boot rig: real TUF metadata signed with real keys in
a temporary folder, served by a real local HTTP server; real venvs made by the updater;
systemd and the server's answers stood in for at their boundary (the boot rig,
tests/test_boot_rig.py, runs the same code against the real unit and server)."""

from __future__ import annotations

import datetime as dt
import functools
import http.server
import io
import json
import shutil
import tarfile
import threading
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from edge.update.health import Sample
from edge.update.layout import CURRENT, GOOD, Layout, write_json
from edge.update.settings import UpdateSection, UpdateSettings
from edge.update.updater import Updater
from edge.update.verify import ReleaseChecker, UpdateRefused
from provisioning.release_repo import ReleaseRepository, key_path, load_key_file

pytestmark = pytest.mark.timeout(180)


# --- a release repository and its server ---

def tiny_wheel(version: str) -> tuple[str, bytes]:
    """A real, installable wheel named qrgate at ``version`` (a stand-in for the project's)."""
    name = f"qrgate-{version}-py3-none-any.whl"
    buf = io.BytesIO()
    info = f"qrgate-{version}.dist-info"
    with zipfile.ZipFile(buf, "w") as zf:
        zf.writestr("qrgate_stub/__init__.py", f"VERSION = {version!r}\n")
        zf.writestr(f"{info}/METADATA", f"Metadata-Version: 2.1\nName: qrgate\nVersion: {version}\n"
                                        "Provides-Extra: pi\n")
        zf.writestr(f"{info}/WHEEL", "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n")
        zf.writestr(f"{info}/RECORD", "")
    return name, buf.getvalue()


def release_bundle(path: Path, version: str, arch: str = "amd64") -> Path:
    import hashlib

    wheel_name, wheel = tiny_wheel(version)
    src = io.BytesIO()
    with tarfile.open(fileobj=src, mode="w:gz") as tar:
        data = f'[project]\nname = "qrgate"\nversion = "{version}"\n'.encode()
        info = tarfile.TarInfo("src/pyproject.toml")
        info.size = len(data)
        tar.addfile(info, io.BytesIO(data))
    files = {f"wheels/{wheel_name}": wheel, "src.tar.gz": src.getvalue()}
    manifest = {"format": 1, "version": version, "arch": arch, "python": "3.11",
                "requirement": f"qrgate=={version}",
                "files": {name: hashlib.sha256(body).hexdigest() for name, body in files.items()}}
    with tarfile.open(path, "w") as tar:
        for name, body in {"manifest.json": json.dumps(manifest).encode(), **files}.items():
            info = tarfile.TarInfo(name)
            info.size = len(body)
            tar.addfile(info, io.BytesIO(body))
    return path


@dataclass
class Releases:
    root: Path
    repo: ReleaseRepository
    keys: Path
    root_keys: Path
    url: str
    served: Path  # what the HTTP server serves (a copy an attacker may tamper with)

    def signers(self):
        return {role: load_key_file(key_path(self.keys, role)) for role in ("targets", "snapshot", "timestamp")}

    def add(self, version: str, arch: str = "amd64") -> None:
        bundle = release_bundle(self.root / f"{version}.tar", version, arch)
        self.repo.add_target(bundle, f"qrgate-{version}-{arch}.tar", {"version": version, "arch": arch},
                             self.signers())
        self.publish()

    def publish(self) -> None:
        shutil.rmtree(self.served, ignore_errors=True)
        shutil.copytree(self.repo.folder, self.served)


class _Handler(http.server.SimpleHTTPRequestHandler):
    def translate_path(self, path):  # /releases/metadata/X -> <served>/metadata/X
        return super().translate_path(path.removeprefix("/releases"))

    def log_message(self, *args):
        pass


@pytest.fixture
def releases(tmp_path):
    repo = ReleaseRepository(tmp_path / "repo")
    repo.init(tmp_path / "keys", tmp_path / "offline")
    served = tmp_path / "served"
    handler = functools.partial(_Handler, directory=str(served))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    r = Releases(tmp_path, repo, tmp_path / "keys", tmp_path / "offline", f"http://127.0.0.1:{server.server_port}",
                 served)
    r.publish()
    yield r
    server.shutdown()
    server.server_close()


def checker(releases: Releases, station: Path) -> ReleaseChecker:
    return ReleaseChecker(releases.repo.metadata_dir / "1.root.json", station / "metadata", station / "downloads",
                          releases.url, arch="amd64")


# --- verification ---

def test_the_newest_release_for_the_station_is_offered_and_its_file_verified(releases, tmp_path):
    releases.add("0.2.0")
    releases.add("0.2.0", arch="arm64")
    releases.add("0.3.0", arch="arm64")  # not for this station's architecture
    offer = checker(releases, tmp_path / "st").newest("0.1.0")
    assert (offer.version, offer.arch) == ("0.2.0", "amd64")
    path = checker(releases, tmp_path / "st").download(offer)
    assert json.loads(tarfile.open(path).extractfile("manifest.json").read())["version"] == "0.2.0"
    assert checker(releases, tmp_path / "st").newest("0.2.0") is None


def test_a_replayed_older_view_of_the_releases_is_refused_as_rollback(releases, tmp_path):
    releases.add("0.2.0")
    old = tmp_path / "old-view"
    shutil.copytree(releases.served, old)
    releases.add("0.3.0")
    checker(releases, tmp_path / "st").newest("0.1.0")  # the station has seen 0.3.0's metadata
    shutil.rmtree(releases.served)
    shutil.copytree(old, releases.served)  # a mirror replays the older, still valid, view
    with pytest.raises(UpdateRefused) as refused:
        checker(releases, tmp_path / "st").newest("0.1.0")
    assert refused.value.code == "rollback"


def test_an_expired_timestamp_is_refused(releases, tmp_path):
    releases.add("0.2.0")
    releases.repo.sign_timestamp(releases.signers()["timestamp"], expires=dt.timedelta(seconds=-60))
    releases.publish()
    with pytest.raises(UpdateRefused) as refused:
        checker(releases, tmp_path / "st").newest("0.1.0")
    assert refused.value.code == "expired"
    assert "timestamp" in refused.value.detail


def test_a_snapshot_that_is_not_the_one_the_timestamp_names_is_refused_as_mixed(releases, tmp_path):
    releases.add("0.2.0")
    releases.add("0.3.0")
    snapshot = releases.repo.latest("snapshot").signed.version
    meta = releases.served / "metadata"
    shutil.copyfile(meta / f"{snapshot - 1}.snapshot.json", meta / f"{snapshot}.snapshot.json")
    with pytest.raises(UpdateRefused) as refused:
        checker(releases, tmp_path / "st").newest("0.1.0")
    assert refused.value.code == "mixed"


def test_a_release_file_whose_hash_differs_is_refused_and_not_kept(releases, tmp_path):
    releases.add("0.2.0")
    for target in (releases.served / "targets").iterdir():
        target.write_bytes(target.read_bytes()[:-1] + b"!")  # the same length, one byte changed
    c = checker(releases, tmp_path / "st")
    offer = c.newest("0.1.0")
    with pytest.raises(UpdateRefused) as refused:
        c.download(offer)
    assert refused.value.code == "bad_hash"
    assert not list((tmp_path / "st" / "downloads").iterdir())


def test_a_release_signed_by_a_revoked_targets_key_is_refused(releases, tmp_path):
    releases.add("0.2.0")
    checker(releases, tmp_path / "st").newest("0.1.0")
    old_targets = releases.signers()["targets"]
    from provisioning.release_cli import main as release_main

    assert release_main(["rotate-key", "--repo", str(releases.repo.folder), "--role", "targets",
                         "--keys", str(releases.keys), "--root-keys", str(releases.root_keys)]) == 0
    releases.repo.sign_timestamp(releases.signers()["timestamp"])  # as `qrgate-release publish` does
    releases.publish()
    assert checker(releases, tmp_path / "st").newest("0.1.0").version == "0.2.0"  # the new key is trusted
    # Whoever kept the old key signs a release of their own: every station refuses it.
    targets = releases.repo.latest("targets")
    targets.signed.version += 1
    targets.sign(old_targets)
    releases.repo._write(targets)
    releases.repo._snapshot_and_timestamp(releases.signers()["snapshot"], releases.signers()["timestamp"])
    releases.publish()
    with pytest.raises(UpdateRefused) as refused:
        checker(releases, tmp_path / "st").newest("0.1.0")
    assert refused.value.code == "bad_signature"


def test_the_release_tool_will_not_sign_with_a_key_the_root_no_longer_trusts(releases):
    old_targets = releases.signers()["targets"]
    from provisioning.release_cli import main as release_main

    release_main(["rotate-key", "--repo", str(releases.repo.folder), "--role", "targets",
                  "--keys", str(releases.keys), "--root-keys", str(releases.root_keys)])
    bundle = release_bundle(releases.root / "x.tar", "0.4.0")
    with pytest.raises(ValueError, match="not one root.json trusts"):
        releases.repo.add_target(bundle, "qrgate-0.4.0-amd64.tar", {"version": "0.4.0", "arch": "amd64"},
                                 {**releases.signers(), "targets": old_targets})


# --- installing, switching, keeping, rolling back ---

@dataclass
class FakeStation:
    """systemd and the server as the updater sees them, scripted by the test."""

    layout: Layout
    healthy: set[str] = field(default_factory=set)  # releases that start and deliver
    silent: set[str] = field(default_factory=set)  # releases that start but never deliver
    restarts: list[str] = field(default_factory=list)
    now: float = 0.0
    server_ms: int = 1_000
    reports: list[dict] = field(default_factory=list)

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += seconds
        self.server_ms += int(seconds * 1000)

    def restart(self, unit: str) -> None:
        self.restarts.append(self.layout.current())

    def sample(self, unit: str, version: str, at: float) -> Sample:
        running = self.layout.current()
        up = running in self.healthy | self.silent
        return Sample(at=at, state="active/running" if up else "activating/auto-restart",
                      in_release=up and running == version, restarts=0 if up else len(self.restarts),
                      watchdog_fed=up)

    def report(self, status: dict) -> dict:
        self.reports.append(status)
        running = self.layout.current()
        delivering = running in self.healthy
        return {"server_ms": self.server_ms, "fw": running if delivering else "0.1.0",
                "last_seen_ms": self.server_ms, "checkins": 0}


def installed_station(tmp_path: Path, releases: Releases, version: str = "0.1.0") -> tuple[Updater, FakeStation]:
    from edge.update.install import install_release

    prefix = tmp_path / "opt"
    layout = Layout(prefix)
    install_release(release_bundle(tmp_path / f"first-{version}.tar", version), layout, version, "amd64",
                    tmp_path / "install.log")
    layout.point(CURRENT, version)
    layout.point(GOOD, version)
    fake = FakeStation(layout, healthy={version})
    section = UpdateSection(prefix=str(prefix), state_dir=str(tmp_path / "state"), arch="amd64", ready_s=20,
                            trial_s=60, steady_s=10, poll_s=1, root_file=str(releases.repo.metadata_dir / "1.root.json"),
                            server_url=releases.url, notice_file=str(tmp_path / "release-notice"))
    updater = Updater(UpdateSettings(tmp_path / "update.toml", section), clock=fake.clock, sleep=fake.sleep,
                      sample=fake.sample, restart=fake.restart, reporter=fake.report)
    return updater, fake


def test_a_healthy_release_is_installed_beside_the_running_one_switched_to_and_kept(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.2.0")
    fake.healthy.add("0.2.0")
    status = updater.run_once()
    assert status["state"] == "kept", status
    assert (updater.layout.current(), updater.layout.good()) == ("0.2.0", "0.2.0")
    assert fake.restarts == ["0.2.0"]
    venv_python = tmp_path / "opt/releases/0.2.0/venv/bin/python"
    import subprocess

    out = subprocess.run([str(venv_python), "-c", "import qrgate_stub; print(qrgate_stub.VERSION)"],
                         capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "0.2.0"
    assert (tmp_path / "opt/releases/0.1.0/release.json").exists()  # the previous one stays for a rollback
    assert "heartbeat acked" in status["reason"]
    assert not updater.journal_path.exists()


def test_a_release_that_never_comes_up_is_rolled_back_by_itself_and_not_tried_again(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.3.0")  # crashes at start: never READY
    status = updater.run_once()
    assert status["state"] == "rolled_back"
    assert "not READY within 20 s" in status["reason"] and status["cause"] == "not_ready"
    assert (updater.layout.current(), updater.layout.good()) == ("0.1.0", "0.1.0")
    assert fake.restarts == ["0.3.0", "0.1.0"]
    assert [r["state"] for r in fake.reports][-1] == "rolled_back"  # the fleet page hears why
    again = updater.run_once()  # the notice again, after the restart: nothing to do
    assert fake.restarts == ["0.3.0", "0.1.0"]
    assert (again["state"], again["version"]) == ("rolled_back", "0.3.0")  # the fleet page still says why
    assert fake.reports[-1]["state"] == "rolled_back"


def test_a_release_that_starts_but_never_delivers_is_rolled_back(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.3.1")
    fake.silent.add("0.3.1")
    status = updater.run_once()
    assert status["state"] == "rolled_back"
    assert status["reason"] == "not healthy within 60 s: no heartbeat of this version reached the server"
    assert status["cause"] == "no_heartbeat"
    assert updater.layout.current() == "0.1.0"


def test_a_trial_cut_by_a_power_cut_is_judged_again_at_the_next_run(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.2.0")
    fake.healthy.add("0.2.0")
    checker_ = updater.checker()
    offer = checker_.newest("0.1.0")
    from edge.update.install import install_release

    install_release(checker_.download(offer), updater.layout, "0.2.0", "amd64", tmp_path / "i.log")
    # What switch_and_try had done when the power went: journal written, link switched.
    write_json(updater.journal_path, {"phase": "trying", "version": "0.2.0", "previous": "0.1.0", "attempts": 1,
                                      "server_ms": 0, "checkins": 0})
    updater.layout.point(CURRENT, "0.2.0")
    status = updater.run_once()
    assert status["state"] == "kept" and updater.layout.good() == "0.2.0"


def test_a_rollback_cut_by_a_power_cut_is_finished_at_the_next_run(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.3.0")
    updater.run_once()  # rolled back; now pretend the cut came between journal and link
    write_json(updater.journal_path, {"phase": "rolling_back", "version": "0.3.0", "previous": "0.1.0",
                                      "reason": "not READY"})
    updater.layout.point(CURRENT, "0.3.0")
    status = updater.run_once()
    assert status["state"] == "rolled_back" and updater.layout.current() == "0.1.0"


def test_an_install_cut_short_is_cleaned_and_never_switched_to(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    half = updater.layout.folder("0.2.0")
    (half / "venv").mkdir(parents=True)  # no release.json: cut during the install
    with pytest.raises(FileNotFoundError):
        updater.layout.point(CURRENT, "0.2.0")
    assert updater.layout.prune(1, lambda v: v) == ["0.2.0"]
    assert updater.layout.current() == "0.1.0"


def test_a_refusal_leaves_the_running_release_alone_and_says_why(releases, tmp_path):
    updater, fake = installed_station(tmp_path, releases)
    releases.add("0.2.0")
    fake.healthy.add("0.2.0")
    releases.repo.sign_timestamp(releases.signers()["timestamp"], expires=dt.timedelta(seconds=-1))
    releases.publish()
    status = updater.run_once()
    assert status["state"] == "refused" and status["refusal"] == "expired"
    assert updater.layout.current() == "0.1.0" and fake.restarts == []
    assert fake.reports[-1]["state"] == "refused"


def test_a_notice_that_arrives_while_a_check_runs_makes_the_updater_look_again(releases, tmp_path):
    """systemd starts the updater once for a notice that comes while it runs (at boot, the
    first check may find nothing just before the notice): the run looks again itself."""
    updater, fake = installed_station(tmp_path, releases)
    notice = tmp_path / "release-notice"
    fake.healthy.add("0.2.0")
    answer = fake.report

    def report(status: dict) -> dict:
        if status.get("reason") == "no newer release" and not notice.exists():
            releases.add("0.2.0")  # published, and its notice heard, while the check ends
            notice.write_text("0.2.0\n")
        return answer(status)

    fake.report = report
    updater._reporter = report
    status = updater.run()
    assert status["state"] == "kept" and updater.layout.current() == "0.2.0"
    assert updater.run()["state"] == "kept" and fake.restarts == ["0.2.0"]  # nothing new: one round
