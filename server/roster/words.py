"""The roster's and the passes' words (Vietnamese, English) for the web UI, and the audit
actions they write with the sentences the history page says for them.

Both route modules (server.roster.routes, server.roster.pass_routes) call ``register()``
when imported: a roster page shows passes' words and a passes page roster's words.
"""

from __future__ import annotations

from server.audit import register_actions
from server.roster.parsing import MESSAGES
from server.web import i18n


def register() -> None:
    """Add the words and the audit actions (once more is no harm: the same words)."""
    register_actions("qrgate.roster.uploaded", "qrgate.roster.names.read", "qrgate.passes.issued",
                     "qrgate.passes.printed", "qrgate.passes.revoked", "qrgate.passes.pushed")
    i18n.register({
        "roster.title": ("Danh sách nhân sự", "Roster"),
        "roster.link": ("Danh sách nhân sự", "Roster"),
        "roster.count": ("{count} người trong danh sách", "{count} people on the roster"),
        "roster.none": ("Chưa có ai trong danh sách. Hãy tải lên tệp CSV hoặc XLSX.",
                        "Nobody on the roster yet. Upload a CSV or XLSX file."),
        "roster.upload": ("Tải lên danh sách", "Upload a roster"),
        "roster.file": ("Tệp CSV (UTF-8) hoặc XLSX", "CSV (UTF-8) or XLSX file"),
        "roster.file_hint": ("Dòng đầu ghi tên các cột:", "The first row names the columns:"),
        "roster.file_hint_rest": ("Bắt buộc: mã nhân viên và họ tên. Cột số giấy tờ nhận số CCCD hoặc mã thẻ BHYT. "
                                  "Số điện thoại không được lưu, chỉ ghi nhận người đó có điện thoại hay không.",
                                  "Required: employee number and full name. The ID column takes a CCCD number or a "
                                  "BHYT code. Phone numbers are not stored, only whether the person has one."),
        "roster.mode": ("Cách nhập", "How to import"),
        "roster.mode.merge": ("Gộp: thêm người mới, cập nhật người đã có (theo mã NV), giữ nguyên những người khác",
                              "Merge: add new people, update known ones (by employee no.), keep everyone else"),
        "roster.mode.replace": ("Thay thế: danh sách trở thành đúng như tệp; người không có trong tệp bị xoá và "
                                "thẻ của họ bị thu hồi",
                                "Replace: the roster becomes exactly the file; people not in it are removed and "
                                "their passes revoked"),
        "roster.send": ("Tải lên", "Upload"),
        "roster.replace_confirm": ("Thay thế cả danh sách bằng tệp này? Người không có trong tệp sẽ bị xoá và thẻ ra "
                                   "vào của họ bị thu hồi.",
                                   "Replace the whole roster with this file? People not in it are removed and their "
                                   "passes revoked."),
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
        "roster.pick": ("Chọn để in thẻ", "Choose for a pass"),
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
        "passes.pushed_none": ("Địa điểm này chưa có trạm quét nào: không có trạm nào cần nhận danh sách chặn.",
                               "This venue has no stations yet: none needed the block list."),
        "passes.push.no_broker": ("Chưa gửi được tới các trạm: máy chủ web này chưa được nối với máy chủ MQTT. Thẻ vẫn "
                                  "bị thu hồi; các trạm chỉ từ chối thẻ sau khi nhận danh sách chặn. Hãy báo người "
                                  "quản trị máy chủ khai báo máy chủ MQTT cho máy chủ web (mục [mqtt] của tệp cấu "
                                  "hình) rồi bấm “Gửi lại tới các trạm”.",
                                  "Not sent to the stations: this web server has no MQTT broker configured. The pass "
                                  "stays revoked; stations refuse it once they get the block list. Ask the server's "
                                  "administrator to configure the broker for the web server ([mqtt] in its "
                                  "configuration), then press “Send to the stations again”."),
        "passes.push.unreachable": ("Chưa gửi được tới các trạm: không kết nối được máy chủ MQTT. Thẻ vẫn bị thu hồi; "
                                    "các trạm chỉ từ chối thẻ sau khi nhận danh sách chặn. Khi máy chủ MQTT hoạt động "
                                    "trở lại (dịch vụ mosquitto), hãy bấm “Gửi lại tới các trạm”.",
                                    "Not sent to the stations: the MQTT broker cannot be reached. The pass stays "
                                    "revoked; stations refuse it once they get the block list. When the broker works "
                                    "again (the mosquitto service), press “Send to the stations again”."),
        "passes.push_again": ("Gửi lại tới các trạm", "Send to the stations again"),
        "passes.error.revoked_already": ("Thẻ {pid} đã bị thu hồi từ trước.", "Pass {pid} was already revoked."),
        "passes.error.numbers": ("Chưa cấp thẻ: số ngày phải là số nguyên từ 1 đến {max_days}.",
                                 "No passes issued: the number of days must be a whole number from 1 to {max_days}."),
        "passes.error.person": ("Chưa cấp thẻ: người được chọn không có trong danh sách nhân sự của địa điểm này. "
                                "Hãy tải lại trang và chọn lại.",
                                "No passes issued: a chosen person is not on this venue's roster. Reload the page "
                                "and choose again."),
        "value.mode.merge": ("gộp", "merge"),
        "value.mode.replace": ("thay thế", "replace"),
        "passes.reason.none": ("không ghi lý do", "no reason given"),
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
        "qrgate.passes.pushed": ("Gửi lại danh sách chặn tới {stations} trạm",
                                 "Sent the block list to {stations} stations again"),
    })
