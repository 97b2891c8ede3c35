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
    "venue.edit": frozenset({"owner", "manager"}),
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
