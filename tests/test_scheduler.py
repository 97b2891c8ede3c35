"""Scheduled jobs driven by the test's clock: weekly reports on Friday 15:00 local time,
retention once a day, missed runs made once after downtime, and the config that sets them
(the e-mail of the reports: tests/test_report_mail.py)."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import pytest

from conftest import new_storage
from qrgate.errors import ConfigError
from server.audit import AuditLog
from server.config import ReportsSection, RetentionSection, load_server_config
from server.reports.report_archive import ReportArchive
from server.scheduler import ServerScheduler
from test_export import TZ, Gate

pytestmark = pytest.mark.timeout(60)


def at(*args) -> dt.datetime:
    return dt.datetime(*args, tzinfo=TZ)


class Clock:
    def __init__(self, when: dt.datetime):
        self.now = when.timestamp()

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def storage(tmp_path):
    storage = new_storage(tmp_path / "server.sqlite3")
    for name in ("Chợ Bắc Kạn", "Trường THCS Lê Lợi"):
        storage.add_venue(name)
    return storage


def scheduler(storage, *, reports=ReportsSection(), retention=RetentionSection(days=0), start=at(2026, 11, 16, 8, 0)):
    """A scheduler that first saw the clock on ``start`` (a Monday morning)."""
    made = ServerScheduler(storage, "Asia/Ho_Chi_Minh", reports=reports, retention=retention, clock=Clock(start))
    assert made.run_due(start) == {}  # the first look only notes the time
    return made


def kept(storage) -> list[tuple]:
    """(unit, year, week) of each kept report; a unit by its head venue's number."""
    return [(int(r[0]), r[1], r[2]) for r in
            storage.sql.rows("SELECT subject, year, week FROM kept_reports ORDER BY made_ms, subject")]


def audit(storage, action: str) -> list:
    return storage.sql.rows("SELECT action, ip, data FROM audit_log WHERE action = ?", [action])


def test_weekly_reports_are_made_on_friday_at_three_local_time_and_kept(storage):
    jobs = scheduler(storage)
    assert jobs.run_due(at(2026, 11, 20, 14, 59, 59)) == {}
    assert kept(storage) == []
    assert jobs.run_due(at(2026, 11, 20, 15, 0)) == {"weekly_reports": 2}
    assert kept(storage) == [(1, 2026, 47), (2, 2026, 47)]
    assert [Path(p).is_file() for (p,) in storage.sql.rows("SELECT pdf_file FROM kept_reports")] == [True, True]
    assert len(audit(storage, "qrgate.report.generated")) == 2
    assert jobs.run_due(at(2026, 11, 20, 15, 30)) == {}  # once a week, not once a call
    assert jobs.run_due(at(2026, 11, 26, 23, 0)) == {}
    assert jobs.run_due(at(2026, 11, 27, 15, 0)) == {"weekly_reports": 2}
    assert kept(storage)[-1] == (2, 2026, 48)


def test_friday_three_pm_local_is_eight_in_the_morning_utc(storage):
    jobs = scheduler(storage)
    utc = dt.timezone.utc
    assert jobs.run_due(dt.datetime(2026, 11, 20, 7, 59, tzinfo=utc)) == {}
    assert jobs.run_due(dt.datetime(2026, 11, 20, 8, 0, tzinfo=utc)) == {"weekly_reports": 2}


def test_the_report_time_is_configurable(storage):
    jobs = scheduler(storage, reports=ReportsSection(weekday="thu", hour=9, minute=30))
    assert jobs.run_due(at(2026, 11, 19, 9, 29)) == {}
    assert jobs.run_due(at(2026, 11, 19, 9, 30)) == {"weekly_reports": 2}
    assert jobs.run_due(at(2026, 11, 20, 15, 0)) == {}


def test_reports_can_be_switched_off(storage):
    jobs = scheduler(storage, reports=ReportsSection(enabled=False))
    assert jobs.jobs == [] and jobs.run_due(at(2026, 11, 20, 15, 0)) == {}


def test_a_missed_friday_is_made_once_when_the_server_is_back(storage):
    jobs = scheduler(storage)
    # Down from Thursday to Saturday: Friday's report is made on Saturday, for that week.
    assert jobs.run_due(at(2026, 11, 21, 10, 0)) == {"weekly_reports": 2}
    assert kept(storage) == [(1, 2026, 47), (2, 2026, 47)]
    # Down for three weeks: one catch-up run, not three.
    assert jobs.run_due(at(2026, 12, 14, 9, 0)) == {"weekly_reports": 2}
    assert len(kept(storage)) == 4 and jobs.run_due(at(2026, 12, 14, 9, 1)) == {}


def test_the_last_run_survives_a_restart(storage):
    scheduler(storage).run_due(at(2026, 11, 20, 15, 0))
    restarted = ServerScheduler(storage, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=0), clock=Clock(at(2026, 11, 20, 16, 0)))
    assert restarted.run_due(at(2026, 11, 20, 16, 0)) == {}  # already made this week
    assert restarted.last_run("weekly_reports") == at(2026, 11, 20, 15, 0)


def test_a_new_server_does_not_make_reports_for_weeks_it_never_saw(storage):
    jobs = ServerScheduler(storage, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=0), clock=Clock(at(2026, 11, 21, 10, 0)))
    assert jobs.run_due(at(2026, 11, 21, 10, 0)) == {}
    assert kept(storage) == []


def test_retention_deletes_old_checkins_daily_at_its_hour_and_audits_it(storage):
    gate = Gate(storage, 1)
    now = at(2026, 11, 20, 3, 0)
    day = 86_400_000
    stamp = int(now.timestamp() * 1000)
    gate.scan([{"name": "Cũ", "id": "001090000001", "wall_ms": stamp - 31 * day},
               {"name": "Mới", "id": "001090000002", "wall_ms": stamp - 29 * day}])
    jobs = scheduler(storage, reports=ReportsSection(enabled=False), retention=RetentionSection(days=30, hour=3),
                     start=at(2026, 11, 19, 12, 0))
    assert jobs.run_due(at(2026, 11, 20, 2, 59)) == {}
    assert storage.count_checkins() == 2
    assert jobs.run_due(now) == {"retention": 1}
    assert [r[0] for r in storage.sql.rows("SELECT name FROM checkins")] == ["Mới"]
    entries = audit(storage, "qrgate.retention.deleted")
    assert len(entries) == 1 and entries[0][1] == "scheduler" and '"rows": 1' in entries[0][2]
    assert jobs.run_due(at(2026, 11, 20, 23, 0)) == {}
    assert jobs.run_due(at(2026, 11, 21, 3, 0)) == {"retention": 0}


def test_retention_is_off_at_zero_days(storage):
    jobs = scheduler(storage, reports=ReportsSection(enabled=False), retention=RetentionSection(days=0))
    assert jobs.jobs == []


def test_a_failing_job_does_not_stop_the_others_and_is_tried_again(storage):
    class BrokenArchive(ReportArchive):
        broken = True

        def generate_week(self, now, audit=None, officers=None):
            if self.broken:
                raise OSError("disk full")
            return super().generate_week(now, audit, officers)

    archive = BrokenArchive(storage)
    jobs = ServerScheduler(storage, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=30, hour=15),
                           clock=Clock(at(2026, 11, 16, 8)), archive=archive)
    jobs.run_due(at(2026, 11, 16, 8))
    assert jobs.run_due(at(2026, 11, 20, 15, 0)) == {"retention": 0}
    archive.broken = False
    assert jobs.run_due(at(2026, 11, 20, 15, 5)) == {"weekly_reports": 2}


def test_the_background_scheduler_is_set_for_the_next_friday_and_stops(storage):
    jobs = ServerScheduler(storage, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=30),
                           clock=Clock(at(2026, 11, 18, 10, 0)))
    jobs.start()
    try:
        runs = jobs.next_runs()
        assert set(runs) == {"weekly_reports", "retention"}
        # APScheduler computes from the real clock: the next Friday 15:00 and the next 03:00, local time.
        friday = runs["weekly_reports"].astimezone(TZ)
        assert (friday.weekday(), friday.hour, friday.minute) == (4, 15, 0)
        assert runs["retention"].astimezone(TZ).hour == 3
    finally:
        jobs.shutdown()
    assert jobs.next_runs() == {}


def test_two_server_processes_run_a_due_job_once(storage, tmp_path):
    # Two processes on one database, both woken at Friday 15:00. The second looks while
    # the first is still making the reports: it sees the run claimed and leaves it.
    other = new_storage(tmp_path / "server.sqlite3")
    first = scheduler(storage)
    second = ServerScheduler(other, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=0), clock=Clock(at(2026, 11, 20, 15, 0)))
    friday = at(2026, 11, 20, 15, 0)
    seen_meanwhile = []

    class SlowArchive(ReportArchive):
        def generate_week(self, now, audit=None, officers=None):
            seen_meanwhile.append(second.run_due(friday))
            return super().generate_week(now, audit, officers)

    first.archive = SlowArchive(storage)
    assert [j.name for j in first.due(friday)] == [j.name for j in second.due(friday)] == ["weekly_reports"]
    assert first.run_due(friday) == {"weekly_reports": 2}
    assert seen_meanwhile == [{}]
    assert kept(storage) == [(1, 2026, 47), (2, 2026, 47)]
    assert len(audit(storage, "qrgate.report.generated")) == 2
    assert second.run_due(friday) == {} and second.last_run("weekly_reports") == friday


def test_a_failed_run_is_given_back_for_the_other_process(storage, tmp_path):
    other = new_storage(tmp_path / "server.sqlite3")
    first = scheduler(storage)
    second = ServerScheduler(other, "Asia/Ho_Chi_Minh", retention=RetentionSection(days=0), clock=Clock(at(2026, 11, 20, 15, 0)))

    class BrokenArchive(ReportArchive):
        def generate_week(self, now, audit=None, officers=None):
            raise OSError("disk full")

    first.archive = BrokenArchive(storage)
    assert first.run_due(at(2026, 11, 20, 15, 0)) == {}
    assert second.last_run("weekly_reports") == at(2026, 11, 16, 8, 0)  # as before the failed run
    assert second.run_due(at(2026, 11, 20, 15, 1)) == {"weekly_reports": 2}


def test_run_due_refuses_a_time_without_a_zone(storage):
    with pytest.raises(ValueError, match="aware"):
        scheduler(storage).run_due(dt.datetime(2026, 11, 20, 15, 0))


# -- configuration -----------------------------------------------------------------------------------

def write_config(tmp_path, extra: str) -> Path:
    path = tmp_path / "server.toml"
    path.write_text(f'[server]\ndata_dir = "data"\n[mqtt]\ntls = false\n{extra}', encoding="utf-8")
    return path


def test_config_sets_reports_and_retention(tmp_path):
    cfg = load_server_config(write_config(tmp_path, '[reports]\nweekday = "thu"\nhour = 9\n'
                                                    "[retention]\ndays = 90\nhour = 2\n"))
    assert (cfg.reports.weekday, cfg.reports.hour, cfg.reports.minute) == ("thu", 9, 0)
    assert (cfg.retention.days, cfg.retention.hour) == (90, 2)
    defaults = load_server_config(write_config(tmp_path, ""))
    assert (defaults.reports.weekday, defaults.reports.hour, defaults.retention.days) == ("fri", 15, 30)


@pytest.mark.parametrize("extra, message", [
    ("[retention]\ndays = -1\n", "section [retention]: option 'days' must be at least 0"),
    ("[retention]\nhour = 24\n", "section [retention]: option 'hour' must be at most 23"),
    ('[reports]\nweekday = "friday"\n', "section [reports]: option 'weekday' must be one of mon, tue"),
    ("[reports]\nwhen = 1\n", "section [reports]: option 'when' is not valid"),
    ('[retention]\ndays = "30"\n', "option 'days' must be int"),
])
def test_config_mistakes_name_the_section_and_key(tmp_path, extra, message):
    with pytest.raises(ConfigError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_server_config(write_config(tmp_path, extra))


def test_audit_log_of_the_scheduler_uses_its_clock(storage):
    jobs = scheduler(storage)
    jobs.clock.now = at(2026, 11, 20, 15, 0).timestamp()
    jobs.run_due()
    entry = AuditLog(storage).for_venue(1)[0]
    assert entry.action == "qrgate.report.generated" and entry.ts_ms == int(at(2026, 11, 20, 15).timestamp() * 1000)
