"""Every cell of the permission matrix in docs/permissions.md, through the HTTP API and
pages: each venue role, a logged-in non-member and an anonymous visitor; and members of
one venue reaching another venue's data by changing the id in the URL."""

from __future__ import annotations

import itertools
import re
from pathlib import Path

import pytest

from server.venues.permissions import ROLES, VENUE_PERMISSIONS, allowed, may_share
from test_web_support import Site

pytestmark = pytest.mark.timeout(60)
DOC = Path(__file__).resolve().parents[1] / "docs" / "permissions.md"
WHO = ("owner", "manager", "controller", "non-member", "anonymous")
PHONES = {"owner": "0911000001", "manager": "0911000002", "controller": "0911000003", "non-member": "0911000004"}
_fresh = itertools.count(1)


@pytest.fixture(scope="module")
def world(tmp_path_factory):
    """Venue A with one member per role, and venue B owned by someone else. Shared by the
    tests of this file (built once: logging in five people is the slow part); a test that
    changes members works on people and venues of its own."""
    site = Site.create(tmp_path_factory.mktemp("permissions"))
    people = {who: site.visitor(f"198.51.100.{i}").login(phone) for i, (who, phone) in enumerate(PHONES.items(), 1)}
    people["anonymous"] = site.visitor("198.51.100.99")
    venue_a = people["owner"].create_venue(name="Venue A")
    venues = site.services.venues
    for role in ("manager", "controller"):
        venues.add_member(venue_a, site.services.accounts.account_for_phone(PHONES[role]), role)
    other = site.visitor("198.51.100.50").login("0911000099")
    venue_b = other.create_venue(name="Venue B <secret>")
    site.services.self_checkin.check_in(venues.get(venue_b), {
        "kind": "cccd", "dir": "in", "person": {"id": "001090000001", "name": "Trần Bí Mật", "birth": "", "sex": ""}})
    return site, people, venue_a, venue_b


def request_for(action: str, visitor, venue_id: int):
    """The HTTP request that exercises ``action`` on ``venue_id``."""
    target = action.rsplit(".", 1)[-1]
    if action == "venue.view":
        return visitor.http.get(f"/api/venues/{venue_id}")
    if action == "checkins.view":
        return visitor.http.get(f"/api/venues/{venue_id}/checkins")
    if action == "venue.edit":
        return visitor.api("PUT", f"/api/venues/{venue_id}", {"kind": "market", "name": "Renamed", "address": "x",
                                                                "province": "79", "ward": "26743"})
    if action == "venue.close":  # reopening an open venue: allowed, and leaves it open for the other cells
        return visitor.api("POST", f"/api/venues/{venue_id}/reopen", {})
    if action == "poster.download":
        return visitor.http.get(f"/venues/{venue_id}/poster.png")
    if action == "checkins.export":
        return visitor.http.get(f"/venues/{venue_id}/checkins.csv")
    if action == "history.view":
        return visitor.http.get(f"/api/venues/{venue_id}/history")
    if action == "members.view":
        return visitor.http.get(f"/api/venues/{venue_id}/members")
    if action.startswith("members.share."):
        return visitor.api("POST", f"/api/venues/{venue_id}/invitations",
                           {"phones": f"0922{next(_fresh):06d}", "role": target})
    if action == "stations.enrol":
        return visitor.api("POST", f"/api/venues/{venue_id}/enrol-code", {"minutes": 5})
    if action == "roster.view":
        return visitor.http.get(f"/api/venues/{venue_id}/roster/absent")
    if action == "roster.manage":
        return visitor.http.post(f"/api/venues/{venue_id}/roster", headers={"X-CSRF-Token": visitor.csrf()},
                                 files={"file": ("r.csv", "ma_nv,ho_ten\nNV1,Lê Văn Tám\n".encode(), "text/csv")})
    if action == "passes.print":
        return visitor.http.get(f"/api/venues/{venue_id}/passes")
    if action == "phone.scan":  # the scanner page of a phone scanning for the venue
        return visitor.http.get(f"/phone/venues/{venue_id}")
    if action == "reports.view":
        return visitor.http.get(f"/api/venues/{venue_id}/reports/2026-W47")
    raise AssertionError(action)


def expected_status(who: str, action: str, api: bool) -> set[int]:
    if who == "anonymous":
        return {401} if api else {303}  # pages send anonymous visitors to the login page
    if who == "non-member":
        return {404}
    return {200, 201} if allowed(who, action) else {403}


@pytest.mark.parametrize("action", sorted(VENUE_PERMISSIONS))
def test_each_role_may_do_exactly_what_the_matrix_says(world, action):
    site, people, venue_a, _ = world
    for who in WHO:
        response = request_for(action, people[who], venue_a)
        api = response.request.url.path.startswith("/api/")
        assert response.status_code in expected_status(who, action, api), (who, action, response.status_code,
                                                                      response.text[:200])


@pytest.mark.parametrize("action", sorted(VENUE_PERMISSIONS))
def test_changing_the_venue_id_in_the_url_never_reaches_another_venue(world, action):
    site, people, _, venue_b = world
    for who in ("owner", "manager", "controller", "non-member"):
        response = request_for(action, people[who], venue_b)
        assert response.status_code == 404, (who, action, response.status_code)
        assert "Venue B" not in response.text and "Trần" not in response.text and "*********001" not in response.text
    assert site.services.venues.get(venue_b).name == "Venue B <secret>"


@pytest.mark.parametrize("target", ROLES)
def test_revoking_follows_the_same_rule_as_sharing(world, target):
    site, people, venue_a, _ = world
    venues = site.services.venues
    for who in WHO:
        victim = site.services.accounts.account_for_phone(f"0933{next(_fresh):06d}")
        venues.add_member(venue_a, victim, target)
        response = people[who].api("DELETE", f"/api/venues/{venue_a}/members/{victim.id}")
        if who == "anonymous":
            assert response.status_code == 401
        elif who == "non-member":
            assert response.status_code == 404
        elif may_share(who, target):
            assert response.status_code == 200, (who, target, response.text)
            assert venues.role_of(venue_a, victim.id) is None
            continue
        else:
            assert response.status_code == 403, (who, target, response.status_code)
        assert venues.role_of(venue_a, victim.id) == target


def test_every_member_may_leave_but_the_last_owner_may_not(world):
    site, people, _, _ = world
    venues = site.services.venues
    venue_c = people["non-member"].create_venue(name="Venue C")
    controller = site.services.accounts.account_for_phone(PHONES["controller"])
    venues.add_member(venue_c, controller, "controller")
    assert people["controller"].api("DELETE", f"/api/venues/{venue_c}/members/{controller.id}").status_code == 200
    assert venues.role_of(venue_c, controller.id) is None
    owner = site.services.accounts.account_for_phone(PHONES["non-member"])
    response = people["non-member"].api("DELETE", f"/api/venues/{venue_c}/members/{owner.id}")
    assert response.status_code == 409 and "chủ sở hữu" in response.json()["detail"]
    assert venues.role_of(venue_c, owner.id) == "owner"


def test_anyone_logged_in_may_register_a_venue_and_anonymous_may_not(world):
    site, people, _, _ = world
    assert people["anonymous"].api("POST", "/api/venues", {"kind": "market", "name": "x", "address": "y",
                                                           "province": "79",
                                                           "ward": "26743"}).status_code == 401
    assert people["non-member"].create_venue(name="Own venue") > 0


def test_anonymous_pages_send_people_to_the_login_page(world):
    site, people, venue_a, _ = world
    for path in ("/venues", f"/venues/{venue_a}", f"/venues/{venue_a}/history", f"/venues/{venue_a}/share",
                 "/venues/new"):
        response = people["anonymous"].http.get(path)
        assert response.status_code == 303 and response.headers["location"].startswith("/login?next=")


def test_venue_pages_of_another_venue_are_not_found_for_members(world):
    site, people, _, venue_b = world
    for path in ("", "/edit", "/history", "/share", "/poster.pdf", "/checkins.csv"):
        response = people["owner"].http.get(f"/venues/{venue_b}{path}")
        assert response.status_code == 404 and "Venue B" not in response.text


def test_a_venue_cannot_be_placed_inside_another_owners_venue(world):
    site, people, venue_a, venue_b = world
    response = people["owner"].api("POST", "/api/venues", {"kind": "market", "name": "Stall", "address": "x",
                                                           "province": "79", "ward": "26743",
                                                           "parent_id": venue_b})
    assert response.status_code == 422 and "parent_id" in response.json()["problems"]


def test_anonymous_visitors_may_self_check_in_but_only_by_the_posters_token(world):
    site, people, venue_a, _ = world
    token = site.services.venues.ensure_public_token(venue_a)
    body = {"id_number": "001090000123", "name": "Lê Văn An", "direction": "in"}
    assert people["anonymous"].api("POST", f"/api/self-checkin/{token}", body).status_code == 201
    assert people["anonymous"].api("POST", f"/api/self-checkin/{venue_a}", body).status_code == 404


def test_the_operator_page_is_hidden_from_everyone_but_operators(world):
    site, people, _, _ = world
    for who in ("owner", "manager", "controller", "non-member"):
        assert people[who].http.get("/operator/sms").status_code == 404
    assert people["anonymous"].http.get("/operator/sms").status_code == 303


def _doc_matrix() -> dict[str, dict[str, bool]]:
    text = DOC.read_text(encoding="utf-8")
    table = {}
    for line in text.splitlines():
        match = re.match(r"\|\s*`([a-z.]+)`[^|]*\|(.+)\|\s*$", line)
        if match and match.group(1) in VENUE_PERMISSIONS:
            cells = [c.strip() for c in match.group(2).split("|")]
            table[match.group(1)] = dict(zip(WHO, (c.startswith("✓") for c in cells)))
    return table


def test_the_documented_matrix_is_the_one_the_server_enforces():
    table = _doc_matrix()
    assert set(table) == set(VENUE_PERMISSIONS)
    for action, cells in table.items():
        for who in WHO:
            assert cells[who] == (who in ROLES and allowed(who, action)), (action, who)
