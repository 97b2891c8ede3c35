"""A venue as people type it: kinds, licence plates, the contact person for the
authorities, the checks that turn a form into clean values (or Vietnamese messages), and
the words the audit trail uses for what an edit changed."""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from qrgate.errors import UserError
from server.accounts.accounts import PhoneError, normalise_phone
from server.areas.areas import AreaDirectory
from server.web import i18n

VENUE_KINDS = {
    "office": ("Cơ quan, công sở", "Office"),
    "factory": ("Nhà máy, xí nghiệp", "Factory"),
    "school": ("Trường học", "School"),
    "hospital": ("Bệnh viện, cơ sở y tế", "Hospital, clinic"),
    "market": ("Chợ, siêu thị, cửa hàng", "Market, shop"),
    "restaurant": ("Nhà hàng, quán ăn", "Restaurant"),
    "lodging": ("Cơ sở lưu trú", "Lodging"),
    "public": ("Địa điểm công cộng", "Public place"),
    "event": ("Sự kiện", "Event"),
    "vehicle": ("Phương tiện (xe đưa đón)", "Vehicle (shuttle)"),
    "other": ("Khác", "Other"),
}
i18n.register({f"kind.{kind}": pair for kind, pair in VENUE_KINDS.items()})

LIMITS = {"name": 200, "label": 60, "address": 300, "contact_name": 100, "contact_role": 100}

# 2-digit province number, a series of one or two letters optionally followed by a
# digit (51B, 30LD, 29D1), then four digits or five written NNN.NN: 51B-123.45, 30A-1234.
_PLATE = re.compile(r"(\d{2})([A-Z]{1,2}\d??)-?(\d{4}|\d{3}\.?\d{2})", re.ASCII)
_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


class VenueError(UserError):
    """Venue input that cannot be saved; ``problems`` maps each field to a message."""

    def __init__(self, problems: Mapping[str, str]):
        super().__init__("; ".join(problems.values()))
        self.problems = dict(problems)


def normalise_plate(text: str) -> str:
    """``51b 12345`` -> ``51B-123.45``; ``30a-1234`` -> ``30A-1234``; VenueError if not a plate."""
    compact = re.sub(r"[\s]", "", (text or "").upper())
    match = _PLATE.fullmatch(compact)
    if not match:
        raise VenueError({"plate": "Biển số không đúng dạng, ví dụ 51B-123.45 hoặc 30A-1234."})
    digits = match.group(3).replace(".", "")
    number = digits if len(digits) == 4 else f"{digits[:3]}.{digits[3:]}"
    return f"{match.group(1)}{match.group(2)}-{number}"


def normalise_contact_phone(text: str) -> str:
    """``0236 3821 111`` -> ``02363821111``, ``+84 912 486 419`` -> ``0912486419`` (the
    accounts' one spelling per number); VenueError if not a number."""
    try:
        return normalise_phone(text)
    except PhoneError:
        message = "Số điện thoại liên hệ không đúng: 10 hoặc 11 chữ số, ví dụ 0912 486 419."
        raise VenueError({"contact_phone": message}) from None


def clean_text(value: Any) -> str:
    """Form text as stored: NFC, control characters dropped, whitespace collapsed."""
    text = unicodedata.normalize("NFC", str(value or ""))
    return " ".join(_CONTROL.sub("", text).split())


def join_address(*parts: str) -> str:
    """``Số 1 Lê Lợi, Phường Bến Thành, ...``: the parts that are there, so that a vehicle
    with no street address does not start with a comma."""
    return ", ".join(p for p in parts if p)


# The fields an edit may change, as the audit trail names them (Vietnamese, English).
CHANGE_WORDS = {
    "name": ("tên", "name"), "kind": ("loại", "kind"), "label": ("nhãn", "label"),
    "address": ("địa chỉ", "address"), "area": ("xã/phường", "commune"), "parent_id": ("nằm trong", "located within"),
    "plate": ("biển số", "plate"), "contact": ("người liên hệ", "contact person"),
}


def changed_fields(before, after) -> list[str]:
    """The CHANGE_WORDS keys whose values differ between two states of a venue."""
    if before is None:
        return list(CHANGE_WORDS)
    groups = {"area": ("province", "district", "ward", "area_map"),
              "contact": ("contact_name", "contact_role", "contact_phone")}
    return [key for key in CHANGE_WORDS
            if any(getattr(before, f) != getattr(after, f) for f in groups.get(key, (key,)))]


def change_words(keys: list[str]) -> dict[str, str]:
    """The changed fields as audit data, in both languages (the trail shows the visitor's)."""
    return {"fields_vi": ", ".join(CHANGE_WORDS[k][0] for k in keys) or "không có thay đổi",
            "fields_en": ", ".join(CHANGE_WORDS[k][1] for k in keys) or "nothing changed"}


@dataclass
class VenueInput:
    """What the venue form sends; ``validate`` turns it into clean values or VenueError.

    The area is a province and one of its communes/wards on the 2025 map. ``district``
    is what callers from before that map still send: there is no district level any
    more, so it is not read.
    """

    name: str = ""
    kind: str = ""
    label: str = ""
    address: str = ""
    province: str = ""
    district: str = ""
    ward: str = ""
    parent_id: int | None = None
    plate: str = ""
    contact_name: str = ""
    contact_role: str = ""
    contact_phone: str = ""

    TEXT_FIELDS = ("name", "kind", "label", "address", "province", "ward", "plate", "contact_name", "contact_role",
                   "contact_phone")

    def validate(self, areas: AreaDirectory) -> VenueInput:
        problems: dict[str, str] = {}
        values = {k: clean_text(getattr(self, k)) for k in self.TEXT_FIELDS}
        if values["kind"] not in VENUE_KINDS:
            problems["kind"] = "Hãy chọn loại địa điểm."
        plate = ""
        if values["kind"] == "vehicle":
            try:
                plate = normalise_plate(values["plate"])
            except VenueError as exc:
                problems.update(exc.problems)
            if not values["name"] and plate:
                values["name"] = f"Xe BKS {plate}"
        elif values["plate"]:
            problems["plate"] = "Chỉ phương tiện mới có biển số."
        if not values["name"]:
            problems["name"] = "Hãy nhập tên địa điểm."
        if values["kind"] != "vehicle" and not values["address"]:
            problems["address"] = "Hãy nhập địa chỉ: số nhà, đường (hoặc thôn, tổ)."
        for key, limit in LIMITS.items():
            if len(values[key]) > limit:
                problems[key] = f"Quá dài: tối đa {limit} ký tự (đang có {len(values[key])})."
        for key, message in areas.check(values["province"], values["ward"]):
            problems.setdefault(key, message)
        phone = ""
        if values["contact_phone"]:
            try:
                phone = normalise_contact_phone(values["contact_phone"])
            except VenueError as exc:
                problems.update(exc.problems)
        if (values["contact_name"] or values["contact_role"]) and not values["contact_phone"]:
            problems.setdefault("contact_phone", "Hãy nhập số điện thoại của người liên hệ.")
        if values["contact_phone"] and not values["contact_name"]:
            problems.setdefault("contact_name", "Hãy nhập họ tên người liên hệ.")
        if problems:
            raise VenueError(problems)
        return VenueInput(values["name"], values["kind"], values["label"], values["address"], values["province"],
                          "", values["ward"], self.parent_id, plate, values["contact_name"], values["contact_role"],
                          phone)
