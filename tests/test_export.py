"""Exports: CSV and XLSX read back by real readers (Python's csv, openpyxl) show hostile
names as text and Vietnamese intact, in Vietnamese words by default (headers, "Vào"/"Ra",
card kinds, dd/mm/yyyy HH:MM times) and English on request; memory does not grow with
the row count; export jobs run in the background, belong to their account and leave no
file behind."""

from __future__ import annotations

import csv
import re
import datetime as dt
import io
import socket
import subprocess
import sys
import threading
import time
import tracemalloc
from zoneinfo import ZoneInfo

import openpyxl
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from conftest import ON_POSTGRESQL, new_storage, wait_until
from qrgate import protocol
from qrgate.masking import mask_person_name
from server.ingest.bridge import Bridge
from server.reports.export import (CHECKIN_FIELDS, checkin_rows, csv_stream, export_columns, neutralise, write_csv,
                                   write_xlsx)
from server.reports.export_jobs import ExportJobs, ExportRefused, process_identity
from test_web_support import Site

pytestmark = pytest.mark.timeout(120)

TZ = ZoneInfo("Asia/Ho_Chi_Minh")
HOSTILE = ["=cmd|' /C calc'!A0", "+1", "-2+3", "@SUM(1)", "\t=1+1", "\r=1+1", "\x00=1+1",
           "<img src=x onerror=alert(1)>", "Lê Việt Hưng"]
OWNER, MANAGER, CONTROLLER, STRANGER = "0912486419", "0976929792", "0969201470", "0903123456"


class Gate:
    """A registered station with its own Ed25519 key; its scans go through the bridge."""

    def __init__(self, storage, venue_id: int, station_id: str = "gate-1"):
        self.key = Ed25519PrivateKey.generate()
        self.station_id = station_id
        storage.add_station(station_id, protocol.public_key_to_text(self.key.public_key()), venue_id)
        self.bridge = Bridge(storage)
        self.seq = 0

    def scan(self, scans: list[dict]) -> None:
        """Each scan: name, id, wall_ms, and optionally dir, sync, boot, mono, kind (cccd) and
        birth (1990-01-01)."""
        records = []
        for s in scans:
            self.seq += 1
            records.append(protocol.canonical_json(protocol.sign_record({
                "v": 1, "type": "checkin", "st": self.station_id, "seq": self.seq, "ts": s["wall_ms"],
                "mono": s.get("mono", self.seq), "boot": s.get("boot", "b"), "sync": s.get("sync", True),
                "dir": s.get("dir", "in"), "kind": s.get("kind", "cccd"),
                "person": {"id": s["id"], "name": s["name"], "birth": s.get("birth", "1990-01-01"), "sex": "M"}},
                self.key)))
        for i in range(0, len(records), 400):
            ack = self.bridge.handle(protocol.records_topic(self.station_id), protocol.encode_batch(records[i:i + 400]))
            assert ack is not None and not ack.refused

    def clock(self, boot: str, base_ms: int, wall_ms: int) -> None:
        """The station's clock synced during ``boot``: wall time = mono + base_ms."""
        self.seq += 1
        record = protocol.sign_record({"v": 1, "type": "clock", "st": self.station_id, "seq": self.seq,
                                       "ts": wall_ms, "mono": wall_ms - base_ms, "boot": boot, "sync": True,
                                       "base": base_ms}, self.key)
        self.bridge.handle(protocol.records_topic(self.station_id),
                           protocol.encode_batch([protocol.canonical_json(record)]))


def as_stored(text: str) -> str:
    """A name as the server's database keeps it: PostgreSQL text cannot hold NUL, so there
    the storage keeps U+FFFD in its place (the signed record keeps the original)."""
    return text.replace("\x00", "\ufffd") if ON_POSTGRESQL else text


def local_ms(*args) -> int:
    return int(dt.datetime(*args, tzinfo=TZ).timestamp() * 1000)


# -- CSV and XLSX as a spreadsheet reads them -----------------------------------------------

def test_csv_starts_with_a_bom_and_reads_back_with_every_formula_neutralised():
    rows = [(i, name, -5, None, True) for i, name in enumerate(HOSTILE)]
    data = b"".join(csv_stream(["no", "name", "n", "empty", "flag"], rows))
    assert data.startswith(b"\xef\xbb\xbf")
    text = data.decode("utf-8-sig")
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back[0] == ["no", "name", "n", "empty", "flag"]
    names = [r[1] for r in back[1:]]
    assert names[:7] == ["'=cmd|' /C calc'!A0", "'+1", "'-2+3", "'@SUM(1)", "'\t=1+1", "'\r=1+1", "'\x00=1+1"]
    assert names[7] == "<img src=x onerror=alert(1)>"  # not a formula: left as it is
    assert names[8] == "Lê Việt Hưng"
    # No text cell a spreadsheet would evaluate; numbers stay numbers (-5 is not a formula).
    assert all(not r[1].startswith(("=", "+", "-", "@", "\t", "\r", "\x00")) for r in back)
    assert {r[2] for r in back[1:]} == {"-5"} and {r[4] for r in back[1:]} == {"1"}


def test_neutralise_keeps_numbers_and_marks_text_that_looks_like_one():
    assert neutralise(-3) == -3 and neutralise("-3") == "'-3" and neutralise(None) == ""
    assert neutralise(dt.datetime(2026, 11, 20, 7, 5, tzinfo=TZ)) == "20/11/2026 07:05"


def test_xlsx_opened_by_openpyxl_shows_hostile_names_as_text(tmp_path):
    path = tmp_path / "out.xlsx"
    when = dt.datetime(2026, 11, 20, 7, 5, 9, tzinfo=TZ)
    rows = [(when, name, i) for i, name in enumerate(HOSTILE)]
    assert write_xlsx(path, ["time", "name", "no"], rows, sheet="Ra vào") == len(HOSTILE)
    book = openpyxl.load_workbook(path)
    sheet = book["Ra vào"]
    assert [c.value for c in sheet[1]] == ["time", "name", "no"]
    cells = [sheet.cell(row=i + 2, column=2) for i in range(len(HOSTILE))]
    assert all(c.data_type == "s" for c in cells)  # text, never a formula ("f")
    values = [c.value for c in cells]
    assert values[:5] == HOSTILE[:5]  # kept exactly: a typed text cell is not run
    # XML cannot carry CR at the start safely or NUL at all: they become U+FFFD.
    assert values[5] == "\ufffd=1+1" and values[6] == "\ufffd=1+1"
    assert values[7] == "<img src=x onerror=alert(1)>" and values[8] == "Lê Việt Hưng"
    # A cell that looks like a formula also has Excel's quote prefix, so editing keeps it text.
    assert cells[0].quotePrefix and cells[3].quotePrefix and not cells[8].quotePrefix
    assert sheet.cell(row=2, column=1).value == dt.datetime(2026, 11, 20, 7, 5, 9)
    assert sheet.cell(row=2, column=1).is_date
    assert sheet.cell(row=3, column=3).value == 1 and sheet.cell(row=3, column=3).data_type == "n"


def test_progress_is_reported_while_writing_and_ends_at_the_row_count(tmp_path):
    seen: list[int] = []
    rows = ((i, f"người {i}") for i in range(1234))
    assert write_xlsx(tmp_path / "p.xlsx", ["no", "name"], rows, progress=seen.append) == 1234
    assert seen == [500, 1000, 1234]
    seen.clear()
    assert write_csv(tmp_path / "p.csv", ["no"], ((i,) for i in range(1000)), progress=seen.append) == 1000
    assert seen[-1] == 1000 and seen == sorted(seen)


def _peak(run) -> int:
    tracemalloc.start()
    try:
        run()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def _rows(n: int):
    for i in range(n):
        yield ("20/11/2026 07:05", "Chợ Mới", "Vào", "Lê V*** H***", "0010****1234", "19**", "CCCD", "gate-1", i, "",
               "Có")


def test_csv_memory_does_not_grow_with_the_row_count():
    def drain(n):
        return lambda: sum(len(chunk) for chunk in csv_stream(export_columns("vi"), _rows(n)))

    small, large = _peak(drain(20_000)), _peak(drain(200_000))
    # 200 000 rows are ~16 MB of CSV; the peak stays that of one chunk.
    assert large < 2 * small + 256 * 1024, (small, large)
    assert large < 2 * 1024 * 1024


def test_xlsx_memory_does_not_grow_with_the_row_count(tmp_path):
    def write(n):
        return lambda: write_xlsx(tmp_path / f"{n}.xlsx", ["name", "no"], ((f"Lê V*** H*** {i}", i) for i in range(n)))

    small, large = _peak(write(10_000)), _peak(write(100_000))
    # In-memory XLSX writing would hold every row (tens of MB here); constant_memory does not.
    assert large < 2 * small + 256 * 1024, (small, large)
    assert large < 4 * 1024 * 1024
    assert openpyxl.load_workbook(tmp_path / "100000.xlsx", read_only=True).active.max_row == 100_001


# -- a venue's rows -----------------------------------------------------------------------------

@pytest.fixture
def storage(tmp_path):
    return new_storage(tmp_path / "server.sqlite3")


def test_venue_rows_are_masked_in_time_order_within_local_days(storage):
    venue = storage.add_venue("Chợ Mới")
    other = storage.add_venue("Chợ Cũ")
    gate = Gate(storage, venue)
    Gate(storage, other, "gate-2").scan([{"name": "Người Khác", "id": "001090000099", "wall_ms": local_ms(2026, 11, 20, 9)}])
    gate.scan([
        {"name": "Trước Nửa Đêm", "id": "001090000001", "wall_ms": local_ms(2026, 11, 19, 23, 59)},
        {"name": "Lê Việt Hưng", "id": "001090000002", "wall_ms": local_ms(2026, 11, 20, 0, 1), "dir": "in"},
        {"name": "=cmd|' /C calc'!A0", "id": "001090000003", "wall_ms": local_ms(2026, 11, 20, 8)},
        {"name": "Lê Việt Hưng", "id": "001090000002", "wall_ms": local_ms(2026, 11, 20, 17), "dir": "out"},
        {"name": "Sau Nửa Đêm", "id": "001090000004", "wall_ms": local_ms(2026, 11, 21, 0, 0)},
    ])
    rows = list(checkin_rows(storage, [venue], TZ, local_ms(2026, 11, 20, 0, 0), local_ms(2026, 11, 21, 0, 0),
                             batch=2))
    assert len(rows[0]) == len(CHECKIN_FIELDS)
    assert [r[3] for r in rows] == ["Lê V*** H***", "=cmd|' /* c*******", "Lê V*** H***"]
    assert [r[2] for r in rows] == ["Vào", "Vào", "Ra"] and {r[6] for r in rows} == {"CCCD"}
    assert {r[1] for r in rows} == {"Chợ Mới"}
    assert rows[0][0] == dt.datetime(2026, 11, 20, 0, 1, tzinfo=TZ)
    assert all("Việt" not in str(cell) and "001090000002" not in str(cell) for r in rows for cell in r)
    assert (rows[0][7], rows[0][8]) == ("gate-1", 2)
    english = list(checkin_rows(storage, [venue], TZ, local_ms(2026, 11, 20), local_ms(2026, 11, 21), "en"))
    assert [r[2] for r in english] == ["In", "In", "Out"] and english[0][6] == "Citizen ID card"


def test_rows_of_several_venues_come_in_time_order_each_with_its_venue(storage):
    mine = [storage.add_venue(f"Phân xưởng {n}") for n in (1, 2, 3)]
    for n, venue in enumerate(mine):
        Gate(storage, venue, f"gate-{n}").scan([
            {"name": f"Người {n} {k}", "id": f"00109{n:03d}{k:04d}", "wall_ms": local_ms(2026, 11, 20, 7, k * 3 + n)}
            for k in range(5)])
    rows = list(checkin_rows(storage, mine[:2], TZ, local_ms(2026, 11, 20), local_ms(2026, 11, 21), batch=3))
    assert len(rows) == 10  # the third workshop was not asked for
    assert [r[0] for r in rows] == sorted(r[0] for r in rows)
    assert [r[1] for r in rows[:4]] == ["Phân xưởng 1", "Phân xưởng 2", "Phân xưởng 1", "Phân xưởng 2"]


def test_venue_rows_read_from_the_database_keep_memory_flat(storage):
    venue = storage.add_venue("Nhà máy")
    start = local_ms(2026, 11, 1)
    _bulk_rows(storage, venue, 60_000, start)

    def export(n):
        return lambda: sum(len(c) for c in csv_stream(export_columns("vi"), checkin_rows(
            storage, [venue], TZ, start, start + n + 1)))

    small, large = _peak(export(6_000)), _peak(export(60_000))
    assert large < 2 * small + 256 * 1024, (small, large)


# -- export jobs ---------------------------------------------------------------------------------

class Clock:
    def __init__(self, now: float = 1_790_000_000.0):
        self.now = now

    def __call__(self) -> float:
        return self.now


def test_a_job_writes_the_file_reports_progress_and_deletes_it_after_the_download(storage, tmp_path):
    venue = storage.add_venue("Chợ Mới")
    Gate(storage, venue).scan([{"name": n, "id": f"00109000{i:04d}", "wall_ms": local_ms(2026, 11, 20, 8, i)}
                               for i, n in enumerate(HOSTILE * 3)])
    clock = Clock()
    jobs = ExportJobs(storage, TZ, tmp_path / "exports", clock=clock)
    try:
        job = jobs.start(7, venue, "xlsx", local_ms(2026, 11, 20), local_ms(2026, 11, 21), "a.xlsx")
        assert job.total == 27
        wait_until(lambda: jobs.get(job.id, 7).state in ("done", "failed"), 30, "export job")
        assert job.state == "done" and job.rows_done == 27 and job.percent() == 100
        assert jobs.get(job.id, 8) is None  # another account sees nothing
        assert jobs.take(job.id, 8) is None
        sheet = openpyxl.load_workbook(job.path).active
        assert [c.value for c in sheet[1]][:4] == ["Thời gian", "Địa điểm", "Chiều", "Họ tên"]
        assert sheet.title == "Lượt ra vào" and sheet.cell(row=2, column=3).value == "Vào"
        assert sheet.cell(row=2, column=1).number_format == "dd/mm/yyyy hh:mm"
        names = [sheet.cell(row=r, column=4).value for r in range(2, 29)]
        assert "=cmd|' /* c*******" in names and all(sheet.cell(row=r, column=4).data_type == "s" for r in range(2, 29))
        taken = jobs.take(job.id, 7)
        assert taken is job and jobs.take(job.id, 7) is None  # one download only
        jobs.discard(taken)
        assert list((tmp_path / "exports").iterdir()) == []
    finally:
        jobs.close()


def test_an_unfetched_file_is_deleted_after_an_hour(storage, tmp_path):
    venue = storage.add_venue("Chợ Mới")
    clock = Clock()
    jobs = ExportJobs(storage, TZ, tmp_path / "exports", clock=clock)
    try:
        job = jobs.start(7, venue, "csv", 0, 2 ** 42, "a.csv")
        wait_until(lambda: job.state == "done", 30, "export job")
        assert job.path.read_bytes() == ("\ufeff" + ",".join(export_columns("vi")) + "\r\n").encode()
        clock.now += 3599
        assert jobs.sweep() == 0 and job.path.exists()
        clock.now += 1
        assert jobs.sweep() == 1 and not job.path.exists()
        assert jobs.get(job.id, 7).state == "expired" and jobs.take(job.id, 7) is None
    finally:
        jobs.close()


def test_files_left_by_a_previous_run_are_removed_at_start(storage, tmp_path):
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "old.xlsx").write_bytes(b"personal data")
    jobs = ExportJobs(storage, TZ, folder)
    try:
        assert list(folder.iterdir()) == [] and folder.stat().st_mode & 0o777 == 0o700
    finally:
        jobs.close()


def test_another_web_process_shows_the_job_and_hands_its_file_over_once(storage, tmp_path):
    # Web processes on one host share the port (any of them may get the next request)
    # and the data folder: the jobs are in the database.
    venue = storage.add_venue("Chợ Mới")
    Gate(storage, venue).scan([{"name": "Lê Văn Tám", "id": "001090001234", "wall_ms": local_ms(2026, 11, 20, 8)}])
    first = ExportJobs(storage, TZ, tmp_path / "exports")
    second = ExportJobs(storage, TZ, tmp_path / "exports")  # starts after the first: leaves its files alone
    try:
        job = first.start(7, venue, "csv", 0, 2 ** 42, "a.csv")
        wait_until(lambda: (second.get(job.id, 7) or job).state == "done", 30, "the job, seen from the other")
        seen = second.get(job.id, 7)
        assert (seen.rows_done, seen.total, seen.percent()) == (1, 1, 100)
        assert [j.id for j in second.for_account(7, venue)] == [job.id] and second.get(job.id, 8) is None
        third = ExportJobs(storage, TZ, tmp_path / "exports")  # a process started later still
        third.close()
        taken = second.take(job.id, 7)
        assert taken.path.read_bytes().count(b"\r\n") == 2 and "Lê V** T**" in taken.path.read_text("utf-8-sig")
        assert first.take(job.id, 7) is None and second.take(job.id, 7) is None  # one download only
        second.discard(taken)
        assert list((tmp_path / "exports").iterdir()) == []
    finally:
        first.close()
        second.close()


def test_a_job_cut_short_by_a_restart_is_failed_and_its_partial_file_removed(storage, tmp_path):
    gone = subprocess.Popen([sys.executable, "-c", "pass"])
    gone.wait(timeout=30)
    folder = tmp_path / "exports"
    folder.mkdir()
    (folder / "cut-short-by-a-restart.part").write_bytes(b"half of the rows")
    jobs = ExportJobs(storage, TZ, folder)  # makes the table; the job below is of a process now gone
    jobs.close()
    # The process is gone; so is, for the second row, an earlier process that had this
    # process's number (a container's server is PID 1 after every restart).
    earlier_me = process_identity().rsplit(":", 1)[0] + ":1"
    for job_id, owner in (("cut-short-by-a-restart", process_identity(gone.pid)),
                          ("cut-by-a-restart-too-1", earlier_me)):
        storage.sql.execute(
            "INSERT INTO export_jobs (id, account_id, venue_id, fmt, filename, start_ms, end_ms, total, created_ms,"
            " state, rows_done, host, owner) VALUES (?, 7, 1, 'csv', 'a.csv', 0, 1, 10, ?, 'running', 4, ?, ?)",
            [job_id, int(time.time() * 1000), socket.gethostname(), f"{owner}#0000"])
    jobs = ExportJobs(storage, TZ, folder)
    try:
        for job_id in ("cut-short-by-a-restart", "cut-by-a-restart-too-1"):
            job = jobs.get(job_id, 7)
            assert job.state == "failed" and "khởi động lại" in job.error_text("vi")
        assert list(folder.iterdir()) == []
        assert jobs.start(7, 1, "csv", 0, 1, "b.csv")  # the account is not held up by it
    finally:
        jobs.close()


def test_an_account_may_run_only_so_many_jobs_at_once(storage, tmp_path):
    venue = storage.add_venue("Chợ Mới")
    jobs = ExportJobs(storage, TZ, tmp_path / "exports", workers=1, per_account=2)
    release = threading.Event()
    jobs._pool.submit(release.wait, 30)  # the only worker is busy: jobs stay queued
    try:
        first = jobs.start(7, venue, "csv", 0, 2 ** 42, "a.csv")
        jobs.start(7, venue, "xlsx", 0, 2 ** 42, "b.xlsx")
        with pytest.raises(ExportRefused, match="already running"):
            jobs.start(7, venue, "csv", 0, 2 ** 42, "c.csv")
        assert jobs.start(8, venue, "csv", 0, 2 ** 42, "d.csv").state == "queued"  # another account is not held up
        with pytest.raises(ExportRefused, match="Choose CSV or XLSX"):
            jobs.start(8, venue, "pdf", 0, 2 ** 42, "e.pdf")
        release.set()
        wait_until(lambda: first.state == "done", 30, "first job")
        wait_until(lambda: all(j.state == "done" for j in jobs.for_account(7)), 30, "jobs")
        assert jobs.start(7, venue, "csv", 0, 2 ** 42, "c.csv")
    finally:
        release.set()
        jobs.close()


# -- the web routes --------------------------------------------------------------------------------

@pytest.fixture
def site(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login(OWNER)
    venue = owner.create_venue(name="Chợ =cmd|' /C calc'!A0")
    gate = Gate(site.storage, venue)
    day = dt.datetime.fromtimestamp(site.clock(), TZ).replace(hour=7, minute=0, second=0, microsecond=0)
    gate.scan([{"name": n, "id": f"00109000{i:04d}", "wall_ms": int(day.timestamp() * 1000) + i * 60_000}
               for i, n in enumerate(HOSTILE)])
    accounts, venues = site.services.accounts, site.services.venues
    for phone, role in ((MANAGER, "manager"), (CONTROLLER, "controller")):
        venues.add_member(venue, accounts.account_for_phone(phone), role)
    return site, owner, venue, day.date()


def _wait_done(visitor, url: str) -> dict:
    state = {}

    def done():
        state.update(visitor.http.get(url).json())
        return state["state"] in ("done", "failed")

    wait_until(done, 30, "export job")
    return state


def test_owner_exports_xlsx_through_a_job_and_downloads_it_once(site, tmp_path):
    site, owner, venue, day = site
    response = owner.api("POST", f"/api/venues/{venue}/exports",
                         {"start": day.isoformat(), "end": day.isoformat(), "format": "xlsx"})
    assert response.status_code == 202, response.text
    job = response.json()
    assert job["total"] == len(HOSTILE)
    status = _wait_done(owner, job["status_url"])
    assert status["state"] == "done" and status["percent"] == 100 and status["rows_done"] == len(HOSTILE)
    download = owner.http.get(status["download_url"])
    assert download.status_code == 200
    assert download.headers["content-type"].startswith("application/vnd.openxmlformats")
    assert f"luot-ra-vao-dia-diem-{venue}-{day:%d-%m-%Y}-den-{day:%d-%m-%Y}.xlsx" in download.headers[
        "content-disposition"]
    (tmp_path / "got.xlsx").write_bytes(download.content)
    sheet = openpyxl.load_workbook(tmp_path / "got.xlsx").active
    names = [sheet.cell(row=r, column=4).value for r in range(2, 2 + len(HOSTILE))]
    assert "Lê V*** H***" in names and "=cmd|' /* c*******" in names and "@******" in names
    assert "Lê Việt Hưng" not in names
    assert owner.http.get(status["download_url"]).status_code == 404  # deleted after the download
    assert owner.http.get(job["status_url"]).json()["state"] == "downloaded"
    entry = site.services.audit.for_venue(venue)[0]
    assert entry.action == "qrgate.venue.checkins.exported" and entry.data["format"] == "xlsx"
    assert entry.data["rows"] == len(HOSTILE) and entry.phone == "0912486419"


def test_a_job_belongs_to_the_account_that_started_it(site):
    site, owner, venue, day = site
    job = owner.api("POST", f"/api/venues/{venue}/exports",
                    {"start": day.isoformat(), "end": day.isoformat(), "format": "csv"}).json()
    _wait_done(owner, job["status_url"])
    manager = site.visitor("203.0.113.8").login(MANAGER)
    stranger = site.visitor("203.0.113.9").login(STRANGER)
    for other in (manager, stranger):
        assert other.http.get(job["status_url"]).status_code == 404
        assert other.http.get(f"/exports/{job['id']}").status_code == 404
        assert other.http.get(f"/exports/{job['id']}/download").status_code == 404
    assert owner.http.get(f"/exports/{job['id']}/download").status_code == 200


def test_a_controller_cannot_export_and_a_stranger_does_not_see_the_venue(site):
    site, owner, venue, day = site
    controller = site.visitor("203.0.113.8").login(CONTROLLER)
    body = {"start": day.isoformat(), "end": day.isoformat(), "format": "csv"}
    assert controller.api("POST", f"/api/venues/{venue}/exports", body).status_code == 403
    assert controller.http.get(f"/venues/{venue}/export").status_code == 403
    assert controller.http.get(f"/venues/{venue}/export.csv").status_code == 403
    stranger = site.visitor("203.0.113.9").login(STRANGER)
    assert stranger.api("POST", f"/api/venues/{venue}/exports", body).status_code == 404
    assert stranger.http.get(f"/venues/{venue}/export.csv").status_code == 404
    assert owner.api("POST", f"/api/venues/{venue}/exports", body, csrf=False).status_code == 403
    anonymous = site.visitor("203.0.113.10")
    assert anonymous.http.get(f"/venues/{venue}/export").status_code == 303


@pytest.mark.parametrize("start, end, fmt", [
    ("=cmd|' /C calc'!A0", "2026-11-20", "csv"), ("2026-11-20", "2026-11-19", "csv"),
    ("2020-01-01", "2026-11-20", "csv"), ("2026-11-20", "2026-11-20", "pdf"), ("\x00\r\n", "<b>", "xlsx"),
])
def test_hostile_or_wrong_ranges_get_a_clear_400(site, start, end, fmt):
    site, owner, venue, day = site
    response = owner.api("POST", f"/api/venues/{venue}/exports", {"start": start, "end": end, "format": fmt})
    assert response.status_code == 400 and response.json()["detail"]
    page = owner.form(f"/venues/{venue}/export", {"start": start, "end": end, "format": fmt})
    assert page.status_code == 400 and 'id="error"' in page.text
    assert "<b>" not in page.text.split('id="export-form"')[1].split("</form>")[0].replace("&lt;b&gt;", "")


def test_too_long_input_is_refused_not_crashed(site):
    site, owner, venue, day = site
    response = owner.api("POST", f"/api/venues/{venue}/exports", {"start": "9" * 4096, "end": "x", "format": "csv"})
    assert response.status_code == 422
    assert owner.http.get(f"/venues/{venue}/export.csv", params={"from": "9" * 4096}).status_code == 422
    assert owner.http.get("/api/exports/" + "a" * 4096).status_code == 404


def test_the_form_starts_a_job_and_the_progress_page_links_the_file(site):
    site, owner, venue, day = site
    page = owner.http.get(f"/venues/{venue}/export")
    assert page.status_code == 200 and 'id="export-form"' in page.text
    response = owner.form(f"/venues/{venue}/export", {"start": day.isoformat(), "end": day.isoformat(),
                                                      "format": "csv"})
    assert response.status_code == 303
    job_page = response.headers["location"]
    job_id = job_page.rsplit("/", 1)[1]
    _wait_done(owner, f"/api/exports/{job_id}")
    progress = owner.http.get(job_page)
    assert 'src="/static/export.js"' in progress.text and "<script>" not in progress.text
    assert f'href="/exports/{job_id}/download"' in progress.text and 'value="100"' in progress.text
    data = owner.http.get(f"/exports/{job_id}/download").content
    back = list(csv.reader(io.StringIO(data.decode("utf-8-sig"), newline="")))
    assert back[0] == export_columns("vi") and len(back) == 1 + len(HOSTILE)
    assert "'=cmd|' /* c*******" in [r[3] for r in back]
    listing = owner.http.get(f"/venues/{venue}/export")
    assert job_id in listing.text


def _bulk_rows(storage, venue: int, n: int, start_ms: int) -> None:
    """Many check-ins at once, straight into the tables (the bridge would take minutes)."""
    if storage.station("bulk-1") is None:
        storage.add_station("bulk-1", protocol.public_key_to_text(Ed25519PrivateKey.generate().public_key()), venue)
    db = storage.sql
    with db.transaction():
        db.executemany(
            "INSERT INTO checkins (station_id, seq, venue_id, direction, kind, person_key, id_number, name, birth, sex,"
            " wall_ms, mono_ms, boot_id, clock_synced, wall_ms_station, received_ms, sig, record) VALUES"
            " ('bulk-1', ?, ?, 'in', 'cccd', ?, ?, 'Nguyễn Văn An', '1990', 'M', ?, 0, 'b', TRUE, ?, 0, 's', '{}')",
            [(i, venue, f"cccd:{i:012d}", f"{i:012d}", start_ms + i, start_ms + i) for i in range(1, n + 1)])
        if db.has_table("checkin_keys"):  # PostgreSQL keeps the (station, seq) rule in a table of its own
            db.executemany("INSERT INTO checkin_keys (station_id, seq, sig, wall_ms) VALUES ('bulk-1', ?, 's', ?)",
                           [(i, start_ms + i) for i in range(1, n + 1)])


def test_an_account_with_two_running_jobs_is_told_to_wait(site):
    site, owner, venue, day = site
    _bulk_rows(site.storage, venue, 25_000, int(dt.datetime.combine(day, dt.time(8), TZ).timestamp() * 1000))
    body = {"start": day.isoformat(), "end": day.isoformat(), "format": "xlsx"}
    # Each job writes 25 000 rows (seconds of work); the third request comes milliseconds later.
    first = owner.api("POST", f"/api/venues/{venue}/exports", body)
    second = owner.api("POST", f"/api/venues/{venue}/exports", body)
    third = owner.api("POST", f"/api/venues/{venue}/exports", body)
    assert (first.status_code, second.status_code, third.status_code) == (202, 202, 429)
    assert "already running" in third.json()["detail"]
    page = owner.form(f"/venues/{venue}/export", body)
    assert page.status_code == 429 and "Bạn đang có 2 tệp đang tạo" in page.text
    for job in (first.json(), second.json()):
        assert _wait_done(owner, job["status_url"])["rows_done"] == 25_000 + len(HOSTILE)
    after = owner.api("POST", f"/api/venues/{venue}/exports", body)
    assert after.status_code == 202  # a finished job no longer counts
    assert _wait_done(owner, after.json()["status_url"])["state"] == "done"


def test_the_plain_csv_download_streams_the_chosen_days_with_a_bom(site):
    site, owner, venue, day = site
    response = owner.http.get(f"/venues/{venue}/export.csv", params={"from": day.isoformat(), "to": day.isoformat()})
    assert response.status_code == 200 and response.content.startswith(b"\xef\xbb\xbf")
    back = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    names = [r[3] for r in back[1:]]
    assert names == [neutralise(mask_person_name(as_stored(n))) for n in HOSTILE]  # in time order, masked
    assert names[0] == "'=cmd|' /* c*******" and names[-1] == "Lê V*** H***"
    assert all(not r[3].startswith(("=", "+", "-", "@", "\t", "\r", "\x00")) for r in back)
    earlier = owner.http.get(f"/venues/{venue}/export.csv", params={"from": "2020-01-01", "to": "2020-01-07"})
    assert len(list(csv.reader(io.StringIO(earlier.content.decode("utf-8-sig"))))) == 1
    assert site.services.audit.for_venue(venue)[0].data["format"] == "csv"


def test_the_whole_history_csv_streams_every_row_once_the_old_route_is_gone(site):
    site, owner, venue, day = site
    # server/web/app.py built this CSV in memory; its route comes first until it is removed.
    site.app.router.routes[:] = [r for r in site.app.router.routes
                                 if getattr(r, "endpoint", None) is None or r.endpoint.__name__ != "venue_export"]
    response = owner.http.get(f"/venues/{venue}/checkins.csv")
    assert response.status_code == 200 and response.content.startswith(b"\xef\xbb\xbf")
    assert f'filename="luot-ra-vao-dia-diem-{venue}.csv"' in response.headers["content-disposition"]
    back = list(csv.reader(io.StringIO(response.content.decode("utf-8-sig"), newline="")))
    assert back[0] == export_columns("vi") and len(back) == 1 + len(HOSTILE)
    assert back[1][3] == "'=cmd|' /* c*******"
    assert site.services.audit.for_venue(venue)[0].data["rows"] == len(HOSTILE)


def test_files_speak_vietnamese_by_default_and_english_on_request(site):
    site, owner, venue, day = site
    params = {"from": day.isoformat(), "to": day.isoformat()}
    text = owner.http.get(f"/venues/{venue}/export.csv", params=params).content.decode("utf-8-sig")
    back = list(csv.reader(io.StringIO(text, newline="")))
    assert back[0] == ["Thời gian", "Địa điểm", "Chiều", "Họ tên", "Số giấy tờ", "Năm sinh", "Loại thẻ", "Trạm quét",
                       "Số thứ tự bản ghi của trạm", "Tự khai báo", "Giờ đã hiệu chỉnh"]
    first = back[1]
    assert first[0] == f"{day:%d/%m/%Y} 07:00" and first[2] == "Vào" and first[6] == "CCCD" and first[7] == "gate-1"
    assert first[1] == "Chợ =cmd|' /C calc'!A0"
    # No ISO date, no code where a word belongs.
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text) and ",in," not in text and "cccd" not in text
    owner.http.get("/lang/en")
    english = owner.http.get(f"/venues/{venue}/export.csv", params=params)
    rows = list(csv.reader(io.StringIO(english.content.decode("utf-8-sig"), newline="")))
    assert rows[0][:4] == ["Time", "Venue", "Direction", "Name"] and rows[1][2] == "In"
    assert rows[1][6] == "Citizen ID card" and "checkins-venue-" in english.headers["content-disposition"]
