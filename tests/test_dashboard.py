"""Area dashboards: counts against a direct computation on generated check-ins (clock
corrections, retention deletions, local day boundaries), the roll-up's life, who may see
which area, and hostile input."""

from __future__ import annotations

import datetime as dt
import random
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from urllib.parse import quote
from zoneinfo import ZoneInfo

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ON_POSTGRESQL, new_storage
from qrgate import protocol
from server.accounts.accounts import Accounts
from server.areas.areas import AreaDirectory
from server.ingest.bridge import Bridge
from server.reports.dashboard import DashboardError, UnknownArea, area_dashboard, venue_dashboard
from server.reports.rollup import ensure_rollup, rollup_offset_s
from server.accounts.sms import DevSmsSender
from server.checkins.tracing import delete_older_than
from server.venues.venues import VenueDirectory, VenueInput
from test_web_support import Site

pytestmark = pytest.mark.timeout(120)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
DAY_MS = 86_400_000
NOW = 1_790_000_000.0  # 2026-09-21 21:13:20 in Ho Chi Minh City
TODAY = dt.datetime.fromtimestamp(NOW, TZ).date()
# Communes/wards of the 2025 map in three provinces (two of them in Ho Chi Minh City).
WARDS = [("79", "", "26743"), ("79", "", "26740"), ("01", "", "00004"), ("48", "", "20242")]
HOSTILE_NAME = "<img src=x onerror=alert(1)> =cmd|' /C calc'!A0"


def local_midnight_ms(day: dt.date, tz: ZoneInfo = TZ) -> int:
    return int(dt.datetime.combine(day, dt.time(), tz).timestamp() * 1000)


@dataclass
class Station:
    """A station with a real Ed25519 key that sends signed records through the bridge."""

    station_id: str
    venue_id: int
    key: Ed25519PrivateKey = field(default_factory=Ed25519PrivateKey.generate)
    seq: int = 0

    def checkin(self, ts: int, *, sync: bool = True, mono: int = 0, boot: str = "boot-1", person: int = 0) -> bytes:
        self.seq += 1
        return protocol.canonical_json(protocol.sign_record({
            "v": 1, "type": "checkin", "st": self.station_id, "seq": self.seq, "ts": ts, "mono": mono, "boot": boot,
            "sync": sync, "dir": "in" if self.seq % 2 else "out", "kind": "cccd",
            "person": {"id": f"0790{person:08d}", "name": "Nguyễn Văn An", "birth": "1990", "sex": "M"}}, self.key))

    def clock(self, base: int, boot: str = "boot-1") -> bytes:
        self.seq += 1
        return protocol.canonical_json(protocol.sign_record({
            "v": 1, "type": "clock", "st": self.station_id, "seq": self.seq, "ts": base + 1000, "mono": 1000,
            "boot": boot, "sync": True, "base": base}, self.key))


def send(storage, station: Station, records: list[bytes]) -> None:
    bridge = Bridge(storage)
    for i in range(0, len(records), 400):
        ack = bridge.handle(protocol.records_topic(station.station_id), protocol.encode_batch(records[i:i + 400]))
        assert ack is not None and not ack.refused, ack


@dataclass
class World:
    site: Site
    venues: dict[int, tuple[str, str, str]]  # venue id -> (province, district, ward)
    stations: dict[int, Station]

    @property
    def storage(self):
        return self.site.storage

    @property
    def areas(self) -> AreaDirectory:
        return self.site.services.areas


def make_world(tmp_path, venues_per_ward: int = 3, created_days_ago: int = 60) -> World:
    """A site whose venues were registered ``created_days_ago`` days before NOW, one
    station each, the first venue of the first ward named with hostile text."""
    site = Site.create(tmp_path)
    services = site.services
    owner = services.accounts.account_for_phone("0912486419")
    site.clock.now = NOW - created_days_ago * 86400
    venues, stations = {}, {}
    for w, (province, district, ward) in enumerate(WARDS):
        for i in range(venues_per_ward):
            name = HOSTILE_NAME if (w, i) == (0, 0) else f"Cơ sở {w}-{i}"
            venue = services.venues.create(VenueInput(name=name, kind="factory", address="Số 1", province=province,
                                                      district=district, ward=ward), owner)
            venues[venue.id] = (province, district, ward)
            station = Station(f"gate-{venue.id}", venue.id)
            site.storage.add_station(station.station_id, protocol.public_key_to_text(station.key.public_key()),
                                     venue.id)
            stations[venue.id] = station
    # storage.add_venue stamps the real time; these venues were registered back then.
    site.storage.sql.execute("UPDATE venues SET created_ms = ?", [int(site.clock.now * 1000)])
    site.clock.now = NOW
    return World(site, venues, stations)


def generate_checkins(world: World, days: int = 20, per_venue: int = 60, seed: int = 7) -> None:
    """Random scans over the last ``days`` days, many of them right at local midnight,
    with one venue left without any scan."""
    rng = random.Random(seed)
    start = local_midnight_ms(TODAY - dt.timedelta(days=days - 1))
    now_ms = int(NOW * 1000)
    quiet = max(world.venues)  # never scanned: registered, not active
    for venue_id, station in world.stations.items():
        if venue_id == quiet:
            continue
        records = []
        for _ in range(rng.randint(per_venue // 2, per_venue)):
            day = rng.randrange(days)
            midnight = start + day * DAY_MS
            edge = rng.random()
            if edge < 0.2:
                ts = midnight - 1 - rng.randrange(3)  # the last milliseconds of the day before
            elif edge < 0.4:
                ts = midnight + rng.randrange(3)  # the first milliseconds of the day
            else:
                ts = midnight + rng.randrange(DAY_MS)
            records.append(station.checkin(min(ts, now_ms), person=rng.randrange(500)))
        send(world.storage, station, records)


def direct_counts(storage, tz: ZoneInfo = TZ) -> Counter:
    """(venue id, local day) -> scans, straight from the check-ins table."""
    counts: Counter = Counter()
    for venue_id, wall_ms in storage.sql.rows("SELECT venue_id, wall_ms FROM checkins"):
        counts[venue_id, dt.datetime.fromtimestamp(wall_ms / 1000, tz).date()] += 1
    return counts


def expected(world: World, counts: Counter, level: str, code: str | None, since: dt.date, until: dt.date) -> dict:
    """What the dashboard of ``code`` must say, computed from ``counts`` and the venues."""
    index = {"province": 0, "district": 1, "ward": 2}
    inside = {v for v, place in world.venues.items() if code is None or place[index[level]] == code}
    per_venue: Counter = Counter()
    per_day: Counter = Counter()
    active_per_day: defaultdict = defaultdict(set)
    for (venue_id, day), n in counts.items():
        if venue_id in inside and since <= day <= until:
            per_venue[venue_id] += n
            per_day[day] += n
            active_per_day[day].add(venue_id)
    days = [since + dt.timedelta(days=i) for i in range((until - since).days + 1)]
    return {
        "totals": {"venues_registered": len(inside), "venues_with_scans": len(per_venue),
                   "scans": sum(per_venue.values())},
        "days": [{"day": d.isoformat(), "scans": per_day[d], "venues_with_scans": len(active_per_day[d])}
                 for d in days],
        "per_venue": per_venue,
        "inside": inside,
    }


def check_every_level(world: World, counts: Counter, since: dt.date, until: dt.date) -> None:
    checked = 0
    for level, code in [("country", None), ("province", "79"), ("province", "01"), ("province", "48"),
                        ("ward", "26743"), ("ward", "26740"), ("ward", "20242")]:
        want = expected(world, counts, level, code, since, until)
        got = area_dashboard(world.storage, world.areas, code, since, until, TZ)
        assert got["totals"] == want["totals"], (level, code)
        assert got["days"] == want["days"], (level, code)
        # The children add up to the area, and each child is right on its own.
        for key in ("venues_registered", "venues_with_scans", "scans"):
            assert sum(c[key] for c in got["children"]) == want["totals"][key]
        if got["child_level"] == "venue":
            assert {c["venue_id"]: c["scans"] for c in got["children"]} == {
                v: want["per_venue"].get(v, 0) for v in want["inside"]}
        else:
            for child in got["children"]:
                assert child["code"] is not None
                assert child["scans"] == expected(world, counts, got["child_level"], child["code"], since,
                                                  until)["totals"]["scans"]
        checked += want["totals"]["scans"]
    for venue_id in world.venues:
        got = venue_dashboard(world.storage, world.areas, venue_id, since, until, TZ)
        assert got["totals"]["scans"] == sum(n for (v, d), n in counts.items() if v == venue_id and since <= d <= until)
    assert checked > 0  # the comparison compared something


# -- counts ---------------------------------------------------------------------------


def test_counts_match_a_direct_count_at_every_level_and_period(tmp_path):
    world = make_world(tmp_path)
    generate_checkins(world)
    counts = direct_counts(world.storage)
    assert sum(counts.values()) == world.storage.count_checkins() > 300
    for since, until in [(TODAY - dt.timedelta(days=6), TODAY), (TODAY - dt.timedelta(days=29), TODAY),
                         (TODAY - dt.timedelta(days=12), TODAY - dt.timedelta(days=5)), (TODAY, TODAY)]:
        check_every_level(world, counts, since, until)
    country = area_dashboard(world.storage, world.areas, None, TODAY - dt.timedelta(days=29), TODAY, TZ)
    assert country["child_level"] == "province"
    assert [c["code"] for c in country["children"]] == list(world.areas.provinces)
    # The venue that never had a scan is registered but not active.
    assert country["totals"]["venues_with_scans"] == len(world.venues) - 1


def test_a_scan_at_local_midnight_counts_for_the_new_day_and_one_a_millisecond_earlier_for_the_old(tmp_path):
    world = make_world(tmp_path, venues_per_ward=1)
    venue_id = next(iter(world.venues))
    station = world.stations[venue_id]
    day = TODAY - dt.timedelta(days=3)
    midnight = local_midnight_ms(day)
    # Local midnight is 17:00 UTC the day before: a UTC date would put all three on one day.
    assert dt.datetime.fromtimestamp(midnight / 1000, dt.timezone.utc).hour == 17
    send(world.storage, station, [station.checkin(midnight - 1), station.checkin(midnight),
                                  station.checkin(midnight + DAY_MS - 1)])
    got = venue_dashboard(world.storage, world.areas, venue_id, day - dt.timedelta(days=1), day, TZ)
    assert [(d["day"], d["scans"]) for d in got["days"]] == [((day - dt.timedelta(days=1)).isoformat(), 1),
                                                               (day.isoformat(), 2)]


def test_a_clock_correction_moves_scans_to_their_true_day(tmp_path):
    world = make_world(tmp_path, venues_per_ward=1)
    generate_checkins(world, days=10, per_venue=20)
    venue_id = next(iter(world.venues))
    station = world.stations[venue_id]
    # The station booted with its clock at 2020-01-01 and scanned before NTP answered.
    wrong = local_midnight_ms(dt.date(2020, 1, 1)) + 3_600_000
    true_base = local_midnight_ms(TODAY - dt.timedelta(days=2)) - 30 * 60_000  # 23:30 local, two days ago
    send(world.storage, station, [station.checkin(wrong + m, sync=False, mono=m, boot="boot-2")
                                  for m in (0, 20 * 60_000, 40 * 60_000, 50 * 60_000)])
    early = venue_dashboard(world.storage, world.areas, venue_id, dt.date(2020, 1, 1), dt.date(2020, 1, 1), TZ)
    assert early["totals"]["scans"] == 4  # counted on the day the station believed
    before = direct_counts(world.storage)
    send(world.storage, station, [station.clock(true_base, boot="boot-2")])
    counts = direct_counts(world.storage)
    assert counts != before  # the correction moved rows
    # Two of the four fell before local midnight, two after it.
    eve = TODAY - dt.timedelta(days=3)
    assert counts[venue_id, eve] - before[venue_id, eve] == 2
    assert counts[venue_id, eve + dt.timedelta(days=1)] - before[venue_id, eve + dt.timedelta(days=1)] == 2
    moved = venue_dashboard(world.storage, world.areas, venue_id, dt.date(2020, 1, 1), dt.date(2020, 1, 1), TZ)
    assert moved["totals"]["scans"] == 0
    assert world.storage.sql.value("SELECT count(*) FROM dashboard_daily WHERE scans <= 0") == 0
    check_every_level(world, counts, TODAY - dt.timedelta(days=13), TODAY)


def test_a_correction_into_the_utc_month_before_on_the_same_local_day_is_counted_once(tmp_path):
    # 00:00 UTC on the 1st is 07:00 in Vietnam: a correction of a few minutes moves a
    # check-in into the month before (on PostgreSQL another partition, so the UPDATE is
    # carried out as a DELETE and an INSERT) while it stays on the same local day.
    world = make_world(tmp_path, venues_per_ward=1)
    storage = world.storage
    venue_id = next(iter(world.venues))
    station = world.stations[venue_id]
    month_start = int(dt.datetime(2026, 9, 1, tzinfo=dt.timezone.utc).timestamp() * 1000)
    day = dt.date(2026, 9, 1)

    def on_the_day() -> list[int]:
        return [d["scans"] for d in venue_dashboard(storage, world.areas, venue_id, day, day, TZ)["days"]]

    send(storage, station, [station.checkin(month_start + 300_000, sync=False, mono=60_000, boot="boot-7")])
    assert on_the_day() == [1]
    send(storage, station, [station.clock(month_start - 300_000 - 60_000, boot="boot-7")])
    assert storage.sql.value("SELECT wall_ms FROM checkins WHERE venue_id = ?", [venue_id]) == month_start - 300_000
    assert on_the_day() == [1]
    assert direct_counts(storage)[venue_id, day] == 1


def test_checkins_of_a_month_without_a_partition_are_counted_once_when_it_is_made(tmp_path):
    # On PostgreSQL a month far from now has no partition: its rows wait in the default
    # one, and making the month's partition moves them (a DELETE there, an INSERT into a
    # table not yet attached, then ATTACH). The roll-up counts each row once throughout,
    # and counts what reaches the new partition, and what leaves it, afterwards.
    world = make_world(tmp_path, venues_per_ward=1)
    storage = world.storage
    venue_id = next(iter(world.venues))
    station = world.stations[venue_id]
    first, last = dt.date(2020, 1, 14), dt.date(2020, 2, 1)
    # 2020-02-01 00:30 local is still January in UTC: the January partition, the February day.
    scans = ([local_midnight_ms(first) + 9 * 3_600_000 + i for i in range(5)]
             + [local_midnight_ms(first + dt.timedelta(days=1)) + i for i in range(2)]
             + [local_midnight_ms(last) + 30 * 60_000])
    send(storage, station, [station.checkin(ts) for ts in scans])

    def in_2020() -> list[tuple[str, int]]:
        got = venue_dashboard(storage, world.areas, venue_id, first, last, TZ)
        return [(d["day"], d["scans"]) for d in got["days"] if d["scans"]]

    want = [("2020-01-14", 5), ("2020-01-15", 2), ("2020-02-01", 1)]
    assert in_2020() == want
    if ON_POSTGRESQL:
        from server.storage.postgres_schema import month_of

        lo, hi = scans[0], scans[-1]
        assert storage.sql.value("SELECT count(*) FROM checkins_default WHERE wall_ms BETWEEN ? AND ?", [lo, hi]) == 8
        assert storage.ensure_partitions([month_of(lo)]) == ["checkins_2020_01"]
        assert storage.sql.value("SELECT count(*) FROM checkins_default WHERE wall_ms BETWEEN ? AND ?", [lo, hi]) == 0
        assert storage.sql.value("SELECT count(*) FROM checkins_2020_01") == 8
    assert in_2020() == want  # moved, not counted again nor lost
    # A scan stored into the new partition is counted by the trigger it was given.
    send(storage, station, [station.checkin(local_midnight_ms(first) + 10 * 3_600_000)])
    assert in_2020() == [("2020-01-14", 6), ("2020-01-15", 2), ("2020-02-01", 1)]
    # A station whose clock said January 2020 corrects it: the rows leave the partition
    # for this month's days, and the roll-up follows them.
    wrong = local_midnight_ms(first + dt.timedelta(days=1)) + 3_600_000
    send(storage, station, [station.checkin(wrong + m, sync=False, mono=m, boot="boot-3") for m in (0, 60_000)])
    assert in_2020() == [("2020-01-14", 6), ("2020-01-15", 4), ("2020-02-01", 1)]
    send(storage, station, [station.clock(local_midnight_ms(TODAY - dt.timedelta(days=2)), boot="boot-3")])
    assert in_2020() == [("2020-01-14", 6), ("2020-01-15", 2), ("2020-02-01", 1)]
    counts = direct_counts(storage)
    assert counts[venue_id, TODAY - dt.timedelta(days=2)] == 2
    check_every_level(world, counts, TODAY - dt.timedelta(days=13), TODAY)
    # Retention (on PostgreSQL: dropping the January partition) leaves the counts.
    assert delete_older_than(storage, 30, now_ms=int(NOW * 1000)) == 9
    assert in_2020() == [("2020-01-14", 6), ("2020-01-15", 2), ("2020-02-01", 1)]
    if ON_POSTGRESQL:
        assert "checkins_2020_01" not in [name for name, _, _ in storage.partitions()]


def test_retention_deletes_the_people_but_not_the_counts(tmp_path):
    world = make_world(tmp_path)
    generate_checkins(world)
    counts = direct_counts(world.storage)
    stored = world.storage.count_checkins()
    deleted = delete_older_than(world.storage, 7, now_ms=int(NOW * 1000))
    assert 0 < deleted < stored
    assert direct_counts(world.storage) != counts
    # The dashboard still shows the deleted days as they were.
    check_every_level(world, counts, TODAY - dt.timedelta(days=29), TODAY)


def test_the_rollup_counts_rows_stored_before_it_existed_and_is_made_once(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    areas = AreaDirectory.load()
    VenueDirectory(storage, Accounts(storage, DevSmsSender()), areas)  # the venue columns, as the server adds them
    venue_id = storage.add_venue("Chợ")
    station = Station("gate-1", venue_id)
    storage.add_station("gate-1", protocol.public_key_to_text(station.key.public_key()), venue_id)
    day = TODAY - dt.timedelta(days=1)
    send(storage, station, [station.checkin(local_midnight_ms(day) + i * 60_000) for i in range(25)])
    ensure_rollup(storage, TZ)
    ensure_rollup(storage, TZ)
    assert rollup_offset_s(storage) == 7 * 3600
    got = area_dashboard(storage, areas, None, day, day, TZ)
    assert got["totals"]["scans"] == 25
    # A venue with no area is its own row in the country view, not lost.
    assert got["children"][-1]["code"] is None and got["children"][-1]["scans"] == 25
    # Another connection (the bridge in another process) stores more: the triggers count it.
    other = new_storage(tmp_path / "server.sqlite3")
    send(other, station, [station.checkin(local_midnight_ms(day) + DAY_MS - 1)])
    assert area_dashboard(storage, areas, None, day, day, TZ)["totals"]["scans"] == 26


def test_a_new_time_zone_recounts_the_stored_days(tmp_path):
    world = make_world(tmp_path)
    generate_checkins(world, days=10)
    tokyo = ZoneInfo("Asia/Tokyo")
    area_dashboard(world.storage, world.areas, None, TODAY, TODAY, TZ)
    ensure_rollup(world.storage, tokyo)
    assert rollup_offset_s(world.storage) == 9 * 3600
    counts = direct_counts(world.storage, tokyo)
    first_day = min(d for _, d in counts)
    # Every day after the first stored one is counted in Tokyo's days.
    since, until = first_day + dt.timedelta(days=1), TODAY
    want = expected(world, counts, "country", None, since, until)
    got = area_dashboard(world.storage, world.areas, None, since, until, tokyo)
    assert got["days"] == want["days"] and got["totals"] == want["totals"]


def test_venues_registered_after_the_period_are_not_counted_in_it(tmp_path):
    world = make_world(tmp_path, venues_per_ward=1, created_days_ago=5)
    before = area_dashboard(world.storage, world.areas, "79", TODAY - dt.timedelta(days=20),
                            TODAY - dt.timedelta(days=10), TZ)
    assert before["totals"]["venues_registered"] == 0
    now = area_dashboard(world.storage, world.areas, "79", TODAY - dt.timedelta(days=6), TODAY, TZ)
    assert now["totals"]["venues_registered"] == 2


def test_unknown_areas_and_periods_out_of_bounds_are_refused(tmp_path):
    world = make_world(tmp_path, venues_per_ward=1)
    for code in ("", "99", "<b>", "7" * 4096, "0\x00"):
        with pytest.raises(UnknownArea):
            area_dashboard(world.storage, world.areas, code, TODAY, TODAY, TZ)
    with pytest.raises(UnknownArea):
        venue_dashboard(world.storage, world.areas, 9999, TODAY, TODAY, TZ)
    with pytest.raises(DashboardError):
        area_dashboard(world.storage, world.areas, None, TODAY, TODAY - dt.timedelta(days=1), TZ)
    with pytest.raises(DashboardError):
        area_dashboard(world.storage, world.areas, None, TODAY - dt.timedelta(days=400), TODAY, TZ)


# -- the web ----------------------------------------------------------------------------


OPERATOR, OFFICER_79, OFFICER_WARD, OWNER, OFFICER_TWO = (
    "0912486419", "0903000001", "0903000002", "0903000003", "0903000004")


@pytest.fixture
def web(tmp_path):
    world = make_world(tmp_path)
    generate_checkins(world)
    services = world.site.services
    services.accounts.account_for_phone(OPERATOR)
    services.accounts.set_operator(OPERATOR)
    services.officers.grant(services.accounts, OFFICER_79, "79")
    services.officers.grant(services.accounts, OFFICER_WARD, "26743")
    services.officers.grant(services.accounts, OFFICER_TWO, "26743")
    services.officers.grant(services.accounts, OFFICER_TWO, "01")
    return world


def visitor(world: World, phone: str | None):
    v = world.site.visitor()
    return v.login(phone) if phone else v


def venue_in(world: World, ward: str) -> int:
    return next(v for v, place in world.venues.items() if place[2] == ward)


def test_operator_sees_the_country_and_drills_down_to_a_venue(web):
    op = visitor(web, OPERATOR)
    counts = direct_counts(web.storage)
    page = op.http.get("/dashboard?days=30")
    assert page.status_code == 200
    assert "Thành phố Hồ Chí Minh" in page.text and 'href="/dashboard/79?days=30"' in page.text
    want = expected(web, counts, "country", None, TODAY - dt.timedelta(days=29), TODAY)
    assert f'id="total-scans">{want["totals"]["scans"]}<' in page.text
    assert page.text.count('<rect class="bar"') == 30
    for path, link in [("/dashboard/79?days=30", "/dashboard/26743?days=30"),
                       ("/dashboard/26743?days=30", f"/dashboard/venue/{venue_in(web, '26743')}?days=30")]:
        page = op.http.get(path)
        assert page.status_code == 200 and f'href="{link}"' in page.text, path
    api = op.http.get("/api/dashboard/26743?from=2026-09-01&to=2026-09-21").json()
    assert api["totals"] == expected(web, counts, "ward", "26743", dt.date(2026, 9, 1), TODAY)["totals"]


def test_an_officer_sees_their_province_and_below_and_nothing_else(web):
    officer = visitor(web, OFFICER_79)
    home = officer.http.get("/api/dashboard")
    assert home.status_code == 200 and home.json()["area"]["code"] == "79"
    for path in ("/dashboard", "/dashboard/79", "/dashboard/26740", "/dashboard/26743",
                 f"/dashboard/venue/{venue_in(web, '26743')}", "/api/dashboard/26740"):
        assert officer.http.get(path).status_code == 200, path
    for path in ("/dashboard/01", "/dashboard/760", "/dashboard/00004", "/dashboard/48",
                 f"/dashboard/venue/{venue_in(web, '00004')}", "/api/dashboard/01",
                 f"/api/dashboard/venue/{venue_in(web, '20242')}"):
        assert officer.http.get(path).status_code == 404, path
    # The country crumb is not a link for an officer.
    assert 'href="/dashboard?days=7"' not in officer.http.get("/dashboard/26740").text


def test_a_ward_officer_cannot_climb_to_the_province(web):
    officer = visitor(web, OFFICER_WARD)
    assert officer.http.get("/dashboard").status_code == 200
    assert officer.http.get("/api/dashboard").json()["area"]["code"] == "26743"
    assert officer.http.get("/dashboard/79").status_code == 404
    assert officer.http.get("/dashboard/26740").status_code == 404
    assert officer.http.get(f"/dashboard/venue/{venue_in(web, '26740')}").status_code == 404


def test_an_officer_of_two_areas_gets_a_list_of_both(web):
    officer = visitor(web, OFFICER_TWO)
    data = officer.http.get("/api/dashboard?days=14").json()
    counts = direct_counts(web.storage)
    assert [a["code"] for a in data["areas"]] == ["01", "26743"]
    for a, (level, code) in zip(data["areas"], [("province", "01"), ("ward", "26743")]):
        assert a["scans"] == expected(web, counts, level, code, TODAY - dt.timedelta(days=13), TODAY)["totals"]["scans"]
    page = officer.http.get("/dashboard?days=14")
    assert 'href="/dashboard/01?days=14"' in page.text and 'href="/dashboard/26743?days=14"' in page.text


def test_venue_roles_and_strangers_get_404_and_anonymous_visitors_log_in(web):
    owner = visitor(web, OWNER)
    owner.create_venue()
    for path in ("/dashboard", "/dashboard/79", "/api/dashboard", f"/dashboard/venue/{venue_in(web, '26743')}"):
        assert owner.http.get(path).status_code == 404, path
    anonymous = visitor(web, None)
    page = anonymous.http.get("/dashboard/79")
    assert page.status_code == 303 and page.headers["location"].startswith("/login")
    assert anonymous.http.get("/api/dashboard/79").status_code == 401


def test_a_hostile_venue_name_is_shown_as_text(web):
    page = visitor(web, OPERATOR).http.get("/dashboard/26743")
    assert "&lt;img src=x onerror=alert(1)&gt;" in page.text
    assert "<img" not in page.text
    venue = visitor(web, OPERATOR).http.get(f"/dashboard/venue/{venue_in(web, '26743')}")
    assert "<img" not in venue.text and "&lt;img" in venue.text


HOSTILE = ["<script>alert(1)</script>", "x" * 4096, "\x00\x01\x1b", "=cmd|' /C calc'!A0", "../../etc/passwd",
           "%00", "9" * 40, "-1", "1e9", "0x10", " 7 ", "٣"]


def test_hostile_paths_and_periods_get_a_clear_4xx_never_a_5xx(web):
    op = visitor(web, OPERATOR)
    for text in HOSTILE:
        segment = quote(text, safe="")
        for path, params in [(f"/dashboard/{segment}", None), (f"/api/dashboard/{segment}", None),
                             (f"/dashboard/venue/{segment}", None), (f"/api/dashboard/venue/{segment}", None),
                             ("/dashboard/79", {"days": text}), ("/api/dashboard/79", {"from": text}),
                             ("/api/dashboard", {"from": "2026-09-01", "to": text})]:
            response = op.http.get(path, params=params)
            assert response.status_code < 500, (path, params, response.status_code)
            assert response.status_code in (200, 400, 404), (path, params, response.status_code)
    bad = op.http.get("/api/dashboard/79", params={"days": "9999"})
    assert bad.status_code == 400 and "366" in bad.json()["detail"]
    future = op.http.get("/dashboard/79", params={"from": "2026-09-01", "to": "2027-01-01"})
    assert future.status_code == 400 and "không được kết thúc sau hôm nay" in future.text
    backwards = op.http.get("/api/dashboard/79", params={"from": "2026-09-10", "to": "2026-09-01"})
    assert backwards.status_code == 400
    assert op.http.get("/api/dashboard/79", params={"days": " 7 "}).status_code == 200


def test_the_page_draws_the_numbers_it_states(web):
    op = visitor(web, OPERATOR)
    counts = direct_counts(web.storage)
    data = op.http.get("/api/dashboard/79?days=14").json()
    page = op.http.get("/dashboard/79?days=14").text
    want = expected(web, counts, "province", "79", TODAY - dt.timedelta(days=13), TODAY)
    # Each bar carries its day's count, in the table too, and the tallest bar is the busiest day.
    bars = [int(x.split('"')[0]) for x in page.split('data-scans="')[1:]]
    assert bars == [d["scans"] for d in want["days"]] == [d["scans"] for d in data["days"]]
    assert 'role="img"' in page and "<title" in page and 'id="days"' in page
    assert "style=" not in page and "<script>" not in page  # the CSP allows neither inline
    assert '<link rel="stylesheet" href="/static/dashboard.css">' in page
    assert op.http.get("/static/dashboard.css").status_code == 200
