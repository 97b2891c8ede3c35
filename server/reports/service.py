"""What the reports routes keep per app: the export job queue (its worker threads and
its folder), the archive of weekly reports, who receives them by e-mail and how their
e-mails went, and the dashboards' roll-up made ready.

``attach(app)`` makes them once, after ``app.state.services``; create_app may call it so
that the roll-up's triggers are in place and the export folder is cleaned when the app
is made, as before. Until then the first request to an export, report or dashboard
route makes them (``report_services``, a FastAPI dependency), under a lock so two
requests cannot make two queues.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request
from starlette.concurrency import run_in_threadpool

from server.config import MailSection
from server.reports.rollup import ensure_rollup
from server.reports.export_jobs import ExportJobs
from server.reports.mail import ReportMail
from server.reports.recipients import ReportRecipients
from server.reports.report_archive import ReportArchive

_MAKING = threading.Lock()


@dataclass
class ReportServices:
    """One app's export jobs and kept reports (``app.state.reports``).

    ``mail`` reads how each report's e-mails went (the scheduler sends them);
    ``mail_enabled`` says whether this server sends e-mail at all ([mail] host), None
    when nobody told the app (pages then say nothing about it)."""

    jobs: ExportJobs
    archive: ReportArchive
    recipients: ReportRecipients
    mail: ReportMail
    mail_enabled: bool | None = None


def attach(app: FastAPI) -> ReportServices:
    """The app's ReportServices, made now if it has none yet; ``app.state.services``
    must be set. Reading the database and making tables: not on the event loop."""
    found = getattr(app.state, "reports", None)
    if found is not None:
        return found
    with _MAKING:
        found = getattr(app.state, "reports", None)
        if found is None:
            svc = app.state.services
            jobs = ExportJobs(svc.storage, svc.tz, clock=svc.clock)
            archive = ReportArchive(svc.storage)
            recipients = ReportRecipients(svc.storage, svc.clock)
            mail = ReportMail(svc.storage, None, clock=svc.clock)
            # The roll-up's triggers must be on the check-ins table before anything is stored.
            ensure_rollup(svc.storage, svc.tz)
            found = app.state.reports = ReportServices(jobs, archive, recipients, mail)
    return found


def configure_mail(app: FastAPI, settings: MailSection) -> None:
    """Tell the pages whether this server e-mails its reports ([mail] in server.toml)."""
    attach(app).mail_enabled = settings.enabled


async def report_services(request: Request) -> ReportServices:
    """FastAPI dependency: the app's ReportServices (made on first use, off the event loop)."""
    found = getattr(request.app.state, "reports", None)
    if found is None:
        found = await run_in_threadpool(attach, request.app)
    return found


Reports = Annotated[ReportServices, Depends(report_services)]
