"""Large exports as background jobs: a small pool of worker threads writes the file
(server.reports.export) while the progress page polls; each file is downloaded once
and deleted, or deleted after an hour.

Jobs are rows of ``export_jobs`` in the server's database, so every web process on the
host answers for any job (docs/scaling.md). A process is named for ever by
``process_identity``: a job whose process is gone is failed when the next one starts.
"""

from __future__ import annotations

import logging
import os
import re
import secrets
import shutil
import socket
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

from qrgate.errors import UserError
from server.reports.export import (FORMATS, XLSX_MAX_ROWS, checkin_rows, count_rows, export_columns, write_csv,
                                   write_xlsx)
from server.web import i18n

logger = logging.getLogger(__name__)

i18n.register({
    "export.refused.format": ("Chọn CSV hoặc XLSX.", "Choose CSV or XLSX."),
    "export.refused.too_big": ("{total} dòng không vừa một trang XLSX: hãy chọn CSV hoặc khoảng ngày ngắn hơn.",
                               "{total} rows do not fit in one XLSX sheet; choose CSV or a shorter period."),
    "export.refused.busy": ("Bạn đang có {running} tệp đang tạo: hãy đợi một tệp xong rồi thử lại.",
                            "{running} exports are already running for this account; wait for one to finish."),
    "export.refused.no_venue": ("Hãy chọn ít nhất một địa điểm.", "Choose at least one venue."),
    "export.error.restarted": ("Máy chủ khởi động lại khi đang tạo tệp: hãy tạo lại.",
                               "The server restarted during the export: make it again."),
    "export.error.stopped": ("Máy chủ dừng trước khi tạo tệp: hãy tạo lại.",
                             "The server stopped before the export ran: make it again."),
    "export.error.failed": ("Không tạo được tệp: hãy thử lại.", "The export failed: try again."),
})


class ExportRefused(UserError):
    """An export job that cannot start (too many running for the account, bad format);
    ``key`` names the words that say why (``str()`` is the English, for the API)."""

    def __init__(self, key: str, **values):
        super().__init__(i18n.translate("en", key, **values))
        self.key = key
        self.values = values

    def text(self, lang: str) -> str:
        return i18n.translate(lang, self.key, **self.values)


@dataclass
class ExportJob:
    id: str
    account_id: int
    venue_id: int  # the first of the venues
    fmt: str
    filename: str
    start_ms: int
    end_ms: int
    total: int
    created_s: float
    state: str = "queued"  # queued, running, done, failed, downloaded, expired
    rows_done: int = 0
    finished_s: float | None = None
    error: str = ""  # a text key (export.error.*) or a UserError's words
    path: Path | None = field(default=None, repr=False)
    venue_ids: tuple[int, ...] = ()  # every venue of the export
    lang: str = "vi"  # the language of the file's words

    def __post_init__(self):
        if not self.venue_ids:
            self.venue_ids = (self.venue_id,)

    def error_text(self, lang: str) -> str:
        return i18n.translate(lang, self.error) if self.error.startswith("export.") else self.error

    @property
    def active(self) -> bool:
        return self.state in ("queued", "running")

    def percent(self) -> int:
        if self.state in ("done", "downloaded"):
            return 100
        if self.total <= 0:
            return 0
        return min(99, self.rows_done * 100 // self.total)

    def as_dict(self) -> dict[str, Any]:
        return {"id": self.id, "venue_id": self.venue_id, "venue_ids": list(self.venue_ids), "format": self.fmt,
                "state": self.state, "rows_done": self.rows_done, "total": self.total, "percent": self.percent(),
                "filename": self.filename, "error": self.error_text("en")}


JOB_COLUMNS = ("id, account_id, venue_id, fmt, filename, start_ms, end_ms, total, created_ms, state, rows_done,"
               " finished_ms, error, path, venues, lang")
PROGRESS_EVERY_S = 0.5  # how often a running job writes its row count for the other processes
SWEEP_EVERY_S = 10.0  # how often reading a job also looks for expired files and old jobs
JOB_ID = re.compile(r"[A-Za-z0-9_-]{22}")  # secrets.token_urlsafe(16); anything else is no job


class ExportJobs:
    """Runs large exports on a small pool of worker threads.

    Files go to a private folder (mode 0700) and are deleted after their one download or
    ``ttl_s`` after they were finished, whichever comes first: they hold personal data,
    masked or not. Each account may have ``per_account`` jobs queued or running at once.

    Jobs are rows of ``export_jobs`` in the server's database, so every web process on
    the host (they share the port and the data folder: docs/scaling.md) answers for any
    job: its progress, its one download. The process running a job keeps it in memory
    too and writes its progress every PROGRESS_EVERY_S. A job whose process is gone (a
    restart in the middle) is marked failed, and files no job names are removed, when a
    process starts.
    """

    def __init__(self, storage, tz: ZoneInfo, folder: str | Path | None = None, *, workers: int = 2,
                 per_account: int = 2, ttl_s: float = 3600, clock: Callable[[], float] = time.time):
        if folder is None:
            base = getattr(storage, "data_dir", None)  # the server's local folder
            folder = Path(base) / "exports" if base else Path(tempfile.mkdtemp(prefix="qrgate-exports-"))
        self.folder = Path(folder)
        self.folder.mkdir(parents=True, exist_ok=True)
        os.chmod(self.folder, 0o700)
        self.storage = storage
        self.db = storage.sql
        self.tz = tz
        self.per_account = per_account
        self.ttl_s = ttl_s
        self.clock = clock
        self.host = socket.gethostname()
        # This process (and this instance of it: tests make several in one process).
        self.owner = f"{process_identity()}#{secrets.token_hex(4)}"
        self._jobs: dict[str, ExportJob] = {}  # the jobs this process runs
        self._swept_s = float("-inf")
        self._pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="export")
        if not self.db.has_table("export_jobs"):
            self.db.schema(
                "CREATE TABLE IF NOT EXISTS export_jobs (id TEXT PRIMARY KEY, account_id BIGINT NOT NULL,"
                " venue_id BIGINT NOT NULL, fmt TEXT NOT NULL, filename TEXT NOT NULL, start_ms BIGINT,"
                " end_ms BIGINT, total BIGINT, created_ms BIGINT NOT NULL, state TEXT NOT NULL,"
                " rows_done BIGINT NOT NULL DEFAULT 0, finished_ms BIGINT, error TEXT NOT NULL DEFAULT '',"
                " path TEXT, host TEXT NOT NULL, owner TEXT NOT NULL, venues TEXT NOT NULL DEFAULT '',"
                " lang TEXT NOT NULL DEFAULT 'vi');"
                " CREATE INDEX IF NOT EXISTS export_jobs_account ON export_jobs (account_id, created_ms)")
        else:  # jobs of several venues, in the reader's language: a table from before has neither
            self.db.ensure_column("export_jobs", "venues", "TEXT NOT NULL DEFAULT ''")
            self.db.ensure_column("export_jobs", "lang", "TEXT NOT NULL DEFAULT 'vi'")
        self._timers: set[threading.Timer] = set()
        self._forget_dead()
        self._remove_orphans()
        self.sweep()

    def start(self, account_id: int, venue_ids: int | list[int] | tuple[int, ...], fmt: str, start_ms: int,
              end_ms: int, filename: str, lang: str = "vi") -> ExportJob:
        """Queue an export of the venues' masked check-ins in [start_ms, end_ms), its
        words in ``lang``. The caller has checked the account may export each venue."""
        ids = tuple(sorted({int(v) for v in ([venue_ids] if isinstance(venue_ids, int) else venue_ids)}))
        if not ids:
            raise ExportRefused("export.refused.no_venue")
        if fmt not in FORMATS:
            raise ExportRefused("export.refused.format")
        self._sweep_now_and_then()
        total = count_rows(self.storage, ids, start_ms, end_ms)
        if fmt == "xlsx" and total > XLSX_MAX_ROWS:
            raise ExportRefused("export.refused.too_big", total=total)
        job = ExportJob(secrets.token_urlsafe(16), account_id, ids[0], fmt, filename, start_ms, end_ms,
                        total, self.clock(), venue_ids=ids, lang=lang if lang in i18n.LANGUAGES else "vi")
        # The count and the insert in one serialised transaction: two processes (or two
        # clicks) cannot both take the account's last free place.
        with self.db.transaction(serial="export_jobs") as db:
            running = db.value("SELECT count(*) FROM export_jobs WHERE account_id = ? AND state IN"
                               " ('queued', 'running')", [account_id], default=0)
            if running >= self.per_account:
                raise ExportRefused("export.refused.busy", running=running)
            db.execute(f"INSERT INTO export_jobs ({JOB_COLUMNS}, host, owner) VALUES"
                       " (?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?,?)",
                       [job.id, account_id, ids[0], fmt, filename, start_ms, end_ms, total,
                        int(job.created_s * 1000), job.state, 0, None, "", None, ",".join(map(str, ids)), job.lang,
                        self.host, self.owner])
            self._jobs[job.id] = job
        self._pool.submit(self._run, job)
        return job

    def get(self, job_id: str, account_id: int) -> ExportJob | None:
        """The job if this account started it; None otherwise (the caller answers 404)."""
        if not JOB_ID.fullmatch(job_id):
            return None
        self._sweep_now_and_then()
        own = self._jobs.get(job_id)
        if own is not None and own.account_id == account_id:
            return own
        found = self._select("WHERE id = ? AND account_id = ?", [job_id, account_id])
        return found[0] if found else None

    def for_account(self, account_id: int, venue_id: int | None = None) -> list[ExportJob]:
        """The account's jobs, newest first (only those that include ``venue_id``, when given)."""
        self._sweep_now_and_then()
        jobs = [self._jobs.get(j.id, j) for j in self._select("WHERE account_id = ?", [account_id])]
        if venue_id is not None:
            jobs = [j for j in jobs if venue_id in j.venue_ids]
        return sorted(jobs, key=lambda j: (-j.created_s, j.id))

    def take(self, job_id: str, account_id: int) -> ExportJob | None:
        """Hand a finished file over once: the job becomes 'downloaded' and the caller must
        call ``discard`` once the file is sent. None if there is nothing to download."""
        if not JOB_ID.fullmatch(job_id):
            return None
        # Only a file on this host's disk (with processes on several hosts: docs/scaling.md).
        taken = self.db.execute("UPDATE export_jobs SET state = 'downloaded' WHERE id = ? AND account_id = ?"
                                " AND state = 'done' AND path IS NOT NULL AND host = ?",
                                [job_id, account_id, self.host])
        if taken != 1:
            return None
        own = self._jobs.get(job_id)
        if own is not None:
            own.state = "downloaded"
            return own
        return self._select("WHERE id = ?", [job_id])[0]

    def discard(self, job: ExportJob) -> None:
        if job.path is not None:
            _remove(job.path)

    def withdraw(self, job_id: str, account_id: int) -> None:
        """The account may no longer export the job's venue (its role was revoked after
        the job started): its finished file is deleted now instead of at the hour."""
        if not JOB_ID.fullmatch(job_id):
            return
        found = self.db.one("SELECT path FROM export_jobs WHERE id = ? AND account_id = ? AND state = 'done'"
                            " AND host = ?", [job_id, account_id, self.host])
        if found is None:
            return
        if self.db.execute("UPDATE export_jobs SET state = 'expired' WHERE id = ? AND state = 'done'", [job_id]) == 1:
            if found[0]:
                _remove(Path(found[0]))
            if job_id in self._jobs:
                self._jobs[job_id].state = "expired"

    def sweep(self, now: float | None = None) -> int:
        """Delete files finished more than ttl_s ago and forget old jobs; return files removed."""
        now = self.clock() if now is None else now
        self._swept_s = now
        removed = 0
        expired = self.db.rows("SELECT id, path FROM export_jobs WHERE state = 'done' AND finished_ms <= ?"
                               " AND host = ?", [int((now - self.ttl_s) * 1000), self.host])
        for job_id, path in expired:
            # Only the process that marks it expired deletes the file: never one being sent.
            if self.db.execute("UPDATE export_jobs SET state = 'expired' WHERE id = ? AND state = 'done'",
                               [job_id]) == 1:
                if path and _remove(Path(path)):
                    removed += 1
                if job_id in self._jobs:
                    self._jobs[job_id].state = "expired"
        day_ago = int((now - 24 * 3600) * 1000)
        self.db.execute("DELETE FROM export_jobs WHERE created_ms <= ? AND state NOT IN ('queued', 'running')",
                        [day_ago])
        for job_id, job in list(self._jobs.items()):
            if not job.active and now - job.created_s >= 24 * 3600:
                del self._jobs[job_id]
        return removed

    def close(self) -> None:
        self._pool.shutdown(wait=True, cancel_futures=True)
        for timer in list(self._timers):
            timer.cancel()
        # Jobs that never started fail now; finished files stay for a download from
        # another process or after a restart, until their time is up.
        for job in self._jobs.values():
            if job.state == "queued":
                self._finish(job, "failed", "export.error.stopped")

    # -- inside -------------------------------------------------------------------------

    def _sweep_when_due(self, job: ExportJob) -> None:
        """A finished file is deleted when its hour is up even if nobody opens an export
        page: a timer sweeps then (a thread that waits, then ends, holding nothing)."""
        def sweep() -> None:
            self._timers.discard(timer)
            try:
                self.sweep()
            except Exception:  # the next sweep, on the next request or start, tries again
                logger.exception("could not sweep the export files")

        timer = threading.Timer(self.ttl_s + 1, sweep)
        timer.daemon = True
        self._timers.add(timer)
        timer.start()

    def _sweep_now_and_then(self) -> None:
        # A progress page asks every second: the database is swept every SWEEP_EVERY_S.
        if self.clock() - self._swept_s >= SWEEP_EVERY_S:
            self.sweep()

    def _select(self, where: str, params: list) -> list[ExportJob]:
        return [ExportJob(r[0], r[1], r[2], r[3], r[4], r[5], r[6], r[7] or 0, r[8] / 1000, r[9], r[10] or 0,
                          r[11] / 1000 if r[11] is not None else None, r[12] or "", Path(r[13]) if r[13] else None,
                          tuple(int(v) for v in (r[14] or "").split(",") if v.isdigit()), r[15] or "vi")
                for r in self.db.rows(f"SELECT {JOB_COLUMNS} FROM export_jobs {where}", params)]

    def _forget_dead(self) -> None:
        """Jobs queued or running in a process of this host that is gone (another boot,
        or no live process with that id and start time): failed, partial files removed."""
        for job_id, owner in self.db.rows("SELECT id, owner FROM export_jobs WHERE state IN ('queued', 'running')"
                                          " AND host = ?", [self.host]):
            if process_alive(owner.split("#", 1)[0]):
                continue
            if self.db.execute("UPDATE export_jobs SET state = 'failed', error = ?, finished_ms = ? WHERE id = ?"
                               " AND state IN ('queued', 'running')",
                               ["export.error.restarted", int(self.clock() * 1000), job_id]):
                _remove(self.folder / f"{job_id}.part")
                logger.warning("export %s was cut short by a restart", job_id)

    def _remove_orphans(self) -> None:
        """Files in the folder no queued, running or finished job names (left by a crash,
        or from before the jobs were kept in the database)."""
        # The folder is listed before the jobs are read: a job's row is committed before
        # its file is made, so every file listed here that belongs to a job is named.
        entries = list(self.folder.iterdir())
        live = {r[0] for r in self.db.rows("SELECT id FROM export_jobs WHERE state IN ('queued', 'running', 'done')")}
        for entry in entries:
            if entry.name.split(".", 1)[0] not in live:
                _remove(entry)

    def _finish(self, job: ExportJob, state: str, error: str = "") -> None:
        finished_s = self.clock()
        # The row first: a status read from memory that says "done" must find a download
        # that the database (which ``take`` claims from) already allows.
        self.db.execute("UPDATE export_jobs SET state = ?, error = ?, finished_ms = ?, rows_done = ?, total = ?,"
                        " path = ? WHERE id = ?",
                        [state, error, int(finished_s * 1000), job.rows_done, job.total,
                         str(job.path) if job.path else None, job.id])
        job.error, job.finished_s = error, finished_s
        if job.active:  # not if the file was taken (or withdrawn) in between
            job.state = state

    def _run(self, job: ExportJob) -> None:
        job.state = "running"
        self.db.execute("UPDATE export_jobs SET state = 'running' WHERE id = ?", [job.id])
        final = self.folder / f"{job.id}.{job.fmt}"
        partial = self.folder / f"{job.id}.part"
        written = [time.monotonic()]

        def progress(rows: int) -> None:
            job.rows_done = rows
            if time.monotonic() - written[0] >= PROGRESS_EVERY_S:
                written[0] = time.monotonic()
                self.db.execute("UPDATE export_jobs SET rows_done = ? WHERE id = ?", [rows, job.id])

        try:
            rows = checkin_rows(self.storage, job.venue_ids, self.tz, job.start_ms, job.end_ms, job.lang)
            columns = export_columns(job.lang)
            if job.fmt == "xlsx":
                job.rows_done = write_xlsx(partial, columns, rows, sheet=i18n.translate(job.lang, "export.sheet"),
                                           progress=progress)
            else:
                job.rows_done = write_csv(partial, columns, rows, progress=progress)
            os.replace(partial, final)
            job.path = final
            job.total = max(job.total, job.rows_done)
            self._finish(job, "done")
            self._sweep_when_due(job)
        except Exception as exc:  # the job reports failure; the server goes on
            logger.exception("export %s of venues %s failed", job.id, job.venue_ids)
            _remove(partial)
            _remove(final)
            job.path = None
            self._finish(job, "failed", str(exc) if isinstance(exc, UserError) else "export.error.failed")


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _start_ticks(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks since boot (None: no such process);
    "-" where /proc cannot tell."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except FileNotFoundError:
        return None
    except (OSError, IndexError):
        return "-"


def process_identity(pid: int | None = None) -> str:
    """``host:boot:pid:start``: names one process for ever, whatever reuses its number
    later (a container's server is PID 1 after every restart)."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{_boot_id()}:{pid}:{_start_ticks(pid)}"


def process_alive(identity: str) -> bool:
    """Whether the process ``process_identity`` named still runs on this host."""
    try:
        host, boot, pid, start = identity.rsplit(":", 3)
    except ValueError:
        return False
    if host != socket.gethostname() or boot != _boot_id() or not pid.isdigit():
        return False
    now = _start_ticks(int(pid))
    return now is not None and now == start


def _remove(path: Path) -> bool:
    try:
        if path.is_dir():
            shutil.rmtree(path)
        else:
            path.unlink()
        return True
    except FileNotFoundError:
        return False
