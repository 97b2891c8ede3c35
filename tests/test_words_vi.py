"""Every file and message a person gets from the server, and the pages a form leads to,
made in Vietnamese, say no English word, raw code or ISO date (tests/words_vi.py says
what is looked for): the history exports (CSV and XLSX, one venue and several), the
trace CSV, the weekly reports (CSV, PDF, kept copies and the e-mail that carries them),
the pass sheets and the venue poster (the words drawn on them and the PDF's title),
the files' names, every SMS the server sends, the venue's audit trail after all that, and
the pages after a trace, a roster upload with mistakes, issuing passes, sharing, an
invitation, an export job and a self check-in (the browser walk of
tests/test_layout_browser.py follows links, not forms, and opens one page of a kind).

A week of scans of every card kind (CCCD, BHYT, a national QR with a masked number, a
pass), some in and out, some with an unsynchronised clock, at a factory, its shuttle bus
and a phone scanning as its station, with a self-declared one; an owner, an invited
manager and a health officer.
"""

from __future__ import annotations

import csv
import datetime as dt
import io
import re
from urllib.parse import unquote

import openpyxl
import pypdfium2
import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from PIL import ImageDraw

from server.phone.service import attach
from server.reports.mail import Delivery
from server.reports.mail_text import composer
from server.reports.report_archive import ReportArchive
from server.selfcheckin.selfcheckin import SelfCheckin, parse_declaration
from test_export import TZ, Gate, _wait_done, local_ms
from test_phone import Phone, enrol_code
from test_web_support import CSRF_IN_PAGE, Site
from words_vi import leftovers, message_leftovers, page_words

pytestmark = pytest.mark.timeout(120)

OWNER, MANAGER, OFFICER = "0912486419", "0976929792", "0903000001"
FRIDAY = dt.datetime(2026, 11, 20, 15, 0, tzinfo=TZ)
# Whole minutes apart, so that a time together in minutes as a float reads "41.0".
THAO = {"kind": "cccd", "id": "001090000123", "name": "Nguyễn Thị Phương Thảo", "birth": "1990-01-01"}
BINH = {"kind": "bhyt", "id": "DN4797912345678", "name": "Trần Văn Bình", "birth": "1985"}
KHOI = {"kind": "national", "id": "******000111", "name": "Lê Hoàng Minh Khôi", "birth": "2001-11-30"}
DUC = {"kind": "pass", "id": "P7K2M9QX", "name": "Phạm Văn Đức", "birth": ""}
ROSTER = ("ma_nv,ho_ten,cccd,nam_sinh,bo_phan,dien_thoai\n"
          "NV001,Nguyễn Thị Phương Thảo,001090000123,1990,Tổ cắt,0912486419\n"
          "NV002,Trần Thị Mai,,1991,Tổ may,\n"
          "NV003,Lê Thị Hồng Nhung,,1995,Kho,\n")
BAD_ROSTER = ("ma_nv,ho_ten,cccd,nam_sinh,bo_phan,dien_thoai\n"
              "NV001,=HYPERLINK(1),12345,1890,Tổ cắt,12\n"
              "NV001,Trần Thị Mai,,1991,Tổ may,\n")
# File names are ASCII: Vietnamese words there lose their marks, and "thẻ" (a pass) is "the".
UNMARKED = frozenset({"the"})
# The compact ISO form of a date in a file name (trace-20261120.csv): people write 20-11-2026.
COMPACT_DATE = re.compile(r"(?<!\d)(?:19|20)\d{2}(?:0[1-9]|1[0-2])(?:0[1-9]|[12]\d|3[01])(?!\d)")


def scan(person: dict, day: int, hour: int, minute: int, direction: str = "in", **extra) -> dict:
    return {**person, "wall_ms": local_ms(2026, 11, day, hour, minute), "dir": direction, **extra}


@pytest.fixture
def town(tmp_path):
    """A factory with a shuttle bus within it, a week of scans, a roster with passes, a
    manager invited by SMS and a health officer of the province; the clock on Friday."""
    site = Site.create(tmp_path)
    site.clock.now = FRIDAY.timestamp()
    owner = site.visitor().login(OWNER)
    factory = owner.create_venue(kind="factory", name="Công ty TNHH May Phúc Lâm")
    bus = owner.create_venue(kind="vehicle", name="", plate="98B-123.45", address="", parent_id=factory)
    assert owner.api("POST", f"/api/venues/{factory}/invitations",
                     {"phones": MANAGER, "role": "manager"}).status_code == 201
    Gate(site.storage, factory, "gate-1").scan([
        scan(THAO, 16, 7, 0), scan(BINH, 16, 7, 19), scan(KHOI, 16, 7, 30), scan(DUC, 16, 7, 45),
        scan(THAO, 16, 8, 0, "out"), scan(BINH, 16, 9, 0, "out"),
        scan(THAO, 18, 7, 0, sync=False, boot="boot-x"), scan(KHOI, 18, 7, 30, sync=False, boot="boot-x"),
        scan(THAO, 19, 17, 0, "out"),
    ])
    Gate(site.storage, bus, "bus-98b12345").scan([scan(THAO, 16, 6, 30), scan(BINH, 16, 6, 31),
                                                  scan(THAO, 16, 6, 55, "out")])
    attach(site.app, sealing_key=X25519PrivateKey.generate(), pass_key=Ed25519PrivateKey.generate())
    phone = Phone(owner, factory)  # a phone scanning as the factory's station
    assert phone.enrol(enrol_code(owner, factory)).status_code == 201
    assert phone.upload(phone.record()).status_code == 200
    SelfCheckin(site.storage, site.clock).check_in(site.services.venues.get(factory), parse_declaration(
        "079188005678", "Võ Thị Hoa", "1988", "in", 2026))
    upload = owner.http.post(f"/api/venues/{factory}/roster", files={"file": ("roster.csv", ROSTER.encode())},
                             headers={"X-CSRF-Token": owner.csrf()})
    assert upload.status_code == 200, upload.text
    assert owner.api("POST", f"/api/venues/{factory}/passes", {"without_phone": True}).status_code == 201
    site.services.officers.grant(site.services.accounts, OFFICER, "79")
    officer = site.visitor("203.0.113.30").login(OFFICER)
    return site, owner, officer, factory, bus


def said(problems: list[str]) -> str:
    return "\n".join(problems)


def trail(owner, venue: int) -> list[str]:
    """What the venue's audit trail (its "Lịch sử" page) says of what was just done."""
    return leftovers(page_words(owner.http.get(f"/venues/{venue}/history").text), "audit trail")


def file_problems(response, where: str) -> list[str]:
    """What the name a download is saved under says (Content-Disposition)."""
    disposition = response.headers.get("content-disposition", "")
    match = re.search(r"filename\*?=(?:UTF-8'')?\"?([^\";]+)", disposition)
    assert match, f"{where}: no file name in {disposition!r}"
    return name_problems(unquote(match.group(1)), where)


def name_problems(name: str, where: str) -> list[str]:
    """What a file's name says, word by word (its Vietnamese words have lost their marks)."""
    words = " ".join(word for word in re.split(r"[-_.]", name) if word not in UNMARKED)
    return leftovers(words, f"{where} file name {name}") + [
        f"{where} file name {name}: a compact ISO date" for _ in COMPACT_DATE.finditer(name)]


def csv_text(response) -> str:
    assert response.status_code == 200, response.text
    return csv_cells(response.content)


def csv_cells(data: bytes) -> str:
    """A CSV file's cells, a tab between two, a row a line."""
    rows = csv.reader(io.StringIO(data.decode("utf-8-sig"), newline=""))
    return "\n".join("\t".join(row) for row in rows)


def xlsx_text(data: bytes, where: str) -> tuple[str, list[str]]:
    """Every text cell and sheet name; a typed date must be shown dd/mm/yyyy."""
    book = openpyxl.load_workbook(io.BytesIO(data))
    said, problems = [], []
    for sheet in book.worksheets:
        said.append(sheet.title)
        for row in sheet.iter_rows():
            for cell in row:
                if isinstance(cell.value, (dt.datetime, dt.date)):
                    if not cell.number_format.lower().startswith("dd/mm/yyyy"):
                        problems.append(f"{where}: a date shown as {cell.number_format!r}")
                elif cell.value is not None:
                    said.append(str(cell.value))
    return "\n".join(said), problems


class Drawn:
    """The words drawn on images (the PDFs are pictures of pages: reports, passes,
    posters), recorded while they are made."""

    def __init__(self, monkeypatch):
        self.texts: list[str] = []
        original = ImageDraw.ImageDraw.text

        def text(draw, xy, text, *args, **kwargs):
            self.texts.append(str(text))
            return original(draw, xy, text, *args, **kwargs)

        monkeypatch.setattr(ImageDraw.ImageDraw, "text", text)

    def take(self) -> str:
        taken, self.texts = "\n".join(self.texts), []
        return taken


def pdf_problems(response, drawn: Drawn, where: str) -> list[str]:
    assert response.status_code == 200 and response.content.startswith(b"%PDF"), where
    title = pypdfium2.PdfDocument(response.content).get_metadata_dict().get("Title", "")
    return (leftovers(drawn.take(), where) + leftovers(title, f"{where} (its title)")
            + file_problems(response, where))


def test_history_exports_one_venue_and_several_say_it_in_vietnamese(town):
    site, owner, _, factory, bus = town
    problems = []
    for path in (f"/venues/{factory}/checkins.csv", f"/venues/{factory}/export.csv?from=2026-11-16&to=2026-11-20",
                 f"/exports.csv?venue={factory}&venue={bus}&from=2026-11-16&to=2026-11-20"):
        response = owner.http.get(path)
        problems += leftovers(csv_text(response), path) + file_problems(response, path)
    for path, body in ((f"/api/venues/{factory}/exports", {}), ("/api/exports", {"venues": [factory, bus]})):
        for fmt in ("xlsx", "csv"):
            job = owner.api("POST", path, {"start": "2026-11-16", "end": "2026-11-20", "format": fmt, **body})
            assert job.status_code == 202, job.text
            status = _wait_done(owner, job.json()["status_url"])
            page = owner.http.get(f"/exports/{job.json()['id']}")
            problems += leftovers(page_words(page.text), f"export job page of {path} {fmt}")
            download = owner.http.get(status["download_url"])
            if fmt == "xlsx":
                text, wrong = xlsx_text(download.content, f"{path} xlsx")
                problems += wrong + leftovers(text, f"{path} xlsx")
            else:
                problems += leftovers(csv_text(download), f"{path} csv")
            problems += file_problems(download, f"{path} {fmt}")
    problems += trail(owner, factory)
    assert problems == [], said(problems)


def test_a_trace_page_and_its_csv_say_it_in_vietnamese(town):
    site, _, officer, factory, _ = town
    checkin = site.storage.sql.value("SELECT min(id) FROM checkins WHERE id_number = ?", [THAO["id"]])
    page = officer.http.get(f"/trace?checkin={checkin}")
    problems = leftovers(page_words(page.text), "trace form")
    form = {"checkin": str(checkin), "from": "2026-11-09", "to": "2026-11-20", "margin": "15", "stay": "60"}
    result = officer.form("/trace", form)
    assert result.status_code == 200 and 'id="trace-contacts"' in result.text
    problems += leftovers(page_words(result.text), "trace result")
    by_card = officer.form("/trace", {"kind": "national", "id_number": KHOI["id"], "name": KHOI["name"],
                                      "birth": "30/11/2001", "from": "2026-11-09", "to": "2026-11-20",
                                      "margin": "15", "stay": "60"})
    if 'id="trace-visits"' not in by_card.text:
        problems.append("trace by card: a birth date as people write it (30/11/2001) finds nobody")
    problems += leftovers(page_words(by_card.text), "trace by card")
    response = officer.form("/trace.csv", form)
    problems += leftovers(csv_text(response), "trace csv") + file_problems(response, "trace csv")
    assert problems == [], said(problems)


def test_weekly_reports_their_files_and_their_email_say_it_in_vietnamese(town, monkeypatch):
    site, owner, officer, factory, _ = town
    drawn = Drawn(monkeypatch)
    problems = []
    for base in (f"/venues/{factory}/reports", "/reports/areas/79"):
        who = owner if base.startswith("/venues") else officer
        response = who.http.get(f"{base}/2026-W47.csv")
        problems += leftovers(csv_text(response), f"{base} csv") + file_problems(response, f"{base} csv")
        problems += pdf_problems(who.http.get(f"{base}/2026-W47.pdf"), drawn, f"{base} pdf")
    owner.form(f"/venues/{factory}/reports/addresses", {"email": "giamdoc@phuclam.vn", "lang": "vi"})
    archive = ReportArchive(site.storage)
    kept = archive.generate_week(FRIDAY, audit=site.services.audit, officers=site.services.officers)
    assert {k.scope for k in kept} == {"unit", "area"}
    compose = composer(archive, "https://qr.example.vn")
    for k in kept:
        data, _ = k.file("csv", "vi")
        problems += leftovers(csv_cells(data), f"kept {k.scope} csv")
        message = compose(Delivery(1, k.id, "canbo@yte.gov.vn", "vi", "pending", 0, 0, 0, None, ""), "bc@qr.vn")
        problems += message_leftovers(message["Subject"], f"e-mail subject ({k.scope})")
        problems += message_leftovers(message.get_body(("plain",)).get_content(), f"e-mail body ({k.scope})")
        problems += [p for part in message.iter_attachments()
                     for p in name_problems(part.get_filename(), f"e-mail attachment ({k.scope})")]
    for page in (owner.http.get(f"/venues/{factory}/reports"), officer.http.get("/reports/areas/79")):
        problems += leftovers(page_words(page.text), f"report page {page.url.path}")
    problems += trail(owner, factory)
    assert problems == [], said(problems)


def test_pass_sheets_and_the_poster_say_it_in_vietnamese(town, monkeypatch):
    site, owner, _, factory, _ = town
    drawn = Drawn(monkeypatch)
    batch = site.storage.sql.value("SELECT max(batch_id) FROM passes WHERE venue_id = ?", [factory])
    problems = pdf_problems(owner.http.get(f"/venues/{factory}/passes/batches/{batch}.pdf"), drawn, "pass sheet")
    problems += pdf_problems(owner.http.get(f"/venues/{factory}/poster.pdf"), drawn, "poster pdf")
    png = owner.http.get(f"/venues/{factory}/poster.png")
    problems += leftovers(drawn.take(), "poster png") + file_problems(png, "poster png") + trail(owner, factory)
    assert problems == [], said(problems)


def test_every_sms_says_it_in_vietnamese(town):
    site, owner, _, factory, _ = town
    owner.form(f"/venues/{factory}/share", {"phones": "0988123456", "role": "controller"})
    sent = site.sender.outbox
    assert {m.phone for m in sent} >= {OWNER, MANAGER, OFFICER, "0988123456"}  # login codes and invitations
    problems = [p for m in sent for p in message_leftovers(m.text, f"SMS to {m.phone}")]
    operator = site.visitor("203.0.113.40")
    site.services.accounts.set_operator("0900000001")
    operator.login("0900000001")
    problems += leftovers(page_words(operator.http.get("/operator/sms").text), "/operator/sms")
    assert problems == [], said(problems)


def test_the_pages_a_form_or_a_deep_link_leads_to_say_it_in_vietnamese(town):
    site, owner, _, factory, _ = town
    pages = {
        "roster upload with mistakes": owner.http.post(
            f"/venues/{factory}/roster", files={"file": ("ds.csv", BAD_ROSTER.encode())},
            data={"csrf": owner.csrf(), "mode": "merge"}),
        "passes issued": owner.form(f"/venues/{factory}/passes", {"without_phone": "1", "days": "30"}),
        "shared": owner.form(f"/venues/{factory}/share", {"phones": "0988123456", "role": "controller"}),
        "enrolment code": owner.form(f"/venues/{factory}/enrol-code", {}),
    }
    manager = site.visitor("203.0.113.50").login(MANAGER)
    invitation = site.storage.sql.value("SELECT id FROM venue_invitations WHERE phone = ?", [MANAGER])
    pages["invitation"] = manager.http.get(f"/invitations/{invitation}")
    token = site.services.venues.ensure_public_token(factory)
    visitor = site.visitor("203.0.113.60")
    form = visitor.http.get(f"/c/{token}")
    csrf = CSRF_IN_PAGE.search(form.text).group(1)
    pages["self check-in done"] = visitor.http.post(f"/c/{token}", data={
        "csrf": csrf, "id_number": "001090000999", "name": "Đỗ Thị Hạnh", "birth_year": "1992", "direction": "in"})
    pages["self check-in mistakes"] = visitor.http.post(f"/c/{token}", data={
        "csrf": csrf, "id_number": "12", "name": "", "birth_year": "3000", "direction": "in"})
    # Deeper than the browser walk goes (it opens one page of a kind, here the first area's).
    officer = town[2]
    pages["a venue's dashboard"] = officer.http.get(f"/dashboard/venue/{factory}")
    pages["a commune's dashboard"] = officer.http.get("/dashboard/26743")
    assert {name: page.status_code for name, page in pages.items() if page.status_code != 200} == {
        "roster upload with mistakes": 400, "self check-in mistakes": 400}
    problems = [p for name, page in pages.items() for p in leftovers(page_words(page.text), name)]
    problems += trail(owner, factory)
    assert problems == [], said(problems)
