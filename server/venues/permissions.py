"""What each venue role may do: the one table the web layer asks, and docs/permissions.md
describes cell by cell (tests/test_permissions.py checks both agree)."""

from __future__ import annotations

from server.web import i18n

ROLES = ("owner", "manager", "controller")

ROLE_NAMES = {
    "vi": {"owner": "Chủ sở hữu", "manager": "Người quản lý", "controller": "Người kiểm soát vào ra"},
    "en": {"owner": "Owner", "manager": "Manager", "controller": "Gate controller"},
}
i18n.register({f"role.{role}": (ROLE_NAMES["vi"][role], ROLE_NAMES["en"][role]) for role in ROLES})

# action -> roles allowed. Anonymous visitors and logged-in non-members have none of
# these on a venue; they see it as not existing (404), so ids reveal nothing.
VENUE_PERMISSIONS: dict[str, frozenset[str]] = {
    "venue.view": frozenset({"owner", "manager", "controller"}),
    "checkins.view": frozenset({"owner", "manager", "controller"}),
    "phone.scan": frozenset({"owner", "manager", "controller"}),
    "venue.edit": frozenset({"owner", "manager"}),
    "venue.close": frozenset({"owner"}),
    "poster.download": frozenset({"owner", "manager"}),
    "checkins.export": frozenset({"owner", "manager"}),
    "history.view": frozenset({"owner", "manager"}),
    "members.view": frozenset({"owner", "manager"}),
    "members.share.owner": frozenset({"owner"}),
    "members.share.manager": frozenset({"owner"}),
    "members.share.controller": frozenset({"owner", "manager"}),
    "stations.enrol": frozenset({"owner", "manager"}),
    "roster.view": frozenset({"owner", "manager", "controller"}),
    "roster.manage": frozenset({"owner", "manager"}),
    "passes.print": frozenset({"owner", "manager"}),
    "reports.view": frozenset({"owner", "manager"}),
}


def allowed(role: str | None, action: str) -> bool:
    """May a member with ``role`` (None: not a member) do ``action`` on the venue?"""
    if action not in VENUE_PERMISSIONS:
        raise KeyError(f"unknown venue action {action!r}")
    return role is not None and role in VENUE_PERMISSIONS[action]


def may_share(role: str | None, target_role: str) -> bool:
    """May a member with ``role`` grant or revoke ``target_role``?"""
    return target_role in ROLES and allowed(role, f"members.share.{target_role}")


def role_rights() -> list[tuple[str, list[str]]]:
    """What each role may do, in words, for the members list (from the permissions table)."""
    return [(role, [key for action, key in RIGHT_WORDS if allowed(role, action)]) for role in ROLES]


RIGHT_WORDS = (("checkins.view", "rights.checkins"), ("roster.manage", "rights.roster"),
               ("checkins.export", "rights.export"), ("venue.edit", "rights.edit"),
               ("members.share.controller", "rights.share_controller"), ("members.share.owner", "rights.share_all"),
               ("venue.close", "rights.close"))
i18n.register({
    "rights.checkins": ("xem lượt quét (che thông tin cá nhân)", "see scans (personal data masked)"),
    "rights.roster": ("quản lý danh sách người lao động, in thẻ", "manage the roster, print passes"),
    "rights.export": ("tải dữ liệu, xem báo cáo", "export data, read reports"),
    "rights.edit": ("sửa thông tin địa điểm, in mã QR, cài đặt trạm", "edit the venue, print the QR, set up stations"),
    "rights.share_controller": ("mời người kiểm soát vào ra", "invite gate controllers"),
    "rights.share_all": ("mời và hủy mọi vai trò", "invite and remove any role"),
    "rights.close": ("đóng cửa, mở lại địa điểm", "close and reopen the venue"),
})
