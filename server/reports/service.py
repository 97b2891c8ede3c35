"""What the reports routes keep per app: the export job queue (its worker threads and
its folder), the archive of weekly reports, who receives them by e-mail and how their
e-mails went, and the dashboards' roll-up made ready.

``attach(app)`` makes them, after ``app.state.services``: create_app calls it, so the
roll-up's triggers are in place and the export folder is cleaned when the app is made;
routes take them with the ``Reports`` dependency.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, FastAPI, Request

from server.config import MailSection
from server.reports.rollup import ensure_rollup
from server.reports.export_jobs import ExportJobs
from server.reports.mail import ReportMail
from server.reports.recipients import ReportRecipients
from server.reports.report_archive import ReportArchive

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
    """Make the app's ReportServices (create_app calls it once; ``app.state.services``
    must be set). Reading the database and making tables."""
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
    app.state.reports.mail_enabled = settings.enabled


async def report_services(request: Request) -> ReportServices:
    """FastAPI dependency: the app's ReportServices."""
    return request.app.state.reports


Reports = Annotated[ReportServices, Depends(report_services)]
