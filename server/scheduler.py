"""The server's scheduled jobs: the weekly reports (one per unit and per area, kept and
e-mailed), the daily retention, and the delivery of the report e-mails.

When a job is due is decided here, from the time of its last run kept in the database
(table ``scheduled_runs``), so ``run_due(now)`` is the whole schedule: a test calls it
with any time, and a server that was down at Friday 15:00 makes the missed report once
when it comes back (a run that was missed several times is made once, not repeated).
APScheduler 3 (its CronTrigger for the calendar arithmetic in the server's time zone,
its BackgroundScheduler for the waiting thread) only wakes ``run_due`` at those times;
its own job stores would either forget missed runs (memory) or pickle callables into
the database (SQLAlchemy), which is why the last runs are kept here instead.

Several server processes may share one database (web processes beside bridge workers on
PostgreSQL): each runs the schedule, and a run is claimed in the database before the job
starts, by moving the job's last run from the time it read to now only if nobody moved it
first. One process wins the claim and runs the job; the others see it taken. A job that
fails gives its claim back, so it is tried again at the next wake (a process killed in
the middle of a job cannot: that job next runs at its next time).

E-mail is not a job of the schedule: the weekly run only queues the messages (after the
reports are kept), and the background thread sends them apart, every minute and at once
after a weekly run (server/reports/mail.py), so a mail server that is slow or down never
holds a report or the schedule up. ``deliver_mail()`` sends what is due now (tests).
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.cron import CronTrigger

from server.audit import AuditLog
from server.config import MailSection, ReportsSection, RetentionSection
from server.reports.mail import ReportMail
from server.reports.mail_text import composer
from server.reports.recipients import ReportRecipients
from server.reports.report_archive import ReportArchive
from server.checkins.tracing import delete_older_than

logger = logging.getLogger(__name__)


def _ms(when: dt.datetime) -> int:
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class ScheduledJob:
    name: str
    trigger: CronTrigger
    run: Callable[[dt.datetime], Any]


MAIL_EVERY_S = 60  # how often the background thread looks for report e-mails to send


class ServerScheduler:
    """Weekly reports ([reports], e-mailed through [mail]) and retention ([retention])
    for one server database.

    ``officers`` (server.areas.officers.Officers) names the areas that get a report;
    None: unit reports only. ``public_url`` ([web] public_url) puts a link to the report
    in its e-mail. ``start()`` runs the jobs in a background thread at their times (and
    once at start for anything missed while the server was down); ``shutdown()`` stops it.
    """

    def __init__(self, storage, timezone: str, *, reports: ReportsSection = ReportsSection(),
                 retention: RetentionSection = RetentionSection(), clock: Callable[[], float] = time.time,
                 archive: ReportArchive | None = None, mail: MailSection = MailSection(),
                 base: str | Path = ".", officers=None, public_url: str = ""):
        self.storage = storage
        self.tz = ZoneInfo(timezone)
        self.clock = clock
        self.audit = AuditLog(storage, clock)
        self.archive = archive or ReportArchive(storage)
        self.officers = officers
        self.recipients = ReportRecipients(storage, clock)
        self.mail = ReportMail(storage, mail, base, composer(self.archive, public_url), clock, self.audit)
        self.retention = retention
        self._lock = threading.Lock()
        self._background: BackgroundScheduler | None = None
        self.jobs: list[ScheduledJob] = []
        if reports.enabled:
            self.jobs.append(ScheduledJob("weekly_reports", CronTrigger(
                day_of_week=reports.weekday, hour=reports.hour, minute=reports.minute, timezone=self.tz),
                self._weekly_reports))
        if retention.days > 0:
            self.jobs.append(ScheduledJob("retention", CronTrigger(hour=retention.hour, minute=0, timezone=self.tz),
                                          self._retention))
        self.db = storage.sql
        if not self.db.has_table("scheduled_runs"):
            self.db.schema("CREATE TABLE IF NOT EXISTS scheduled_runs (job TEXT PRIMARY KEY, last_ms BIGINT NOT NULL)")

    # -- the schedule -----------------------------------------------------------------

    def now(self) -> dt.datetime:
        return dt.datetime.fromtimestamp(self.clock(), self.tz)

    def next_time(self, job: ScheduledJob, after: dt.datetime) -> dt.datetime | None:
        """The job's first time strictly after ``after``."""
        return job.trigger.get_next_fire_time(None, after + dt.timedelta(microseconds=1))

    def last_run(self, name: str) -> dt.datetime | None:
        last_ms = self._last_ms(name)
        return dt.datetime.fromtimestamp(last_ms / 1000, self.tz) if last_ms is not None else None

    def _last_ms(self, name: str) -> int | None:
        return self.db.value("SELECT last_ms FROM scheduled_runs WHERE job = ?", [name])

    def due(self, now: dt.datetime) -> list[ScheduledJob]:
        """Jobs whose time came after their last run and by ``now``. A job never run
        before is not due: a new server does not make reports for weeks it never saw."""
        return [job for job, _ in self._due(now)]

    def _due(self, now: dt.datetime) -> list[tuple[ScheduledJob, int]]:
        """The due jobs, each with the last run (ms) it was judged from."""
        out = []
        for job in self.jobs:
            last_ms = self._last_ms(job.name)
            if last_ms is None:
                # The first look only notes the time (a process that looked first keeps its time).
                self.db.execute("INSERT INTO scheduled_runs (job, last_ms) VALUES (?, ?)"
                                " ON CONFLICT (job) DO NOTHING", [job.name, _ms(now)])
                continue
            upcoming = self.next_time(job, dt.datetime.fromtimestamp(last_ms / 1000, self.tz))
            if upcoming is not None and upcoming <= now:
                out.append((job, last_ms))
        return out

    def run_due(self, now: dt.datetime | None = None) -> dict[str, Any]:
        """Run every job due at ``now`` (default: the clock) once; return their results."""
        now = now or self.now()
        if now.tzinfo is None:
            raise ValueError("run_due needs an aware datetime")
        now = now.astimezone(self.tz)
        results: dict[str, Any] = {}
        with self._lock:
            for job, last_ms in self._due(now):
                if not self._claim(job.name, last_ms, _ms(now)):
                    logger.info("scheduled job %s is being run by another process", job.name)
                    continue
                try:
                    results[job.name] = job.run(now)
                except Exception:  # the job is retried at its next time; the others still run
                    logger.exception("scheduled job %s failed", job.name)
                    self._claim(job.name, _ms(now), last_ms)
        return results

    def _claim(self, name: str, seen_ms: int, new_ms: int) -> bool:
        """Move the job's last run from ``seen_ms`` to ``new_ms``; False if another
        process moved it first (one UPDATE: the row's lock decides between two)."""
        return self.db.execute("UPDATE scheduled_runs SET last_ms = ? WHERE job = ? AND last_ms = ?",
                               [new_ms, name, seen_ms]) == 1

    # -- the jobs -----------------------------------------------------------------------

    @classmethod
    def from_config(cls, cfg, storage, officers=None) -> ServerScheduler:
        """The scheduler server.toml describes (``cfg``: server.config.ServerConfig);
        ``officers``: the web app's (``app.state.services.officers``), else made here."""
        if officers is None:
            officers = _officers_for(cfg, storage)
        return cls(storage, cfg.web.timezone, reports=cfg.reports, retention=cfg.retention, mail=cfg.mail,
                   base=cfg.base, officers=officers, public_url=cfg.web.public_url.rstrip("/"))

    def _weekly_reports(self, now: dt.datetime) -> int:
        kept = self.archive.generate_week(now, self.audit, officers=self.officers)
        if self.mail.enabled:
            for stored in kept:
                addresses = (self.recipients.for_area(stored.subject) if stored.scope == "area"
                             else self.recipients.for_unit(int(stored.subject)))
                self.mail.queue(stored.id, addresses)
            self._mail_now()
        return len(kept)

    def deliver_mail(self) -> dict[str, int]:
        """Send the report e-mails due now (the background thread calls it every minute)."""
        try:
            return self.mail.deliver_due()
        except Exception:  # the database said no: the next round tries again
            logger.exception("report e-mails could not be sent this round")
            return {"sent": 0, "retry": 0, "failed": 0}

    def _mail_now(self) -> None:
        background = self._background
        if background is not None and background.get_job("report_mail") is not None:
            background.modify_job("report_mail", next_run_time=dt.datetime.now(self.tz))

    def _retention(self, now: dt.datetime) -> int:
        deleted = delete_older_than(self.storage, self.retention.days, now_ms=int(now.timestamp() * 1000))
        self.audit.record("qrgate.retention.deleted", ip="scheduler", rows=deleted, days=self.retention.days)
        logger.info("retention: deleted %d check-ins older than %d days", deleted, self.retention.days)
        return deleted

    # -- the background thread ----------------------------------------------------------------

    def start(self) -> None:
        """Wake run_due at each job's time, and once now for what was missed."""
        if self._background is not None:
            return
        background = BackgroundScheduler(timezone=self.tz, job_defaults={
            "coalesce": True, "max_instances": 1, "misfire_grace_time": 6 * 3600})
        for job in self.jobs:
            background.add_job(self._wake, job.trigger, id=job.name, name=job.name)
        background.add_job(self._wake, id="catch_up", name="catch up at start")
        if self.mail.enabled:
            background.add_job(self.deliver_mail, "interval", seconds=MAIL_EVERY_S, id="report_mail",
                               name="report e-mails", next_run_time=dt.datetime.now(self.tz))
        background.start()
        self._background = background
        logger.info("scheduler: %s", ", ".join(f"{j.name} next at {self.next_time(j, self.now()):%a %d/%m %H:%M}"
                                                for j in self.jobs) or "no jobs")

    def _wake(self) -> None:
        # The timer may wake a few milliseconds before the minute it was set for; a run
        # judged at "14:59:59.998" would skip Friday's report until next week.
        self.run_due(self.now() + dt.timedelta(seconds=2))

    def next_runs(self) -> dict[str, dt.datetime]:
        """When the background scheduler will next wake each job (after start)."""
        if self._background is None:
            return {}
        return {j.id: j.next_run_time for j in self._background.get_jobs() if j.id not in ("catch_up", "report_mail")}

    def shutdown(self) -> None:
        if self._background is not None:
            self._background.shutdown(wait=True)
            self._background = None


def _officers_for(cfg, storage):
    """The health officers' service as the web app makes it, for the area reports; None
    (unit reports only, with a warning) when the areas cannot be read."""
    try:
        from qrgate.config import resolve
        from server.areas.areas import AreaDirectory
        from server.areas.officers import Officers

        areas = AreaDirectory.load(resolve(cfg.base, cfg.web.areas_file)) if cfg.web.areas_file else AreaDirectory.load()
        return Officers(storage, areas)
    except Exception:
        logger.warning("no area reports: the administrative areas could not be read", exc_info=True)
        return None
