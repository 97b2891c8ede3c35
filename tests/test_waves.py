"""Release waves (docs/updates.md, "Waves"): a published release reaches only the stations
its wave names (a group, a percentage), a station back after a long absence takes the
newest release its waves allow, and a wave stops by itself when too many of its stations
fail. The server is the real app served over HTTP, the stations' updaters the real
Updater asking it with signed reports and verifying the TUF metadata it serves; the
operator works the releases page as a browser posts it."""

from __future__ import annotations

import json
import re
import urllib.request

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import serve_app
from edge.update.layout import CURRENT, GOOD, Layout
from edge.update.settings import UpdateSection, UpdateSettings
from edge.update.updater import Updater
from qrgate import protocol
from qrgate.updates import sign_report
from server.ingest.fleet import Fleet
from server.releases.service import attach
from server.releases.waves import bucket
from test_update import FakeStation, release_bundle, releases  # noqa: F401  (the fixture)
from test_web_support import Site

pytestmark = pytest.mark.timeout(300)
OPERATOR = "0912000111"
STATIONS = 20


@pytest.fixture
def fleet(tmp_path, releases):  # noqa: F811
    site = Site.create(tmp_path)
    venue = site.storage.add_venue("Nhà máy A - Cổng 1")
    keys = {}
    for i in range(STATIONS):
        keys[f"gate-{i}"] = Ed25519PrivateKey.generate()
        site.storage.add_station(f"gate-{i}", protocol.public_key_to_text(keys[f"gate-{i}"].public_key()), venue)
    attach(site.app, releases.served, site.storage, site.clock)
    with serve_app(site.app, "release server start") as url:
        yield site, keys, url, releases


def station(tmp_path, fleet_, station_id: str, version: str = "0.1.0") -> tuple[Updater, FakeStation]:
    """A station running ``version`` whose updater asks the served app, signing with its key."""
    from edge.update.install import install_release

    site, keys, url, releases_ = fleet_
    prefix = tmp_path / station_id
    layout = Layout(prefix)
    install_release(release_bundle(tmp_path / f"{station_id}-{version}.tar", version), layout, version, "amd64",
                    tmp_path / f"{station_id}-install.log")
    layout.point(CURRENT, version)
    layout.point(GOOD, version)
    fake = FakeStation(layout, healthy={version})
    n = [0]

    def report(status: dict) -> dict | None:
        fake.reports.append(status)
        n[0] += 1
        update = {k: status.get(k, "") for k in ("state", "version", "reason", "running", "good", "refusal", "cause")}
        body = sign_report(keys[station_id], {"v": 1, "station_id": station_id, "n": n[0], "update": update})
        request = urllib.request.Request(f"{url}/api/releases/report", data=json.dumps(body).encode(),
                                         headers={"Content-Type": "application/json"}, method="POST")
        with urllib.request.urlopen(request, timeout=15) as answer:
            seen = json.loads(answer.read())
        running = layout.current()
        if running in fake.healthy:  # a healthy release's heartbeat has reached the server
            Fleet(site.storage).record_status(station_id, protocol.canonical_json({"online": True, "fw": running}))
            seen = {**seen, "fw": running, "last_seen_ms": seen["server_ms"] + int(fake.now * 1000) + 1}
        return seen

    section = UpdateSection(prefix=str(prefix), state_dir=str(tmp_path / f"{station_id}-state"), arch="amd64",
                            ready_s=20, trial_s=60, steady_s=10, poll_s=1, server_url=url,
                            root_file=str(releases_.repo.metadata_dir / "1.root.json"),
                            notice_file=str(tmp_path / "no-notice"))
    updater = Updater(UpdateSettings(tmp_path / "update.toml", section), clock=fake.clock, sleep=fake.sleep,
                      sample=fake.sample, restart=fake.restart, reporter=report)
    return updater, fake


def operator(site: Site):
    site.services.accounts.set_operator(OPERATOR)
    return site.visitor().login(OPERATOR)


def test_a_published_release_waits_for_its_wave_and_reaches_only_the_stations_it_names(fleet, tmp_path):
    site, _, _, releases_ = fleet
    releases_.add("0.2.0")
    updater, fake = station(tmp_path, fleet, "gate-3")
    fake.healthy.add("0.2.0")
    held = updater.run_once()
    assert held["state"] == "idle" and updater.layout.current() == "0.1.0" and fake.restarts == []
    assert "waves" in held["reason"]

    person = operator(site)
    page = person.http.get("/fleet/releases")
    assert page.status_code == 200 and "Chưa phát cho trạm nào" in page.text
    # A wave to the group "pilot" only; gate-3 is put in it from the same page.
    assert person.form("/fleet/gate-3/group", {"group": "pilot"}).status_code == 303
    started = person.form("/fleet/releases/0.2.0/wave", {"percent": "0", "groups": "pilot", "stop_at": "10"})
    assert started.status_code == 303
    other, other_fake = station(tmp_path, fleet, "gate-4")  # in no group: 0 % of the rest
    other_fake.healthy.add("0.2.0")
    assert other.run_once()["state"] == "idle" and other.layout.current() == "0.1.0"
    kept = updater.run_once()
    assert kept["state"] == "kept" and updater.layout.current() == "0.2.0"

    page = person.http.get("/fleet/releases").text
    section = page[page.index('data-version="0.2.0"'):]
    assert "Đang phát" in section and "1 trạm trong đợt" in section
    assert re.search(r'data-count="kept"><strong>1</strong> Đã cập nhật', section)
    audit = [r["action"] for r in site.storage.sql.dicts("SELECT action FROM audit_log")]
    assert "qrgate.release.wave" in audit and "qrgate.station.group" in audit


def test_a_percentage_takes_the_stations_below_it_and_widening_only_adds_stations(fleet):
    site, _, _, releases_ = fleet
    releases_.add("0.2.0")
    waves = site.app.state.releases.waves
    waves.start("0.2.0", 25, [])
    first = {f"gate-{i}" for i in range(STATIONS) if waves.allowed(f"gate-{i}") == ["0.2.0"]}
    assert first == {f"gate-{i}" for i in range(STATIONS) if bucket("0.2.0", f"gate-{i}") < 25}
    waves.start("0.2.0", 60, [])
    wider = {f"gate-{i}" for i in range(STATIONS) if waves.allowed(f"gate-{i}") == ["0.2.0"]}
    assert first < wider and waves.wave("0.2.0")["targeted"] == len(wider)


def test_a_station_back_after_a_long_absence_takes_the_newest_release_its_waves_allow(fleet, tmp_path):
    site, _, _, releases_ = fleet
    waves = site.app.state.releases.waves
    for version in ("0.2.0", "0.3.0", "0.4.0"):
        releases_.add(version)
        waves.start(version, 100, [])
    releases_.add("0.5.0")  # published, no wave yet
    bus, fake = station(tmp_path, fleet, "gate-7")
    fake.healthy |= {"0.2.0", "0.3.0", "0.4.0", "0.5.0"}
    status = bus.run_once()
    assert status["state"] == "kept" and status["version"] == "0.4.0"
    assert fake.restarts == ["0.4.0"]  # straight there, not through 0.2.0 and 0.3.0


def test_a_wave_stops_by_itself_when_its_stations_fail_and_the_rest_never_get_it(fleet, tmp_path):
    site, keys, _, releases_ = fleet
    waves = site.app.state.releases.waves
    releases_.add("0.2.0")
    waves.start("0.2.0", 100, [], stop_at=10)  # 20 stations: the second failure stops it
    failing = []
    for name in ("gate-1", "gate-2"):
        updater, fake = station(tmp_path, fleet, name)  # 0.2.0 never comes up on these
        assert updater.run_once()["state"] == "rolled_back"
        failing.append(updater)
    wave = waves.wave("0.2.0")
    assert wave["state"] == "stopped" and wave["counts"]["rolled_back"] == 2
    assert "2 of 20 station(s)" in wave["reason"]
    late, late_fake = station(tmp_path, fleet, "gate-9")
    late_fake.healthy.add("0.2.0")
    assert late.run_once()["state"] == "idle" and late.layout.current() == "0.1.0"
    person = operator(site)
    page = person.http.get("/fleet/releases").text
    assert "Đợt tự dừng: 2 trên 20 trạm lỗi hoặc phải quay lại bản cũ (ngưỡng 10%)." in page
    # The operator resumes it (the failures were the stations' own, say): the stations
    # that failed say so again at their next check, which does not stop it again.
    site.clock.advance(3600)
    assert person.form("/fleet/releases/0.2.0/resume", {}).status_code == 303
    for updater in failing:
        assert updater.run_once()["state"] == "rolled_back"  # its last word, repeated
    assert waves.wave("0.2.0")["state"] == "rolling"
    assert late.run_once()["state"] == "kept"


def test_the_releases_page_refuses_bad_waves_in_words_and_only_operators_see_it(fleet):
    site, _, _, releases_ = fleet
    releases_.add("0.2.0")
    person = operator(site)
    for form, words in (({"percent": "120"}, "tỉ lệ là số nguyên từ 0 đến 100"),
                        ({"percent": "0", "groups": ""}, "hãy chọn tỉ lệ lớn hơn 0 hoặc ít nhất một nhóm"),
                        ({"percent": "10", "groups": "Đội xe; rm -rf"}, "tên nhóm chỉ gồm chữ thường không dấu")):
        answer = person.form("/fleet/releases/0.2.0/wave", form)
        assert answer.status_code == 400 and words in answer.text, form
    assert person.form("/fleet/releases/9.9.9/wave", {"percent": "10"}).status_code == 400
    assert site.app.state.releases.waves.view() == []
    owner = site.visitor().login("0912000222")
    assert owner.http.get("/fleet/releases").status_code == 404
    assert owner.form("/fleet/releases/0.2.0/wave", {"percent": "100"}).status_code == 404
    assert person.form("/fleet/releases/0.2.0/wave", {"percent": "10"}, csrf=False).status_code in (400, 403)
    assert site.app.state.releases.waves.view() == []


def test_releases_served_before_the_server_had_waves_still_reach_every_station(tmp_path, releases):  # noqa: F811
    site = Site.create(tmp_path)
    venue = site.storage.add_venue("Chợ Đông Ba")
    site.storage.add_station("gate-1", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    releases.add("0.2.0")  # published by the older server
    attach(site.app, releases.served, site.storage, site.clock)  # the upgraded one starts
    wave = site.app.state.releases.waves.wave("0.2.0")
    assert (wave["state"], wave["percent"], wave["reason"]) == ("rolling", 100, "published before waves")
    assert site.app.state.releases.waves.allowed("gate-1") == ["0.2.0"]
    releases.add("0.3.0")  # the first release after the upgrade waits for its wave
    assert site.app.state.releases.waves.allowed("gate-1") == ["0.2.0"]
