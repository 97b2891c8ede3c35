"""Sharing a venue by role: several numbers at once, each confirmed by its own code;
revocation; the history table; the audit trail refusing to be rewritten."""

from __future__ import annotations

import pytest

from test_web_support import Site

pytestmark = pytest.mark.timeout(30)
OWNER, ANH, BINH = "0912486419", "0976929792", "0969201470"


def share_code(site, phone: str) -> str:
    """The code in the latest sharing SMS to ``phone``."""
    text = next(m.text for m in site.sender.outbox if m.phone == phone and "chia sẻ" in m.text)
    return text.split("Mã xác nhận: ")[1][:6]


@pytest.fixture
def shared(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor("49.156.52.24").login(OWNER)
    venue = owner.create_venue(name="Công ty TNHH An Viên")
    return site, owner, venue


def test_sharing_with_two_numbers_sends_each_its_own_code_and_grants_nothing_yet(shared):
    site, owner, venue = shared
    response = owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": "0976 929 792, +84969201470",
                                                                       "role": "controller"})
    assert response.status_code == 201 and response.json()["invited"] == [ANH, BINH]
    assert "An Viên" in site.sender.last_text_to(ANH) and "An Viên" in site.sender.last_text_to(BINH)
    members = owner.http.get(f"/api/venues/{venue}/members").json()
    assert [m["phone"] for m in members["members"]] == [OWNER]
    assert {p["phone"] for p in members["pending"]} == {ANH, BINH}


def test_the_invited_person_confirms_with_their_code_and_gets_the_role(shared):
    site, owner, venue = shared
    owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": f"{ANH},{BINH}", "role": "controller"})
    anh = site.visitor("49.156.52.25").login(ANH)
    invitation = anh.http.get("/api/invitations").json()["invitations"][0]
    wrong = anh.api("POST", f"/api/invitations/{invitation['id']}/accept", {"code": "12345x"})
    assert wrong.status_code == 400
    code = share_code(site, ANH)
    accepted = anh.api("POST", f"/api/invitations/{invitation['id']}/accept", {"code": code})
    assert accepted.status_code == 200 and accepted.json() == {"venue_id": venue, "role": "controller"}
    assert anh.http.get(f"/api/venues/{venue}").json()["role"] == "controller"
    # The code is spent: it cannot be used a second time.
    assert anh.api("POST", f"/api/invitations/{invitation['id']}/accept", {"code": code}).status_code == 404


def test_someone_else_cannot_accept_an_invitation_meant_for_another_number(shared):
    site, owner, venue = shared
    owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": ANH, "role": "owner"})
    code = share_code(site, ANH)
    invitation_id = site.services.venues.pending_for_phone(ANH)[0].id
    binh = site.visitor("49.156.52.26").login(BINH)
    assert binh.api("POST", f"/api/invitations/{invitation_id}/accept", {"code": code}).status_code == 404
    assert binh.http.get(f"/api/venues/{venue}").status_code == 404


def test_a_bad_number_in_the_list_refuses_the_whole_list_with_its_name(shared):
    site, owner, venue = shared
    response = owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": f"{ANH}, 0123, {BINH}",
                                                                       "role": "manager"})
    assert response.status_code == 400 and "0123" in response.json()["detail"]
    assert site.sender.last_text_to(ANH) is None


def test_revoke_removes_access_and_the_history_says_who_did_what(shared):
    site, owner, venue = shared
    anh_account = site.services.accounts.account_for_phone(ANH)
    site.services.venues.add_member(venue, anh_account, "manager")
    assert owner.api("DELETE", f"/api/venues/{venue}/members/{anh_account.id}").status_code == 200
    anh = site.visitor().login(ANH)
    assert anh.http.get(f"/api/venues/{venue}").status_code == 404
    history = owner.http.get(f"/api/venues/{venue}/history").json()["history"]
    assert history[0]["action"] == "qrgate.venue.member.revoked"
    assert history[0]["account"] == OWNER and history[0]["ip"] == "49.156.52.24"
    assert history[0]["text"] == ("Hủy chia sẻ: 0976929792 đã bị hủy vai trò Người quản lý đối với địa điểm "
                                  "Công ty TNHH An Viên")


def test_grants_poster_downloads_and_exports_are_in_the_history(shared):
    site, owner, venue = shared
    owner.api("POST", f"/api/venues/{venue}/invitations", {"phones": ANH, "role": "controller"})
    anh = site.visitor("49.156.52.30").login(ANH)
    invitation_id = anh.http.get("/api/invitations").json()["invitations"][0]["id"]
    code = share_code(site, ANH)
    assert anh.api("POST", f"/api/invitations/{invitation_id}/accept", {"code": code}).status_code == 200
    assert owner.http.get(f"/venues/{venue}/poster.pdf").status_code == 200
    assert owner.http.get(f"/venues/{venue}/checkins.csv").status_code == 200
    actions = [h["action"] for h in owner.http.get(f"/api/venues/{venue}/history").json()["history"]]
    assert actions == ["qrgate.venue.checkins.exported", "qrgate.venue.poster.downloaded",
                       "qrgate.venue.member.granted", "qrgate.venue.member.invited", "qrgate.venue.created"]
    granted = owner.http.get(f"/api/venues/{venue}/history").json()["history"][2]
    assert granted["account"] == ANH and granted["ip"] == "49.156.52.30"
    assert "đã được chia sẻ cho 0976929792 với vai trò Người kiểm soát vào ra" in granted["text"]


def test_logins_and_logouts_are_audited_with_the_address(shared):
    site, owner, _ = shared
    owner.api("POST", "/api/logout")
    account = site.services.accounts.account_for_phone(OWNER)
    entries = site.services.audit.for_account(account.id)
    assert [e.action for e in entries] == ["qrgate.account.logout", "qrgate.venue.created", "qrgate.account.login"]
    assert {e.ip for e in entries} == {"49.156.52.24"}


def test_the_audit_trail_cannot_be_changed_or_deleted(shared):
    site, _, venue = shared
    db = site.storage.sql
    with pytest.raises(db.IntegrityError, match="append-only"):
        db.execute("UPDATE audit_log SET ip = '0.0.0.0'")
    with pytest.raises(db.IntegrityError, match="append-only"):
        db.execute("DELETE FROM audit_log")
    if db.dialect == "postgresql":  # TRUNCATE skips row triggers there: it has its own
        with pytest.raises(db.IntegrityError, match="append-only"):
            db.execute("TRUNCATE audit_log")
    assert site.services.audit.for_venue(venue)[0].action == "qrgate.venue.created"


def test_a_manager_may_share_only_the_gate_controller_role(shared):
    site, owner, venue = shared
    site.services.venues.add_member(venue, site.services.accounts.account_for_phone(ANH), "manager")
    manager = site.visitor().login(ANH)
    assert manager.api("POST", f"/api/venues/{venue}/invitations",
                       {"phones": BINH, "role": "owner"}).status_code == 403
    assert manager.api("POST", f"/api/venues/{venue}/invitations",
                       {"phones": BINH, "role": "controller"}).status_code == 201


def test_accepting_a_lower_role_cannot_leave_a_venue_without_an_owner(shared):
    site, owner, venue = shared
    owner_account = site.services.accounts.account_for_phone(OWNER)
    site.services.venues.invite(venue, [OWNER], "controller", owner_account, "49.156.52.24")
    code = share_code(site, OWNER)
    invitation_id = site.services.venues.pending_for_phone(OWNER)[0].id
    response = owner.api("POST", f"/api/invitations/{invitation_id}/accept", {"code": code})
    assert response.status_code == 409
    assert site.services.venues.role_of(venue, owner_account.id) == "owner"
