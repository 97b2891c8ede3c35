"""Accounts by phone: normalisation, one-time codes (expiry, reuse, lock-out, rate
limits), sessions (rotation, logout, cookie flags) and CSRF on every state change."""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import pytest

from server.accounts.accounts import AuthRefused, PhoneError, normalise_phone, parse_phone_list
from test_web_support import Site, every_route, stored_text

pytestmark = pytest.mark.timeout(30)
PHONE = "0912486419"


@pytest.fixture
def site(tmp_path):
    return Site.create(tmp_path)


@pytest.mark.parametrize("text", ["0912 486 419", "+84912486419", "84912486419", "0912.486.419", "(+84) 912-486-419"])
def test_every_spelling_of_a_number_is_one_account(text):
    assert normalise_phone(text) == PHONE


@pytest.mark.parametrize("text", ["", "12345", "091248641", "abc0912486419", "+1 202 555 0101", "0012486419",
                                  "=cmd|' /C calc'!A0", "<script>"])
def test_what_is_not_a_vietnamese_number_is_refused_in_vietnamese(text):
    with pytest.raises(PhoneError, match="Số điện thoại không hợp lệ"):
        normalise_phone(text)


def test_a_comma_separated_list_is_normalised_and_deduplicated():
    assert parse_phone_list("0912 486 419, +84976929792,84912486419") == [PHONE, "0976929792"]
    with pytest.raises(PhoneError, match="12345"):
        parse_phone_list("0912486419, 12345")


def test_three_spellings_log_into_the_same_account(site):
    ids = {site.visitor().login(p).http.get("/api/session").json()["account"]["id"]
           for p in ("0912 486 419", "+84912486419", "84912486419")}
    assert len(ids) == 1


def test_a_code_works_once(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "login", "198.51.100.1")
    code = site.last_code(PHONE)
    assert accounts.check_code(PHONE, "login", code, "198.51.100.1") == PHONE
    with pytest.raises(AuthRefused) as refused:
        accounts.check_code(PHONE, "login", code, "198.51.100.1")
    assert refused.value.reason == "bad_code"


def test_a_code_expires_after_five_minutes(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "login", "198.51.100.1")
    code = site.last_code(PHONE)
    site.clock.advance(301)
    with pytest.raises(AuthRefused) as refused:
        accounts.check_code(PHONE, "login", code, "198.51.100.1")
    assert refused.value.reason == "expired"


def test_a_new_code_replaces_the_previous_one(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "login", "198.51.100.1")
    first = site.last_code(PHONE)
    accounts.send_code(PHONE, "login", "198.51.100.1")
    second = site.last_code(PHONE)
    if first != second:
        with pytest.raises(AuthRefused):
            accounts.check_code(PHONE, "login", first, "198.51.100.1")
    assert accounts.check_code(PHONE, "login", second, "198.51.100.1") == PHONE


def test_a_code_for_one_purpose_does_not_open_another(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "share:1", "198.51.100.1")
    with pytest.raises(AuthRefused):
        accounts.check_code(PHONE, "login", site.last_code(PHONE), "198.51.100.1")


def test_ten_wrong_codes_lock_the_number_even_against_the_right_code(site):
    accounts = site.services.accounts
    wrong = 0
    for _ in range(3):  # a code is burned after five wrong tries: ask for new ones as a person would
        accounts.send_code(PHONE, "login", "198.51.100.1")
        right = site.last_code(PHONE)
        bad = "000000" if right != "000000" else "111111"
        for _ in range(min(4, 10 - wrong)):
            with pytest.raises(AuthRefused):
                accounts.check_code(PHONE, "login", bad, "198.51.100.1")
            wrong += 1
    assert wrong == 10
    with pytest.raises(AuthRefused) as refused:
        accounts.check_code(PHONE, "login", right, "198.51.100.1")
    assert refused.value.reason == "locked"
    assert "khóa" in str(refused.value)
    site.clock.advance(901)
    accounts.send_code(PHONE, "login", "198.51.100.1")
    assert accounts.check_code(PHONE, "login", site.last_code(PHONE), "198.51.100.1") == PHONE


def test_a_code_is_burned_after_five_wrong_tries(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "login", "198.51.100.1")
    right = site.last_code(PHONE)
    bad = "000000" if right != "000000" else "111111"
    for _ in range(5):
        with pytest.raises(AuthRefused):
            accounts.check_code(PHONE, "login", bad, "198.51.100.1")
    with pytest.raises(AuthRefused) as refused:
        accounts.check_code(PHONE, "login", right, "198.51.100.1")
    assert refused.value.reason == "bad_code"


def test_codes_to_one_number_are_rate_limited(site):
    visitor = site.visitor()
    statuses = [visitor.api("POST", "/api/login/code", {"phone": PHONE}).status_code for _ in range(4)]
    assert statuses == [200, 200, 200, 429]
    assert len([m for m in site.sender.outbox if m.phone == PHONE]) == 3


def test_codes_from_one_address_are_rate_limited(site):
    visitor = site.visitor("198.51.100.9")
    statuses = [visitor.api("POST", "/api/login/code", {"phone": f"09124864{i:02d}"}).status_code for i in range(21)]
    assert statuses[:20] == [200] * 20 and statuses[20] == 429
    assert site.visitor("198.51.100.10").api("POST", "/api/login/code", {"phone": "0987654321"}).status_code == 200


def test_wrong_codes_from_one_address_across_many_numbers_are_stopped(site):
    accounts = site.services.accounts
    for i in range(50):
        with pytest.raises(AuthRefused):
            accounts.check_code(f"0912{i:06d}", "login", "123456", "198.51.100.66")
    with pytest.raises(AuthRefused) as refused:
        accounts.check_code("0987654321", "login", "123456", "198.51.100.66")
    assert refused.value.reason == "rate_limited"


def at_once(n: int, action) -> list:
    """``action()`` from ``n`` threads released together; what each returned (or raised)."""
    start = threading.Barrier(n)

    def run(_):
        start.wait(10)
        try:
            return action()
        except AuthRefused as refused:
            return refused.reason

    with ThreadPoolExecutor(n) as pool:
        return list(pool.map(run, range(n)))


def test_codes_asked_for_at_the_same_moment_still_stop_at_the_limit(site):
    accounts = site.services.accounts
    results = at_once(8, lambda: accounts.send_code(PHONE, "login", "198.51.100.1"))
    assert sorted(results, key=str) == [None] * 3 + ["rate_limited"] * 5
    assert len([m for m in site.sender.outbox if m.phone == PHONE]) == 3


def test_a_code_sent_twice_at_the_same_moment_opens_one_session(site):
    accounts = site.services.accounts
    accounts.send_code(PHONE, "login", "198.51.100.1")
    code = site.last_code(PHONE)
    results = at_once(4, lambda: accounts.check_code(PHONE, "login", code, "198.51.100.1"))
    assert sorted(results) == [PHONE] + ["bad_code"] * 3


def test_only_hashes_of_codes_and_session_tokens_are_stored(site):
    visitor = site.visitor().login(PHONE)
    token = visitor.http.cookies.get("qrgate_session")
    code = site.last_code(PHONE)
    dump = stored_text(site.storage)
    assert token and token not in dump
    assert f"'{code}'" not in dump


def test_session_cookie_is_httponly_and_samesite_lax(site):
    visitor = site.visitor()
    visitor.api("POST", "/api/login/code", {"phone": PHONE})
    response = visitor.api("POST", "/api/login", {"phone": PHONE, "code": site.last_code(PHONE)})
    cookie = response.headers["set-cookie"]
    assert "qrgate_session=" in cookie and "HttpOnly" in cookie and "SameSite=lax" in cookie
    assert "Secure" not in cookie


def test_secure_cookies_when_configured(tmp_path):
    from server.config import AuthSection

    site = Site.create(tmp_path, auth=AuthSection(cookie_secure=True))
    visitor = site.visitor(https=True)
    visitor.api("POST", "/api/login/code", {"phone": PHONE})
    response = visitor.api("POST", "/api/login", {"phone": PHONE, "code": site.last_code(PHONE)})
    assert "Secure" in response.headers["set-cookie"]


def test_login_gives_a_new_session_id_and_a_planted_one_is_useless(site):
    attacker = site.visitor().login("0976929792")
    planted = attacker.http.cookies.get("qrgate_session")
    victim = site.visitor()
    victim.http.cookies.set("qrgate_session", planted, domain="testserver.local", path="/")
    victim.login(PHONE)
    assert victim.http.cookies.get("qrgate_session") != planted
    assert victim.http.get("/api/session").json()["account"]["phone"] == PHONE
    # The victim's login ended the planted session: the attacker is logged out.
    assert attacker.http.get("/api/session").json()["account"] is None


def test_logout_ends_the_session_on_the_server(site):
    visitor = site.visitor().login(PHONE)
    token = visitor.http.cookies.get("qrgate_session")
    assert visitor.api("POST", "/api/logout").status_code == 200
    replay = site.visitor()
    replay.http.cookies.set("qrgate_session", token, domain="testserver.local", path="/")
    assert replay.http.get("/api/venues").status_code == 401


def test_sessions_expire(site):
    visitor = site.visitor().login(PHONE)
    site.clock.advance(12 * 3600 + 1)
    assert visitor.http.get("/api/venues").status_code == 401


def test_every_state_changing_route_refuses_a_request_without_the_csrf_token(site):
    visitor = site.visitor().login(PHONE)
    venue = visitor.create_venue()
    token = site.services.venues.ensure_public_token(venue)
    checked = 0
    # Stations call these without a browser or a cookie: a single-use enrolment code or
    # the station's own signature authenticates them, so there is nothing to forge.
    machine_routes = {"/api/enrol", "/api/rotate-key", "/api/phone/devices/{station_id}/records",
                      "/api/releases/report"}
    for route in every_route(site.app):
        if getattr(route, "path", "") in machine_routes:
            continue
        for method in set(getattr(route, "methods", ()) or ()) - {"GET", "HEAD"}:
            path = (route.path.replace("{venue_id}", str(venue)).replace("{token}", token)
                    .replace("{account_id}", "1").replace("{invitation_id}", "1").replace("{station_id}", "gate-1")
                    .replace("{pid}", "23456789"))
            form = visitor.http.request(method, path, data={"phone": PHONE, "name": "x"})
            forged = visitor.http.request(method, path, data={"csrf": "0" * 64, "phone": PHONE},
                                          headers={"X-CSRF-Token": "0" * 64})
            assert form.status_code == 403, (method, path, form.status_code)
            assert forged.status_code == 403, (method, path, forged.status_code)
            checked += 1
    assert checked >= 30  # the routes of the included routers too
    assert len(site.services.venues.for_account(1)) == 1  # nothing was changed


def test_a_csrf_token_from_another_browser_is_refused(site):
    alice = site.visitor().login(PHONE)
    mallory = site.visitor().login("0976929792")
    response = alice.http.post("/api/venues", json={"kind": "market", "name": "x", "address": "y", "province": "79",
                                                   "district": "760", "ward": "26743"},
                               headers={"X-CSRF-Token": mallory.csrf()})
    assert response.status_code == 403


def test_login_link_works_once(site):
    token = site.services.accounts.issue_login_link(PHONE)
    visitor = site.visitor()
    response = visitor.http.get(f"/login/link?token={token}")
    assert response.status_code == 303 and response.headers["location"] == "/"  # where their work is
    again = site.visitor().http.get(f"/login/link?token={token}")
    assert again.status_code == 404


def test_login_by_form_shows_vietnamese_errors_and_escapes_the_number(site):
    visitor = site.visitor()
    response = visitor.form("/login", {"phone": "<script>alert(1)</script>", "next": "/venues"})
    assert response.status_code == 400
    assert "Số điện thoại không hợp lệ" in response.text
    assert "<script>alert(1)" not in response.text


def test_next_parameter_cannot_send_people_to_another_site(site):
    visitor = site.visitor()
    visitor.form("/login", {"phone": PHONE, "next": "https://evil.example/"})
    response = visitor.form("/login/code", {"phone": PHONE, "code": site.last_code(PHONE),
                                            "next": "//evil.example/x"})
    assert response.status_code == 303 and response.headers["location"] == "/"


def test_operator_page_lists_sent_codes_only_for_operators(site):
    visitor = site.visitor().login(PHONE)
    assert visitor.http.get("/operator/sms").status_code == 404
    site.services.accounts.set_operator(PHONE)
    page = visitor.http.get("/operator/sms")
    assert page.status_code == 200 and site.last_code(PHONE) in page.text


def test_login_link_may_open_a_page_of_this_site_but_not_another_site(site):
    first = site.services.accounts.issue_login_link(PHONE)
    response = site.visitor().http.get(f"/login/link?token={first}&next=/venues/7")
    assert response.headers["location"] == "/venues/7"
    second = site.services.accounts.issue_login_link(PHONE)
    response = site.visitor().http.get(f"/login/link?token={second}&next=https://evil.example/")
    assert response.headers["location"] == "/"


def test_every_answer_carries_the_security_headers_and_a_first_visit_gets_its_csrf_cookie(tmp_path):
    site = Site.create(tmp_path)
    visitor = site.visitor()
    first = visitor.http.get("/login")
    assert first.status_code == 200
    cookie = first.headers["set-cookie"]
    assert cookie.startswith("qrgate_pre=") and "HttpOnly" in cookie and "SameSite=lax" in cookie
    again = visitor.http.get("/login")
    assert "set-cookie" not in again.headers  # the same browser keeps its cookie
    for path in ("/login", "/api/session", "/venues/999", "/api/nothing-here", "/static/style.css"):
        answer = visitor.http.get(path, follow_redirects=False)
        assert "script-src 'self'" in answer.headers["content-security-policy"], path
        assert answer.headers["x-frame-options"] == "DENY" and answer.headers["referrer-policy"] == "no-referrer"
        assert answer.headers["x-content-type-options"] == "nosniff"
        assert (answer.headers.get("cache-control") == "no-store") == (not path.startswith("/static/")), path
    # A cookie too long to be ours is replaced, not trusted.
    visitor.http.cookies.set("qrgate_pre", "x" * 101)
    assert visitor.http.get("/login").headers["set-cookie"].startswith("qrgate_pre=")
    # A logged-in script that keeps only its session cookie is not handed a new one on
    # every call (its CSRF token is bound to the session); logged out, it is again.
    session = site.visitor().login(PHONE).http.cookies["qrgate_session"]
    script = site.visitor()
    script.http.cookies.set("qrgate_session", session)
    for path in ("/api/session", "/venues", "/api/history"):
        answer = script.http.get(path)
        assert answer.status_code == 200 and "set-cookie" not in answer.headers, path
    script.http.cookies.set("qrgate_session", "expired-or-forged")
    assert script.http.get("/login").headers["set-cookie"].startswith("qrgate_pre=")
