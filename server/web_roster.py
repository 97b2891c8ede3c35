# Web pages and JSON API for rosters, "not checked in today" and printed passes.
"""Routes of the roster feature (docs/roster.md): upload a roster, list it (masked by
role), see who has not checked in today, issue and print passes, revoke a lost pass.

Permissions (server/permissions.py): ``roster.view`` lists and shows the "not checked
in" view, ``roster.manage`` uploads and revokes passes, ``passes.print`` issues and prints. Owners
and managers see full names (they keep the roster); gate controllers see masked names.
ID numbers are masked for every venue role. Every full-name read, upload, print and
revocation is written to the audit trail.
"""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, File, Form, HTTPException, Query, Request, UploadFile
from fastapi import Path as PathParam
from fastapi.responses import HTMLResponse, JSONResponse, Response
from pydantic import BaseModel, Field
from starlette.concurrency import run_in_threadpool

from qrgate.errors import UserError
from server import i18n
from server.audit import register_actions
from server.passes import MAX_DAYS, MAX_PER_BATCH, PID_ALPHABET, PID_LENGTH, PassOffice
from server.permissions import allowed
from server.roster import MAX_UPLOAD_BYTES, MESSAGES, MODES, ImportResult, RosterError, RosterStore

logger = logging.getLogger(__name__)

PAGE_SIZE = 200
MAX_ID = 2**62  # ids past SQLite's integer range are refused as input, not by the database
VenueId = Annotated[int, PathParam(ge=1, le=MAX_ID)]
PersonId = Annotated[int, Field(ge=1, le=MAX_ID)]
PID_PATTERN = f"^[{PID_ALPHABET}]{{{PID_LENGTH}}}$"
DEFAULT_DAYS = 180

register_actions("qrgate.roster.uploaded", "qrgate.roster.names.read", "qrgate.passes.issued",
                 "qrgate.passes.printed", "qrgate.passes.revoked")

i18n.register({
    "roster.title": ("Danh sách nhân sự", "Roster"),
    "roster.link": ("Danh sách nhân sự", "Roster"),
    "roster.count": ("{count} người trong danh sách", "{count} people on the roster"),
    "roster.none": ("Chưa có ai trong danh sách. Hãy tải lên tệp CSV hoặc XLSX.",
                    "Nobody on the roster yet. Upload a CSV or XLSX file."),
    "roster.upload": ("Tải lên danh sách", "Upload a roster"),
    "roster.file": ("Tệp CSV (UTF-8) hoặc XLSX", "CSV (UTF-8) or XLSX file"),
    "roster.file_hint": ("Dòng đầu là tên cột: ma_nv, ho_ten, cccd (hoặc mã BHYT), nam_sinh, bo_phan, "
                         "dien_thoai. Chỉ ma_nv và ho_ten là bắt buộc. Số điện thoại không được lưu, chỉ ghi "
                         "nhận người đó có điện thoại hay không.",
                         "The first row names the columns: ma_nv (employee no.), ho_ten (full name), cccd "
                         "(or BHYT code), nam_sinh (birth year), bo_phan (department), dien_thoai (phone). "
                         "Only ma_nv and ho_ten are required. Phone numbers are not stored, only whether "
                         "the person has one."),
    "roster.mode": ("Cách nhập", "How to import"),
    "roster.mode.merge": ("Gộp: thêm người mới, cập nhật người đã có (theo mã NV), giữ nguyên những người khác",
                          "Merge: add new people, update known ones (by employee no.), keep everyone else"),
    "roster.mode.replace": ("Thay thế: danh sách trở thành đúng như tệp; người không có trong tệp bị xoá và "
                            "thẻ của họ bị thu hồi",
                            "Replace: the roster becomes exactly the file; people not in it are removed and "
                            "their passes revoked"),
    "roster.send": ("Tải lên", "Upload"),
    "roster.refused": ("Tệp bị từ chối, chưa có gì được lưu. Hãy sửa các lỗi sau rồi tải lên lại:",
                       "The file was refused and nothing was stored. Fix these and upload it again:"),
    "roster.refused_more": ("… và {count} lỗi khác", "… and {count} more"),
    "roster.done": ("Đã nhập {rows} dòng: thêm {added}, cập nhật {updated}, không đổi {unchanged}, xoá {removed}.",
                    "Imported {rows} rows: {added} added, {updated} updated, {unchanged} unchanged, "
                    "{removed} removed."),
    "roster.revoked_leavers": ("Đã thu hồi {count} thẻ của người không còn trong danh sách.",
                               "Revoked {count} passes of people no longer on the roster."),
    "roster.row": ("Dòng", "Row"),
    "roster.column": ("Cột", "Column"),
    "roster.problem": ("Lỗi", "Problem"),
    "roster.col.employee_no": ("Mã NV", "Employee no."),
    "roster.col.name": ("Họ tên", "Name"),
    "roster.col.id_number": ("Số giấy tờ", "ID number"),
    "roster.col.birth_year": ("Năm sinh", "Birth year"),
    "roster.col.department": ("Bộ phận", "Department"),
    "roster.col.phone": ("Điện thoại", "Phone"),
    "roster.col.pass": ("Thẻ", "Pass"),
    "roster.has_phone": ("có", "yes"),
    "roster.no_phone": ("không", "no"),
    "roster.masked": ("Số giấy tờ luôn được che bớt. Họ tên đầy đủ chỉ hiện cho chủ sở hữu và người quản lý.",
                      "ID numbers are always masked. Full names are shown to owners and managers only."),
    "roster.absent": ("Chưa quét hôm nay", "Not checked in today"),
    "roster.absent_title": ("Chưa quét mã hôm nay", "Not checked in today"),
    "roster.absent_explain": ("Người trong danh sách chưa có lượt ra vào nào tại địa điểm này (hoặc địa điểm, "
                              "phương tiện trực thuộc) từ {since}, tính theo số CCCD/BHYT và thẻ ra vào đã cấp.",
                              "People on the roster with no check-in at this venue (or a venue or vehicle "
                              "within it) since {since}, matched by CCCD/BHYT and the passes issued to them."),
    "roster.absent_count": ("{absent} / {total} người chưa quét", "{absent} of {total} people not checked in"),
    "roster.absent_none": ("Mọi người trong danh sách đã quét hôm nay.", "Everyone on the roster has checked in today."),
    "roster.prev": ("← Trước", "← Previous"),
    "roster.next": ("Tiếp →", "Next →"),
    "roster.select_all": ("Chọn tất cả trên trang", "Select all on this page"),
    "passes.title": ("Thẻ ra vào in sẵn", "Printed passes"),
    "passes.link": ("Thẻ ra vào", "Passes"),
    "passes.explain": ("Thẻ có mã QR ký số cho người không có điện thoại. Mọi trạm của hệ thống kiểm tra được "
                       "thẻ khi không có mạng. Thẻ bị mất: thu hồi, trạm sẽ từ chối thẻ đó khi nhận cấu hình mới.",
                       "Passes carry a signed QR for people without a phone. Every station of this system checks "
                       "them offline. A lost pass: revoke it, and stations refuse it once they get their new config."),
    "passes.issue_selected": ("In thẻ cho người đã chọn", "Print passes for the selected people"),
    "passes.issue_nophone": ("In thẻ cho tất cả người không có điện thoại", "Print passes for everyone without a phone"),
    "passes.days": ("Thời hạn (ngày)", "Valid for (days)"),
    "passes.issued": ("Đã cấp {count} thẻ (đợt {batch}).", "Issued {count} passes (batch {batch})."),
    "passes.skipped": ("{count} người đã có thẻ còn hạn nên không cấp thêm.",
                       "{count} people already hold a valid pass and got none."),
    "passes.left": ("Còn {count} người không có điện thoại chưa có thẻ: bấm in lần nữa cho đợt tiếp theo.",
                    "{count} more people without a phone have no pass yet: print again for the next batch."),
    "passes.nothing": ("Không có ai cần cấp thẻ.", "Nobody needs a pass."),
    "passes.batches": ("Các đợt in", "Print batches"),
    "passes.batch": ("Đợt {batch}", "Batch {batch}"),
    "passes.cards": ("{count} thẻ", "{count} cards"),
    "passes.pdf": ("Tải PDF (A4, 8 thẻ/trang)", "Download PDF (A4, 8 cards a page)"),
    "passes.list": ("Các thẻ đã cấp", "Issued passes"),
    "passes.none": ("Chưa cấp thẻ nào.", "No passes yet."),
    "passes.pid": ("Số thẻ", "Pass no."),
    "passes.expires": ("Hạn", "Valid to"),
    "passes.state": ("Trạng thái", "State"),
    "passes.state.active": ("Còn hiệu lực", "Active"),
    "passes.state.revoked": ("Đã thu hồi", "Revoked"),
    "passes.state.expired": ("Hết hạn", "Expired"),
    "passes.revoke": ("Thu hồi", "Revoke"),
    "passes.reason": ("Lý do", "Reason"),
    "passes.reason_hint": ("Ví dụ: mất thẻ", "For example: lost"),
    "passes.reissue": ("Cấp thẻ mới thay thế", "Issue a replacement"),
    "passes.revoke_confirm": ("Thu hồi thẻ này? Các trạm sẽ từ chối thẻ.", "Revoke this pass? Stations will refuse it."),
    "passes.revoked": ("Đã thu hồi thẻ {pid}.", "Pass {pid} revoked."),
    "passes.reissued": ("Thẻ mới {pid} (đợt {batch}) đã được cấp.", "New pass {pid} (batch {batch}) issued."),
    "passes.pushed": ("Đã gửi danh sách chặn tới {count} trạm của địa điểm.",
                      "The block list was sent to {count} stations of the venue."),
    "passes.not_pushed": ("Chưa gửi được tới các trạm: {error}. Thẻ vẫn bị thu hồi; trạm sẽ nhận ở lần gửi cấu hình sau.",
                          "Not sent to the stations yet: {error}. The pass stays revoked; stations get it with "
                          "their next config."),
    "passes.replaced_by": ("thay bằng {pid}", "replaced by {pid}"),
    "passes.unavailable": ("Máy chủ này chưa có khoá ký thẻ.", "This server has no pass-signing key."),
    **{f"roster.problem.{code}": pair for code, pair in MESSAGES.items()},
}, history={
    "qrgate.roster.uploaded": ("Tải lên danh sách nhân sự ({mode}): {rows} dòng, thêm {added}, cập nhật {updated}, xoá {removed}",
                               "Uploaded the roster ({mode}): {rows} rows, {added} added, {updated} updated, {removed} removed"),
    "qrgate.roster.names.read": ("Xem họ tên đầy đủ trong danh sách nhân sự ({rows} người)",
                                 "Viewed full names on the roster ({rows} people)"),
    "qrgate.passes.issued": ("Cấp {count} thẻ ra vào (đợt {batch}), hạn đến {expires}",
                             "Issued {count} passes (batch {batch}), valid to {expires}"),
    "qrgate.passes.printed": ("Tải PDF thẻ ra vào đợt {batch} ({count} thẻ)", "Downloaded the passes PDF of batch {batch} ({count} cards)"),
    "qrgate.passes.revoked": ("Thu hồi thẻ {pid}: {reason}", "Revoked pass {pid}: {reason}"),
})


class IssueBody(BaseModel):
    person_ids: list[PersonId] = Field(default_factory=list, max_length=MAX_PER_BATCH,
                                  description="roster person ids; empty with without_phone=true: all without a phone")
    without_phone: bool = Field(False, description="issue for every roster person without a phone")
    days: int = Field(DEFAULT_DAYS, ge=1, le=MAX_DAYS, description="days the pass is valid, today included")


class RevokeBody(BaseModel):
    reason: str = Field("", max_length=200, examples=["lost"])
    reissue_days: int = Field(0, ge=0, le=MAX_DAYS, description="0: no replacement; else its validity in days")


def _problem_rows(result: ImportResult, lang: str) -> list[dict[str, Any]]:
    return [{"row": p.row, "column": i18n.translate(lang, f"roster.col.{p.column}") if p.column else "",
             "text": p.text(lang)} for p in result.problems[:200]]


def make_router(kit) -> APIRouter:
    router = APIRouter()
    roster = RosterStore(kit.storage, kit.clock)
    fallback = _fallback_office(kit)

    def office(request: Request) -> PassOffice:
        # The server's entry point hands the app an office with the broker publisher
        # (app.state.pass_office); without one, passes are signed with the key kept
        # beside the database and revocations reach stations at their next config push.
        configured = getattr(request.app.state, "pass_office", None)
        if configured is not None:
            return configured
        if fallback is None:
            raise HTTPException(503, "this server has no pass-signing key")
        return fallback

    def full_names(role: str) -> bool:
        return allowed(role, "roster.manage")

    def today() -> dt.date:
        return dt.datetime.fromtimestamp(kit.clock(), kit.tz).date()

    def audit(who, action: str, venue_id: int, **data: Any) -> None:
        kit.services.audit.record(action, account=who.account, ip=who.ip, venue_id=venue_id, **data)

    def roster_rows(request: Request, who, venue_id: int, role: str, people) -> list[dict[str, Any]]:
        shown = full_names(role)
        if shown and people:
            audit(who, "qrgate.roster.names.read", venue_id, rows=len(people), path=request.url.path)
        return [p.as_masked(shown) for p in people]

    def active_passes(request: Request, venue_id: int) -> dict[int, str]:
        out: dict[int, str] = {}
        try:
            records = office(request).passes(venue_id)
        except HTTPException:
            return out
        day = today()
        for record in records:
            if record.person_id is not None and record.state_on(day) == "active":
                out[record.person_id] = record.pid
        return out

    # -- roster ------------------------------------------------------------------------

    def roster_page_context(request: Request, who, venue_id: int, offset: int) -> dict[str, Any]:
        venue, role = kit.venue_for(who, venue_id, "roster.view")
        people = roster.people(venue_id, offset, PAGE_SIZE)
        return {"venue": venue, "role": role, "rows": roster_rows(request, who, venue_id, role, people),
                "total": roster.count(venue_id), "offset": offset, "page_size": PAGE_SIZE,
                "can_manage": allowed(role, "roster.manage"), "can_print": allowed(role, "passes.print"),
                "passes": active_passes(request, venue_id) if allowed(role, "passes.print") else {},
                "modes": MODES, "max_days": MAX_DAYS, "default_days": DEFAULT_DAYS,
                "result": None, "problems": [], "error": ""}

    @router.get("/venues/{venue_id}/roster", response_class=HTMLResponse, include_in_schema=False)
    def roster_page(request: Request, venue_id: VenueId, offset: int = Query(0, ge=0, le=10**6),
                    who=Depends(kit.logged_in)):
        return kit.render(request, who, "roster.html", **roster_page_context(request, who, venue_id, offset))

    def do_upload(request: Request, who, venue_id: int, data: bytes, filename: str, mode: str):
        """Store an upload; returns (ImportResult or None, RosterError or None, revoked pids)."""
        # A replace revokes the passes of people who left: have the office before storing.
        desk = office(request) if mode == "replace" else None
        try:
            result = roster.upload(venue_id, data, filename, mode, today().year)
        except RosterError as exc:
            return None, exc, []
        revoked: list[str] = []
        if result.ok:
            if result.removed_ids and desk is not None:
                revoked = desk.revoke_people(venue_id, result.removed_ids, "left the roster", today())
                if revoked:
                    desk.push(venue_id)
                    for pid in revoked:
                        audit(who, "qrgate.passes.revoked", venue_id, pid=pid, reason="left the roster")
            audit(who, "qrgate.roster.uploaded", venue_id, mode=mode, rows=result.rows, added=result.added,
                  updated=result.updated, removed=len(result.removed_ids))
        return result, None, revoked

    async def read_upload(file: UploadFile) -> bytes:
        # One byte past the limit is enough to refuse the file as too big.
        return await file.read(MAX_UPLOAD_BYTES + 1)

    @router.post("/venues/{venue_id}/roster", response_class=HTMLResponse, include_in_schema=False)
    async def roster_upload(request: Request, venue_id: VenueId, file: UploadFile = File(...),
                            mode: str = Form("merge", max_length=20), who=Depends(kit.logged_in_csrf)):
        kit.venue_for(who, venue_id, "roster.manage")
        if mode not in MODES:
            raise HTTPException(400, RosterError("bad_mode").text(who.lang))
        data = await read_upload(file)
        result, error, revoked = await run_in_threadpool(do_upload, request, who, venue_id, data,
                                                         (file.filename or "")[:200], mode)
        context = await run_in_threadpool(roster_page_context, request, who, venue_id, 0)
        status = 200
        if error is not None:
            context["error"] = error.text(who.lang)
            status = 400
        elif not result.ok:
            context["problems"] = _problem_rows(result, who.lang)
            context["problems_more"] = max(0, len(result.problems) - len(context["problems"]))
            status = 400
        else:
            context["result"] = {**result.as_dict(), "revoked": len(revoked)}
        return kit.render(request, who, "roster.html", status, **context)

    @router.get("/api/venues/{venue_id}/roster", tags=["roster"])
    def api_roster(request: Request, venue_id: VenueId, offset: int = Query(0, ge=0, le=10**6),
                   limit: int = Query(PAGE_SIZE, ge=1, le=1000), who=Depends(kit.logged_in)):
        """The venue's roster, ID numbers masked; names in full for owners and managers."""
        _, role = kit.venue_for(who, venue_id, "roster.view")
        people = roster.people(venue_id, offset, limit)
        return {"total": roster.count(venue_id), "offset": offset,
                "people": roster_rows(request, who, venue_id, role, people)}

    @router.post("/api/venues/{venue_id}/roster", tags=["roster"])
    async def api_roster_upload(request: Request, venue_id: VenueId,
                                file: UploadFile = File(..., description=f"CSV (UTF-8) or XLSX, at most "
                                                                         f"{MAX_UPLOAD_BYTES // 1048576} MB"),
                                mode: str = Query("merge", pattern="^(merge|replace)$"),
                                who=Depends(kit.logged_in_csrf)):
        """Upload a roster. Any bad row refuses the whole file (400 with one problem per row)."""
        kit.venue_for(who, venue_id, "roster.manage")
        data = await read_upload(file)
        result, error, revoked = await run_in_threadpool(do_upload, request, who, venue_id, data,
                                                         (file.filename or "")[:200], mode)
        if error is not None:
            status = 413 if error.code == "file_too_big" else 400
            return JSONResponse({"detail": str(error), "code": error.code}, status)
        body = {**result.as_dict(), "revoked_passes": revoked}
        return JSONResponse(body, 200 if result.ok else 400)

    # -- not checked in today ------------------------------------------------------------

    def absent(request: Request, venue_id: int):
        desk = None
        try:
            desk = office(request)
        except HTTPException:
            pass
        keys = desk.keys_by_person(venue_id) if desk else {}
        return roster.absent_today(venue_id, kit.tz, kit.clock(), keys)

    @router.get("/venues/{venue_id}/roster/absent", response_class=HTMLResponse, include_in_schema=False)
    def absent_page(request: Request, venue_id: VenueId, who=Depends(kit.logged_in)):
        venue, role = kit.venue_for(who, venue_id, "roster.view")
        people, midnight = absent(request, venue_id)
        return kit.render(request, who, "roster_absent.html", venue=venue, role=role,
                          rows=roster_rows(request, who, venue_id, role, people), total=roster.count(venue_id),
                          since=midnight.strftime("%H:%M %d/%m/%Y"))

    @router.get("/api/venues/{venue_id}/roster/absent", tags=["roster"])
    def api_absent(request: Request, venue_id: VenueId, who=Depends(kit.logged_in)):
        """Roster people with no check-in here (or within this venue) since local midnight."""
        _, role = kit.venue_for(who, venue_id, "roster.view")
        people, midnight = absent(request, venue_id)
        return {"since": midnight.isoformat(), "total": roster.count(venue_id),
                "absent": roster_rows(request, who, venue_id, role, people)}

    # -- passes --------------------------------------------------------------------------

    def passes_context(request: Request, who, venue_id: int, **extra: Any) -> dict[str, Any]:
        venue, role = kit.venue_for(who, venue_id, "passes.print")
        desk = office(request)
        day = today()
        people = {p.id: p.as_masked(True) for p in roster.people(venue_id)}
        records = desk.passes(venue_id)
        rows = []
        for record in records:
            person = people.get(record.person_id) if record.person_id is not None else None
            rows.append({**record.as_dict(day), "name": person["name"] if person else "",
                         "employee_no": person["employee_no"] if person else ""})
        if rows:
            audit(who, "qrgate.roster.names.read", venue_id, rows=len(rows), path=request.url.path)
        batches = [{**b, "created": dt.datetime.fromtimestamp(b["created_ms"] / 1000, kit.tz).strftime("%H:%M %d/%m/%Y")}
                   for b in desk.batches(venue_id)]
        return {"venue": venue, "role": role, "rows": rows, "batches": batches, "max_days": MAX_DAYS,
                "can_revoke": allowed(role, "roster.manage"),
                "default_days": DEFAULT_DAYS, "notices": [], "error": "", **extra}

    @router.get("/venues/{venue_id}/passes", response_class=HTMLResponse, include_in_schema=False)
    def passes_page(request: Request, venue_id: VenueId, who=Depends(kit.logged_in)):
        return kit.render(request, who, "passes.html", **passes_context(request, who, venue_id))

    def issue(request: Request, who, venue_id: int, person_ids: list[int], without_phone: bool, days: int):
        """Issue one batch; returns (IssueResult or None, how many are left for another batch)."""
        desk = office(request)
        ids = list(dict.fromkeys(person_ids))
        left = 0
        if without_phone:
            # Everyone without a phone and a valid pass, one batch at a time: a big roster
            # is printed in several PDFs of at most MAX_PER_BATCH cards.
            waiting = [i for i in desk.without_phone(venue_id, today()) if i not in ids]
            room = max(0, MAX_PER_BATCH - len(ids))
            ids += waiting[:room]
            left = len(waiting) - min(room, len(waiting))
        if not ids:
            return None, 0
        result = desk.issue(venue_id, ids, days, today(), who.account.id)
        if result.issued:
            audit(who, "qrgate.passes.issued", venue_id, count=len(result.issued), batch=result.batch_id,
                  expires=result.issued[0].expires.isoformat())
        return result, left

    @router.post("/venues/{venue_id}/passes", response_class=HTMLResponse, include_in_schema=False)
    async def passes_issue(request: Request, venue_id: VenueId, who=Depends(kit.logged_in_csrf)):
        kit.venue_for(who, venue_id, "passes.print")
        form = await request.form()
        try:
            ids = [int(str(v)[:20]) for v in form.getlist("person")[:MAX_PER_BATCH + 1]]
            days = int(str(form.get("days") or DEFAULT_DAYS)[:20])
        except ValueError:
            raise HTTPException(400, "person ids and days must be whole numbers") from None
        if not all(1 <= i <= MAX_ID for i in ids):
            raise HTTPException(400, "no such person")
        if not 1 <= days <= MAX_DAYS:
            raise HTTPException(400, f"days must be 1-{MAX_DAYS}")
        without_phone = form.get("without_phone") == "1"
        notices = []
        try:
            result, left = await run_in_threadpool(issue, request, who, venue_id, ids, without_phone, days)
        except UserError as exc:
            context = await run_in_threadpool(passes_context, request, who, venue_id, error=str(exc))
            return kit.render(request, who, "passes.html", 400, **context)
        if result is None or not result.issued:
            notices.append(i18n.translate(who.lang, "passes.nothing"))
        else:
            notices.append(i18n.translate(who.lang, "passes.issued", count=len(result.issued), batch=result.batch_id))
        if result is not None and result.skipped:
            notices.append(i18n.translate(who.lang, "passes.skipped", count=len(result.skipped)))
        if left:
            notices.append(i18n.translate(who.lang, "passes.left", count=left))
        context = await run_in_threadpool(passes_context, request, who, venue_id, notices=notices,
                                          new_batch=result.batch_id if result else None)
        return kit.render(request, who, "passes.html", **context)

    @router.get("/api/venues/{venue_id}/passes", tags=["passes"])
    def api_passes(request: Request, venue_id: VenueId, who=Depends(kit.logged_in)):
        """Every pass of the venue with its state, and the print batches."""
        kit.venue_for(who, venue_id, "passes.print")
        desk = office(request)
        day = today()
        return {"passes": [r.as_dict(day) for r in desk.passes(venue_id)], "batches": desk.batches(venue_id)}

    @router.post("/api/venues/{venue_id}/passes", tags=["passes"], status_code=201)
    def api_issue(request: Request, venue_id: VenueId, body: IssueBody, who=Depends(kit.logged_in_csrf)):
        """Issue passes (one batch); people who hold a valid pass are skipped."""
        kit.venue_for(who, venue_id, "passes.print")
        try:
            result, left = issue(request, who, venue_id, body.person_ids, body.without_phone, body.days)
        except UserError as exc:
            raise HTTPException(400, str(exc)) from None
        if result is None:
            raise HTTPException(400, "no people chosen (person_ids empty and nobody without a phone)")
        day = today()
        return {"batch_id": result.batch_id, "issued": [r.as_dict(day) for r in result.issued],
                "skipped_person_ids": result.skipped, "left_without_pass": left,
                "pdf": f"/venues/{venue_id}/passes/batches/{result.batch_id}.pdf" if result.batch_id else None}

    @router.get("/venues/{venue_id}/passes/batches/{batch_id}.pdf", tags=["passes"],
                response_class=Response, responses={200: {"content": {"application/pdf": {}}}})
    def passes_pdf(request: Request, venue_id: VenueId, batch_id: int = PathParam(..., ge=1, le=MAX_ID),
                   who=Depends(kit.logged_in)):
        """The A4 sheets of a batch's active passes (8 cards a page, cut marks)."""
        venue, _ = kit.venue_for(who, venue_id, "passes.print")
        desk = office(request)
        items = desk.sheet_items(venue_id, batch_id)
        if not items:
            raise HTTPException(404)
        pdf = desk.sheet_pdf(venue.name, items)
        audit(who, "qrgate.passes.printed", venue_id, batch=batch_id, count=len(items))
        return Response(pdf, media_type="application/pdf",
                        headers={"Content-Disposition": f'attachment; filename="passes-{venue_id}-{batch_id}.pdf"'})

    def revoke(request: Request, who, venue_id: int, pid: str, reason: str, reissue_days: int):
        desk = office(request)
        try:
            revoked, fresh = desk.revoke(venue_id, pid, reason, today(), reissue_days, who.account.id)
        except LookupError:
            raise HTTPException(404) from None
        audit(who, "qrgate.passes.revoked", venue_id, pid=pid, reason=revoked.reason)
        if fresh is not None:
            audit(who, "qrgate.passes.issued", venue_id, count=1, batch=fresh.batch_id,
                  expires=fresh.expires.isoformat())
        return revoked, fresh, desk.push(venue_id)

    @router.post("/venues/{venue_id}/passes/{pid}/revoke", response_class=HTMLResponse, include_in_schema=False)
    def passes_revoke(request: Request, venue_id: VenueId, pid: str = PathParam(..., pattern=PID_PATTERN),
                      reason: str = Form("", max_length=200), reissue: str = Form("", max_length=5),
                      who=Depends(kit.logged_in_csrf)):
        kit.venue_for(who, venue_id, "roster.manage")
        record = office(request).get(venue_id, pid)
        if record is None:
            raise HTTPException(404)
        # A replacement for a lost card is valid to the same last day as the card it replaces.
        days = max(1, (record.expires - today()).days + 1) if reissue else 0
        try:
            revoked, fresh, pushed = revoke(request, who, venue_id, pid, reason, days)
        except UserError as exc:
            return kit.render(request, who, "passes.html", 409,
                              **passes_context(request, who, venue_id, error=str(exc)))
        lang = who.lang
        notices = [i18n.translate(lang, "passes.revoked", pid=pid)]
        if fresh is not None:
            notices.append(i18n.translate(lang, "passes.reissued", pid=fresh.pid, batch=fresh.batch_id))
        notices.append(i18n.translate(lang, "passes.pushed", count=pushed.stations) if not pushed.error
                       else i18n.translate(lang, "passes.not_pushed", error=pushed.error))
        return kit.render(request, who, "passes.html",
                          **passes_context(request, who, venue_id, notices=notices,
                                           new_batch=fresh.batch_id if fresh else None))

    @router.post("/api/venues/{venue_id}/passes/{pid}/revoke", tags=["passes"])
    def api_revoke(request: Request, venue_id: VenueId, body: RevokeBody,
                   pid: str = PathParam(..., pattern=PID_PATTERN), who=Depends(kit.logged_in_csrf)):
        """Revoke a pass (it joins every station's block list) and optionally reissue."""
        kit.venue_for(who, venue_id, "roster.manage")
        try:
            revoked, fresh, pushed = revoke(request, who, venue_id, pid, body.reason, body.reissue_days)
        except UserError as exc:
            raise HTTPException(409, str(exc)) from None
        day = today()
        return {"revoked": revoked.as_dict(day), "reissued": fresh.as_dict(day) if fresh else None,
                "pushed_to": pushed.stations, "push_error": pushed.error or None}

    return router


def _fallback_office(kit) -> PassOffice | None:
    """An office signing with ``pass-signing.key`` in the storage's data folder (server.toml's
    data folder: the SQLite file's, or the one PostgreSQL was opened with), with no
    broker: used when the app was not given one."""
    from qrgate.keyfiles import load_or_create_key

    folder = getattr(kit.storage, "data_dir", None)
    if folder is None:
        return None
    return PassOffice(kit.storage, load_or_create_key(Path(folder) / "pass-signing.key"), clock=kit.clock)
