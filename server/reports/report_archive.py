"""The weekly reports the schedule makes and keeps: one per unit and one per area that
has a health officer, each a row of ``kept_reports`` (its numbers, frozen when it was
made) and a Vietnamese CSV and PDF beside the database (the copy sent by e-mail).

A report is kept before anything is sent, so a mail server that is down loses nothing:
the page shows the report, and server.reports.mail sends it when it can.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from server.audit import register_actions
from server.reports.report_files import report_csv, report_filename, report_pdf, week_words
from server.reports.reports import WeeklyReport, build_area_report, build_weekly_report, week_of
from server.reports.units import VenueTree
from server.web import i18n

logger = logging.getLogger(__name__)

register_actions("qrgate.report.generated", "qrgate.report.downloaded")
i18n.register({}, history={
    "qrgate.report.generated": ("Lập báo cáo tuần {week} theo lịch ({people} người)",
                                "Weekly report {week} made on schedule ({people} people)"),
    "qrgate.report.downloaded": ("Tải báo cáo tuần {week} ({format})", "Downloaded weekly report {week} ({format})"),
})

_SAFE = re.compile(r"[^A-Za-z0-9_-]")


@dataclass(frozen=True)
class StoredReport:
    id: int
    scope: str  # unit / area / legacy (a venue's report kept before units existed: files only)
    subject: str  # the unit head's id, or the area's code
    year: int
    week: int
    made_ms: int
    data: dict[str, Any] | None
    csv_file: str
    pdf_file: str

    @property
    def report(self) -> WeeklyReport | None:
        return WeeklyReport.from_dict(self.data) if self.data else None

    @property
    def summary(self) -> dict[str, int]:
        data = self.data or {}
        totals = data.get("totals", {})
        return {"people": data.get("people_week", 0), "scans_in": totals.get("scans_in", 0),
                "scans_out": totals.get("scans_out", 0), "until_ms": data.get("until_ms", self.made_ms)}

    def file(self, fmt: str, lang: str) -> tuple[bytes, str] | None:
        """(content, file name) of the kept report in ``lang``: the Vietnamese files as
        they were kept, another language made again from the kept numbers."""
        report = self.report
        if lang == "vi" or report is None:
            path = Path(self.csv_file if fmt == "csv" else self.pdf_file)
            return (path.read_bytes(), path.name) if path.is_file() else None
        data = report_csv(report, lang) if fmt == "csv" else report_pdf(report, lang)
        return data, report_filename(report, fmt, lang)


_COLUMNS = "id, scope, subject, year, week, made_ms, data, csv_file, pdf_file"


class ReportArchive:
    """Kept reports: a row in ``kept_reports`` and two files each (``reports/`` in the
    server's data folder)."""

    def __init__(self, storage, folder: str | Path | None = None):
        self.storage = storage
        if folder is None:
            base = getattr(storage, "data_dir", None)  # the server's local folder
            if base is None:
                raise ValueError("weekly reports need a folder: the storage has no local data folder")
            folder = Path(base) / "reports"
        self.folder = Path(folder)
        db = storage.sql
        if not db.has_table("kept_reports"):
            db.schema(
                """
                CREATE TABLE IF NOT EXISTS kept_reports (
                    id {pk}, scope TEXT NOT NULL, subject TEXT NOT NULL, year BIGINT NOT NULL, week BIGINT NOT NULL,
                    made_ms BIGINT NOT NULL, data TEXT NOT NULL DEFAULT '', csv_file TEXT NOT NULL,
                    pdf_file TEXT NOT NULL, UNIQUE (scope, subject, year, week));
                CREATE INDEX IF NOT EXISTS kept_reports_week ON kept_reports (year, week)
                """
            )
            if db.has_table("weekly_reports"):  # the reports of single venues, from before units
                db.execute(
                    "INSERT INTO kept_reports (scope, subject, year, week, made_ms, csv_file, pdf_file)"
                    " SELECT 'legacy', CAST(venue_id AS TEXT), year, week, made_ms, csv_file, pdf_file"
                    " FROM weekly_reports WHERE trigger = 'schedule' ON CONFLICT DO NOTHING")

    def keep(self, report: WeeklyReport) -> StoredReport:
        """Write the report's Vietnamese files and its row; the same unit or area and week
        again replaces the first (the files are rewritten, the row updated in place)."""
        scope = "unit" if report.scope in ("unit", "venue") else "area"
        folder = self.folder / f"{scope}-{_SAFE.sub('_', report.subject)}"
        folder.mkdir(parents=True, exist_ok=True)
        csv_path, pdf_path = folder / report_filename(report, "csv"), folder / report_filename(report, "pdf")
        csv_path.write_bytes(report_csv(report))
        pdf_path.write_bytes(report_pdf(report))
        self.storage.sql.execute(
            "INSERT INTO kept_reports (scope, subject, year, week, made_ms, data, csv_file, pdf_file)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (scope, subject, year, week) DO UPDATE SET"
            " made_ms = excluded.made_ms, data = excluded.data, csv_file = excluded.csv_file,"
            " pdf_file = excluded.pdf_file",
            [scope, report.subject, report.year, report.week, report.made_ms,
             json.dumps(report.as_dict(), ensure_ascii=False), str(csv_path), str(pdf_path)])
        return self.find(scope, report.subject, report.year, report.week)

    def find(self, scope: str, subject: str, year: int, week: int) -> StoredReport | None:
        rows = self._select("WHERE scope = ? AND subject = ? AND year = ? AND week = ?", [scope, subject, year, week])
        return rows[0] if rows else None

    def get(self, report_id: int) -> StoredReport | None:
        if not 0 < report_id < 2**63:
            return None
        rows = self._select("WHERE id = ?", [report_id])
        return rows[0] if rows else None

    def for_unit(self, head_id: int, limit: int = 60) -> list[StoredReport]:
        return self._select("WHERE scope IN ('unit', 'legacy') AND subject = ? ORDER BY year DESC, week DESC, id DESC"
                            " LIMIT ?", [str(head_id), limit])

    def for_area(self, area_code: str, limit: int = 60) -> list[StoredReport]:
        return self._select("WHERE scope = 'area' AND subject = ? ORDER BY year DESC, week DESC, id DESC LIMIT ?",
                            [area_code, limit])

    def _select(self, where: str, params: list[Any]) -> list[StoredReport]:
        rows = self.storage.sql.rows(f"SELECT {_COLUMNS} FROM kept_reports {where}", params)
        return [StoredReport(r[0], r[1], r[2], int(r[3]), int(r[4]), int(r[5]), json.loads(r[6]) if r[6] else None,
                             r[7], r[8]) for r in rows]

    # -- the scheduled run ---------------------------------------------------------------

    def generate_week(self, now: dt.datetime, audit=None, officers=None) -> list[StoredReport]:
        """The scheduled run: the report of the week containing ``now`` for every unit
        and, given the officers' service, every area that has an officer; each kept and
        written to the audit trail. One report's failure is logged; the others are made."""
        tz = now.tzinfo if isinstance(now.tzinfo, ZoneInfo) else ZoneInfo("UTC")
        year, week = week_of(now)
        now_ms = int(now.timestamp() * 1000)
        tree = VenueTree.read(self.storage)
        kept = []
        said_week = week_words(year, week)
        for head in tree.heads():
            try:
                stored = self.keep(build_weekly_report(self.storage, head, year, week, tz, now_ms, tree))
            except Exception:  # one unit's failure must not stop the others' reports
                logger.exception("weekly report of unit %s failed", head)
                continue
            kept.append(stored)
            if audit is not None:
                audit.record("qrgate.report.generated", ip="scheduler", venue_id=head, week=said_week,
                             week_id=f"{year}-W{week:02d}", people=stored.summary["people"],
                             venues=len(tree.within(head)))
        for code, name, venue_ids in self._areas(officers):
            try:
                report = build_area_report(self.storage, code, name, venue_ids, year, week, tz, now_ms, tree)
                stored = self.keep(report)
            except Exception:
                logger.exception("weekly report of area %s failed", code)
                continue
            kept.append(stored)
            if audit is not None:
                audit.record("qrgate.report.generated", ip="scheduler", area=code, week=said_week,
                             week_id=f"{year}-W{week:02d}", people=stored.summary["people"])
        logger.info("weekly reports %d-W%02d: %d units and areas", year, week, len(kept))
        return kept

    def _areas(self, officers) -> list[tuple[str, str, list[int]]]:
        """(code, name, venue ids) of every area held by an officer today."""
        db = self.storage.sql
        if officers is None or not db.has_table("area_officers"):
            return []
        out = []
        for code, account_id in db.rows("SELECT area_code, min(account_id) FROM area_officers GROUP BY area_code"
                                        " ORDER BY area_code"):
            area = next((a for a in officers.areas_of(account_id) if a.code == code), None)
            if area is not None:
                out.append((code, area.name, officers.venue_ids(account_id, code)))
        return out
