"""The phone scanner's words, in Vietnamese and English, and the sentence of its audit entry.

The result screen says what a station's screen says (edge/display/screens.py: the same
headlines and the same words for each refusal code); the server never imports the
station, so the words are repeated here and tests/test_phone_words.py checks that both
agree.
"""

from __future__ import annotations

from server.audit import register_actions
from server.web import i18n

# edge.display.screens: HEADLINE_IN, HEADLINE_OUT, HEADLINE_COUNTED and HEADLINE.
HEADLINES = {
    "in": ("MỜI VÀO", "WELCOME"),
    "out": ("TẠM BIỆT", "GOODBYE"),
    "counted": ("ĐÃ GHI NHẬN", "COUNTED"),
    "already_counted": ("ĐÃ GHI RỒI", "ALREADY COUNTED"),
    "refused": ("KHÔNG HỢP LỆ", "NOT VALID"),
    "fault": ("LỖI THIẾT BỊ", "DEVICE FAULT"),
}
# edge.display.screens.REFUSAL_TEXT, REFUSAL_GENERIC and FAULT_GENERIC.
REFUSALS = {
    "empty": ("Mã trống", "Empty code"),
    "too_long": ("Mã quá dài", "Code too long"),
    "bad_encoding": ("Mã lỗi ký tự", "Broken characters"),
    "control_chars": ("Mã có ký tự lạ", "Strange characters"),
    "unknown_format": ("Mã không hỗ trợ", "Code not supported"),
    "bad_field": ("Mã sai thông tin", "Wrong details in code"),
    "bad_signature": ("Chữ ký sai", "Wrong signature"),
    "expired": ("Thẻ hết hạn", "Pass expired"),
    "not_yet_valid": ("Thẻ chưa hiệu lực", "Pass not valid yet"),
    "unknown_issuer": ("Thẻ không rõ nguồn", "Pass from unknown issuer"),
    "blocked": ("Xin gặp bảo vệ", "Please see the guard"),
    "passback": ("Chưa ghi lượt ra", "No exit recorded"),
}
REFUSAL_GENERIC = ("Xin gặp bảo vệ", "Please see the guard")
FAULT_GENERIC = ("Báo kỹ thuật viên", "Call a technician")
# edge.display.screens.MODE_TEXT
MODES = {"entry": ("Cổng vào", "Entry gate"), "exit": ("Cổng ra", "Exit gate"), "toggle": ("Vào/Ra", "In/Out")}

TEXTS: dict[str, tuple[str, str]] = {
    "phone.title": ("Quét mã bằng điện thoại", "Scan with this phone"),
    "phone.choose_venue": ("Chọn địa điểm để quét mã:", "Choose the venue to scan for:"),
    "phone.no_venues": ("Bạn chưa có địa điểm nào.", "You have no venues yet."),
    "phone.back": ("Về trang địa điểm", "Back to the venue"),
    "phone.enrol_title": ("Gắn điện thoại này làm trạm quét", "Make this phone a scanning station"),
    "phone.enrol_explain": (
        "Chủ sở hữu hoặc người quản lý tạo \"Mã cài đặt trạm\" trên trang địa điểm. Quét mã đó bằng camera"
        " của điện thoại này, hoặc dán nội dung mã vào ô dưới đây. Mã chỉ dùng một lần.",
        "An owner or manager makes a \"Station setup code\" on the venue's page. Scan it with this phone's"
        " camera, or paste the code's text below. A code works once."),
    "phone.enrol_scan": ("Quét mã cài đặt", "Scan the setup code"),
    "phone.enrol_code": ("Nội dung mã cài đặt", "Setup code text"),
    "phone.enrol_submit": ("Gắn điện thoại", "Enrol this phone"),
    "phone.enrolling": ("Đang gắn điện thoại…", "Enrolling this phone…"),
    "phone.enrolled": ("Đã gắn điện thoại: {device}. Bấm \"Bắt đầu quét\" để quét mã.",
                       "This phone is enrolled as {device}. Press \"Start scanning\"."),
    "phone.not_enrol_code": ("Đây không phải mã cài đặt trạm.", "This is not a station setup code."),
    "phone.enrol_error.unknown": ("Mã cài đặt không đúng.", "Unknown setup code."),
    "phone.enrol_error.used": ("Mã cài đặt đã được dùng: hãy xin mã mới.",
                               "This setup code was already used: ask for a new one."),
    "phone.enrol_error.expired": ("Mã cài đặt đã hết hạn: hãy xin mã mới.",
                                  "This setup code has expired: ask for a new one."),
    "phone.enrol_error.other_venue": ("Mã cài đặt này dành cho địa điểm khác.",
                                      "This setup code belongs to another venue."),
    "phone.enrol_error.closed": ("Địa điểm này đã đóng cửa: không gắn thêm trạm được. Hãy mở lại địa điểm trước.",
                                 "This venue is closed: no station can be added. Reopen the venue first."),
    "phone.enrol_error.network": ("Không gắn được vì mất mạng: hãy thử lại khi có mạng.",
                                  "Cannot enrol without a network: try again when online."),
    "phone.enrol_error.other": ("Không gắn được điện thoại: hãy thử lại.", "Could not enrol this phone: try again."),
    "phone.unsupported": ("Trình duyệt này không tạo được khóa ký Ed25519: hãy dùng Chrome hoặc Safari bản mới.",
                          "This browser cannot make an Ed25519 signing key: use a recent Chrome or Safari."),
    "phone.mode": ("Chế độ", "Mode"),
    "phone.device": ("Điện thoại số {number}", "Phone {number}"),
    "phone.start": ("Bắt đầu quét", "Start scanning"),
    "phone.stop": ("Dừng quét", "Stop scanning"),
    "phone.torch": ("Đèn pin", "Torch"),
    "phone.online": ("Trực tuyến", "Online"),
    "phone.offline": ("Mất mạng", "Offline"),
    "phone.backlog": ("Chờ gửi: {count}", "Waiting to send: {count}"),
    "phone.prompt": ("Mời quét mã", "Scan a code"),
    "phone.keyboard_hint": ("Đầu đọc mã USB hoặc Bluetooth (chế độ bàn phím) cũng dùng được trên trang này.",
                            "A USB or Bluetooth scanner in keyboard mode works on this page too."),
    "phone.recent": ("Lượt quét gần đây", "Recent scans"),
    "phone.recent_none": ("Chưa có lượt quét nào.", "No scans yet."),
    "phone.state.sent": ("đã gửi", "sent"),
    "phone.state.waiting": ("chờ gửi", "waiting"),
    "phone.state.offline": ("đã ghi khi mất mạng", "recorded offline"),
    "phone.state.refused": ("máy chủ từ chối", "refused by the server"),
    "phone.no_camera": ("Không mở được camera: hãy cho phép trang này dùng camera, hoặc dùng đầu đọc mã.",
                        "Cannot open the camera: allow this page to use it, or use a scanner."),
    "phone.no_role": ("Tài khoản đã gắn điện thoại này không còn quyền tại địa điểm: các lượt quét được giữ"
                      " trên máy, chưa gửi.",
                      "The account that enrolled this phone has no role at the venue any more: scans are"
                      " kept on the phone, not sent."),
    "phone.retired": ("Điện thoại này đã bị ngừng làm trạm: các lượt quét không được gửi nữa.",
                      "This phone was retired as a station: its scans are not sent any more."),
    "phone.login_again": ("Hãy đăng nhập lại để cập nhật cấu hình trạm; vẫn quét được.",
                          "Log in again to update the station settings; scanning still works."),
    "phone.storage_full": ("Không lưu được lượt quét trên máy: bộ nhớ trình duyệt đầy hoặc bị chặn.",
                           "Cannot keep the scan on this phone: the browser's storage is full or blocked."),
    **{f"phone.headline.{key}": pair for key, pair in HEADLINES.items()},
    **{f"phone.refusal.{key}": pair for key, pair in REFUSALS.items()},
    "phone.refusal_generic": REFUSAL_GENERIC,
    "phone.fault_generic": FAULT_GENERIC,
    **{f"phone.mode.{key}": pair for key, pair in MODES.items()},
}

ENROLLED = "qrgate.phone.enrolled"

i18n.register(TEXTS, history={
    ENROLLED: ("Gắn điện thoại số {number} làm trạm quét", "Enrolled phone {number} as a scanning station"),
})
register_actions(ENROLLED)


def page_words(lang: str) -> dict[str, str]:
    """The words the page's script shows, in ``lang`` (placeholders left for it to fill)."""
    words = {key.removeprefix("phone."): i18n.translate(lang, key) for key in TEXTS}
    words.update({f"dir.{d}": i18n.direction_name(lang, d) for d in ("in", "out")})
    words.update({f"card.{k}": i18n.card_name(lang, k) for k in ("cccd", "bhyt", "national", "pass")})
    return words
