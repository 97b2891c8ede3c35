"""Words on the web pages in Vietnamese (first) and English, and the history's sentences."""

from __future__ import annotations

import re


LANGUAGES = ("vi", "en")
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
# A birth date as cards carry it: YYYY-MM-DD, with ** where the card leaves a part out.
_BIRTH = re.compile(r"(\d{4})-(\d{2}|\*\*)-(\d{2}|\*\*)", re.ASCII)

TEXTS: dict[str, tuple[str, str]] = {
    "app": ("QR gate", "QR gate"),
    "nav.venues": ("Địa điểm của tôi", "My venues"),
    "nav.login": ("Đăng nhập", "Log in"),
    "nav.logout": ("Đăng xuất", "Log out"),
    "nav.feed": ("Lượt ra vào gần nhất", "Latest check-ins"),
    "nav.sms": ("Tin nhắn (vận hành)", "Messages (operator)"),
    "nav.fleet": ("Trạm", "Stations"),
    "nav.menu": ("Trình đơn", "Menu"),
    "nav.account": ("Tài khoản của bạn", "Your account"),
    "nav.area_reports": ("Báo cáo khu vực", "Area reports"),
    "venues.exports": ("Xuất dữ liệu nhiều địa điểm", "Export several venues"),
    "area.report": ("Báo cáo tuần", "Weekly report"),
    "layout.scroll_hint": ("Bảng rộng hơn màn hình: kéo ngang trong bảng để xem các cột còn lại.",
                           "The table is wider than the screen: swipe it sideways to see the other columns."),
    "fleet.title": ("Các trạm quét", "Stations"),
    "fleet.station": ("Trạm", "Station"),
    "fleet.venue": ("Địa điểm", "Venue"),
    "fleet.state": ("Trạng thái", "State"),
    "fleet.online": ("Trực tuyến", "Online"),
    "fleet.offline": ("Mất kết nối", "Offline"),
    "fleet.retired": ("Đã ngừng", "Retired"),
    "fleet.backlog": ("Chờ gửi", "Backlog"),
    "fleet.clock": ("Đồng hồ", "Clock"),
    "fleet.firmware": ("Phiên bản", "Firmware"),
    "fleet.seen": ("Lần cuối", "Last seen"),
    "fleet.fault": ("Lỗi", "Fault"),
    "fleet.retire": ("Ngừng trạm", "Retire"),
    "fleet.retire_confirm": ("Ngừng trạm này? Các bản ghi gửi sau đó sẽ bị từ chối.",
                             "Retire this station? Records it sends afterwards are refused."),
    "fleet.reassign": ("Chuyển địa điểm", "Move to venue"),
    "fleet.none": ("Chưa có trạm nào.", "No stations yet."),
    "enrol.title": ("Mã cài đặt trạm", "Station setup code"),
    "enrol.make": ("Tạo mã cài đặt trạm", "Make a station setup code"),
    "enrol.explain": ("Đưa mã này trước camera của trạm mới khi màn hình trạm hiện \"QUÉT MÃ CÀI ĐẶT\". Mã chỉ dùng một lần, hết hạn lúc {expires}.",
                      "Show this code to the new station's camera when its screen says \"QUÉT MÃ CÀI ĐẶT\". It works once and expires at {expires}."),
    "lang.other": ("English", "Tiếng Việt"),
    "login.title": ("Đăng nhập bằng số điện thoại", "Log in with your phone number"),
    "login.phone": ("Số điện thoại", "Phone number"),
    "login.phone_hint": ("Ví dụ: 0912 486 419", "For example 0912 486 419"),
    "login.send": ("Gửi mã xác thực", "Send me a code"),
    "login.code_title": ("Nhập mã xác thực", "Enter your code"),
    "login.code_sent": ("Mã gồm 6 chữ số đã được gửi tới {phone}. Mã hết hạn sau 5 phút.",
                        "A 6-digit code was sent to {phone}. It expires in 5 minutes."),
    "login.code": ("Mã xác thực", "Code"),
    "login.submit": ("Đăng nhập", "Log in"),
    "login.again": ("Gửi lại mã", "Send a new code"),
    "venues.title": ("Địa điểm của tôi", "My venues"),
    "venues.new": ("+ Thêm mới địa điểm", "+ New venue"),
    "venues.none": ("Bạn chưa có địa điểm nào.", "You have no venues yet."),
    "venues.invitations": ("Lời mời đang chờ xác nhận", "Invitations waiting for you"),
    "venues.confirm": ("Xác nhận", "Confirm"),
    "venue.name": ("Tên địa điểm", "Venue name"),
    "venue.name_hint": ("Gợi ý: viết tắt huyện/thành phố - tên cơ sở, ví dụ TP-Vincom",
                        "Tip: district abbreviation - place name, e.g. TP-Vincom"),
    "venue.kind": ("Loại địa điểm", "Type"),
    "venue.label": ("Nhãn", "Label"),
    "venue.label_hint": ("Không bắt buộc, ví dụ Cổng chính", "Optional, e.g. Main gate"),
    "venue.province": ("Tỉnh/Thành phố", "Province/City"),
    "venue.district": ("Quận/Huyện", "District"),
    "venue.ward": ("Phường/Xã", "Ward/Commune"),
    "venue.address": ("Địa chỉ", "Address"),
    "venue.address_hint": ("Ví dụ: Số 120 Đường Lê Duẩn", "For example: 120 Le Duan Street"),
    "venue.parent": ("Nằm trong địa điểm", "Located within"),
    "venue.parent_none": ("(Không)", "(None)"),
    "venue.plate": ("Biển số xe (với phương tiện)", "Licence plate (vehicles)"),
    "venue.plate_hint": ("Ví dụ: 51B-123.45", "For example 51B-123.45"),
    "venue.choose": ("-- Chọn --", "-- Choose --"),
    "venue.save": ("Lưu", "Save"),
    "venue.create_title": ("Đăng ký địa điểm", "Register a venue"),
    "venue.edit_title": ("Chỉnh sửa địa điểm", "Edit venue"),
    "venue.edit": ("Chỉnh sửa", "Edit"),
    "venue.poster": ("Tải mã QR địa điểm", "Download the venue poster"),
    "venue.share": ("Chia sẻ địa điểm", "Share venue"),
    "venue.history": ("Lịch sử", "History"),
    "venue.export": ("Tải dữ liệu (CSV)", "Download data (CSV)"),
    "venue.export_more": ("Xuất dữ liệu (XLSX / CSV)…", "Export (XLSX / CSV)…"),
    "venue.reports": ("Báo cáo tuần", "Weekly reports"),
    "venue.roster": ("Danh sách nhân sự", "Roster"),
    "venue.selfcheckin": ("Trang tự khai báo", "Self check-in page"),
    "venue.your_role": ("Vai trò của bạn", "Your role"),
    "venue.members": ("Người được chia sẻ", "People with access"),
    "venue.pending": ("Đang chờ xác nhận", "Waiting for confirmation"),
    "venue.revoke": ("Hủy chia sẻ", "Revoke"),
    "venue.cancel": ("Hủy lời mời", "Cancel"),
    "venue.checkins": ("Lượt ra vào gần nhất", "Latest check-ins"),
    "share.title": ("Chia sẻ địa điểm", "Share venue"),
    "share.intro": ("Nhập số điện thoại của người muốn chia sẻ và chọn vai trò. Nhiều số cách nhau bởi dấu phẩy. "
                    "Mỗi người sẽ nhận một mã xác nhận qua tin nhắn.",
                    "Enter the phone numbers to share with and choose a role. Separate several numbers with commas. "
                    "Each person receives a confirmation code by SMS."),
    "share.phones": ("Số điện thoại", "Phone numbers"),
    "share.role": ("Vai trò", "Role"),
    "share.submit": ("Chia sẻ địa điểm", "Share"),
    "share.sent": ("Đã gửi mã xác nhận tới: {phones}", "Confirmation codes sent to: {phones}"),
    "invite.title": ("Xác nhận chia sẻ địa điểm", "Confirm a shared venue"),
    "invite.text": ("Bạn được mời làm {role} của địa điểm {venue}. Nhập mã xác nhận đã gửi tới {phone}.",
                    "You are invited as {role} of {venue}. Enter the code sent to {phone}."),
    "history.title": ("Lịch sử", "History"),
    "history.no": ("STT", "#"),
    "history.time": ("Ngày giờ xử lý", "Time"),
    "history.account": ("Tài khoản", "Account"),
    "history.ip": ("Địa chỉ IP", "IP address"),
    "history.text": ("Nhật ký xử lý", "Action"),
    "checkins.time": ("Thời gian", "Time"),
    "checkins.venue": ("Địa điểm", "Venue"),
    "checkins.dir": ("Chiều", "Direction"),
    "checkins.name": ("Họ tên", "Name"),
    "checkins.id": ("Số giấy tờ", "ID number"),
    "checkins.birth": ("Năm sinh", "Born"),
    "checkins.kind": ("Loại", "Kind"),
    "checkins.station": ("Trạm", "Station"),
    "card.cccd": ("CCCD", "Citizen ID card"),
    "card.bhyt": ("Thẻ BHYT", "Health-insurance card"),
    "card.national": ("Mã QR cá nhân (VNeID)", "National personal QR"),
    "card.pass": ("Thẻ ra vào", "QR gate pass"),
    "checkins.in": ("Vào", "In"),
    "checkins.out": ("Ra", "Out"),
    "checkins.none": ("Chưa có lượt nào.", "No check-ins yet."),
    "checkins.self": ("tự khai báo", "self-declared"),
    "checkins.phone": ("Điện thoại số {number} ({account})", "Phone no. {number} ({account})"),
    "checkins.phone_short": ("Điện thoại số {number}", "Phone no. {number}"),
    # An area on the map from before 1 July 2025 (server/areas/), wherever areas are listed.
    "area.old_map": ("địa giới cũ, trước 01/07/2025", "old map, before 1 July 2025"),
    "checkins.corrected": ("giờ đã hiệu chỉnh", "time corrected"),
    "checkins.unsynced_red": ("Giờ màu đỏ:", "Times in red:"),
    "checkins.unsynced_legend": ("đồng hồ của trạm chưa được đồng bộ (chưa lấy được giờ chuẩn qua mạng) khi quét, "
                                 "nên giờ ghi nhận có thể lệch so với giờ thật.",
                                 "the station's clock was not synchronised (it had not got the time from the network) "
                                 "when it scanned, so the time recorded may be off."),
    "checkins.unsynced_title": ("Đồng hồ trạm chưa đồng bộ khi quét", "The station's clock was not synchronised"),
    "checkins.zone": ("Giờ theo {zone}.", "Times in {zone}."),
    "checkins.zone_vn": ("giờ Việt Nam (UTC+7)", "Vietnam time (UTC+7)"),
    "checkins.masked": ("Thông tin cá nhân đã được che bớt.", "Personal data is masked."),
    "checkins.total": ("Tổng số lượt", "Total check-ins"),
    "self.title": ("Khai báo ra/vào", "Check in or out"),
    "self.id": ("Số CCCD/CMND hoặc mã thẻ BHYT", "ID card or health-insurance card number"),
    "self.name": ("Họ và tên", "Full name"),
    "self.birth": ("Năm sinh (không bắt buộc)", "Year of birth (optional)"),
    "self.remember": ("Điện thoại này sẽ nhớ thông tin cho lần sau.", "This phone remembers your details for next time."),
    "self.in": ("VÀO", "IN"),
    "self.out": ("RA", "OUT"),
    "self.done_in": ("Đã ghi nhận: VÀO", "Recorded: IN"),
    "self.done_out": ("Đã ghi nhận: RA", "Recorded: OUT"),
    "self.show": ("Đưa màn hình này cho người kiểm soát nếu được hỏi.", "Show this screen at the gate if asked."),
    "self.back": ("Khai báo lần khác", "Declare again"),
    "self.privacy": ("Thông tin chỉ dùng để truy vết khi cơ quan y tế yêu cầu.",
                     "Your details are used only for contact tracing requested by health officers."),
    "error.title": ("Không tìm thấy", "Not found"),
    "error.forbidden": ("Bạn không có quyền làm việc này.", "You are not allowed to do this."),
    "error.forbidden_title": ("Không có quyền", "Not allowed"),
    "error.csrf_title": ("Phiên làm việc đã hết hạn", "Session expired"),
    "error.other_title": ("Chưa thực hiện được", "Not done"),
    "error.back": ("Quay lại trang chính", "Back to the main page"),
    "error.back_page": ("Quay lại", "Back"),
    "error.not_found": ("Không tìm thấy trang hoặc địa điểm này.", "This page or venue does not exist."),
    "error.csrf": ("Phiên làm việc đã hết hạn, hãy tải lại trang và thử lại.",
                   "Your session expired; reload the page and try again."),
    "sms.title": ("Tin nhắn đã gửi (chỉ môi trường phát triển)", "Messages sent (development only)"),
    "retention.kept": ("Lượt ra vào được lưu {days} ngày, sau đó tự động xóa.",
                       "Check-ins are kept {days} days, then deleted."),
    "retention.forever": ("Lượt ra vào được lưu không thời hạn (máy chủ chưa đặt thời gian lưu).",
                          "Check-ins are kept with no time limit (the server sets no retention)."),
}

HISTORY_TEXTS = {
    "qrgate.account.login": ("Đăng nhập", "Logged in"),
    "qrgate.account.login.failed": ("Đăng nhập không thành công: mã sai hoặc hết hạn ({phone})",
                                    "Failed login: wrong or expired code ({phone})"),
    "qrgate.account.locked": ("Tạm khóa số {phone} sau nhiều lần nhập sai mã",
                              "Locked {phone} after repeated wrong codes"),
    "qrgate.account.logout": ("Đăng xuất", "Logged out"),
    "qrgate.venue.created": ("Đăng ký địa điểm {venue}", "Registered venue {venue}"),
    "qrgate.venue.updated": ("Chỉnh sửa địa điểm {venue}", "Edited venue {venue}"),
    "qrgate.venue.member.invited": ("Mời {phone} với vai trò {role}, chờ xác nhận bằng mã",
                                    "Invited {phone} as {role}, waiting for the code"),
    "qrgate.venue.member.granted": ("Chia sẻ địa điểm {venue} đã được chia sẻ cho {phone} với vai trò {role}",
                                    "Venue {venue} was shared with {phone} as {role}"),
    "qrgate.venue.member.revoked": ("Hủy chia sẻ: {phone} đã bị hủy vai trò {role} đối với địa điểm {venue}",
                                    "Revoked: {phone} no longer has the role {role} at {venue}"),
    "qrgate.venue.invitation.cancelled": ("Hủy lời mời gửi tới {phone}", "Cancelled the invitation to {phone}"),
    "qrgate.venue.invitation.code_failed": ("Nhập sai mã xác nhận lời mời gửi tới {phone}",
                                            "Wrong code entered for the invitation to {phone}"),
    "qrgate.venue.poster.downloaded": ("Tải file: tải xuống file Mã QR của địa điểm {venue} ({format})",
                                       "Download: venue QR poster of {venue} ({format})"),
    "qrgate.venue.checkins.exported": ("Tải dữ liệu: {rows} lượt ra vào của địa điểm {venue}",
                                       "Export: {rows} check-ins of {venue}"),
    "qrgate.checkins.unmasked.read": ("Xem thông tin đầy đủ của {rows} lượt ra vào", "Read {rows} check-ins unmasked"),
    "qrgate.station.enrol_code": ("Tạo mã cài đặt trạm cho địa điểm {venue} ({minutes} phút)",
                                  "Made a station setup code for {venue} ({minutes} min)"),
    "qrgate.station.retired": ("Ngừng trạm {station}", "Retired station {station}"),
    "qrgate.station.reassigned": ("Chuyển trạm {station} sang địa điểm {venue}", "Moved station {station} to venue {venue}"),
    "qrgate.trace.run": ("Truy vết {person}: {contacts} người tiếp xúc", "Traced {person}: {contacts} contacts"),
    "qrgate.retention.deleted": ("Xóa {rows} lượt ra vào cũ hơn {days} ngày", "Deleted {rows} check-ins older than {days} days"),
}


def register(texts: dict[str, tuple[str, str]], history: dict[str, tuple[str, str]] | None = None) -> None:
    """Add a feature module's words (and the sentences of its audit actions); a key that
    is already taken with other words is a programming error."""
    for table, new in ((TEXTS, texts), (HISTORY_TEXTS, history or {})):
        for key, pair in new.items():
            if table.get(key, pair) != pair:
                raise ValueError(f"text {key!r} registered twice with different words")
            table[key] = pair


def translate(lang: str, key: str, **values) -> str:
    pair = TEXTS.get(key)
    text = key if pair is None else pair[1 if lang == "en" else 0]
    return text.format(**values) if values else text


def _named(lang: str, key: str, fallback: str) -> str:
    pair = TEXTS.get(key)
    return fallback if pair is None else pair[1 if lang == "en" else 0]


def role_name(lang: str, role: str) -> str:
    """A venue role's name (``role.<role>``, registered by server/venues/permissions.py)."""
    return _named(lang, f"role.{role}", role)


def kind_name(lang: str, kind: str) -> str:
    """A venue kind's name (``kind.<kind>``, registered by server/venues/venues.py)."""
    return _named(lang, f"kind.{kind}", kind)


def card_name(lang: str, kind: str) -> str:
    """A card kind (cccd, bhyt, national, pass, ...) as people call it."""
    return _named(lang, f"card.{kind}", kind)


def direction_name(lang: str, direction: str) -> str:
    """``in`` / ``out`` as words (Vào / Ra)."""
    return _named(lang, f"checkins.{direction}", direction) if direction in ("in", "out") else direction


def birth_text(birth: str) -> str:
    """A birth date as people write it, dd/mm/yyyy (``**`` kept where the card left the
    day or month out: ``**/**/1985``); a year alone, or anything else, as it is."""
    match = _BIRTH.fullmatch(birth or "")
    return f"{match.group(3)}/{match.group(2)}/{match.group(1)}" if match else (birth or "")


def history_text(lang: str, action: str, data: dict, venue_name: str) -> str:
    """An audit entry as a sentence. A value in ``data`` is said in words when a feature
    registered ``value.<field>.<value>`` (the roster's ``mode``: merge -> gộp), a role by
    its name, and a date (yyyy-mm-dd) as dd/mm/yyyy."""
    pair = HISTORY_TEXTS.get(action, (action, action))
    values = {"venue": venue_name, "phone": "", "role": "", "format": "", "rows": ""}
    for field, value in data.items():
        text = str(value)
        if f"value.{field}.{text}" in TEXTS:
            text = translate(lang, f"value.{field}.{text}")
        elif _ISO_DATE.fullmatch(text):
            text = f"{text[8:10]}/{text[5:7]}/{text[:4]}"
        values[field] = text
    if "role" in data:
        values["role"] = role_name(lang, str(data["role"]))
    return pair[1 if lang == "en" else 0].format(**values)
