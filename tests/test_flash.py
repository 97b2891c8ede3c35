"""What an action did is said once on the next page, in the visitor's language, and a
forged message cookie shows nothing of its own."""

from __future__ import annotations

import pytest

from test_web_support import PLACE, Site

pytestmark = pytest.mark.timeout(60)


def test_creating_a_venue_says_so_once_on_the_next_page(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login("0912486419")
    created = owner.form("/venues/new", {**PLACE, "parent_id": ""})
    assert created.status_code == 303
    page = owner.http.get(created.headers["location"])
    assert '<p class="flash" role="status" id="flash">Đã tạo địa điểm.</p>' in page.text
    again = owner.http.get(created.headers["location"])
    assert 'id="flash"' not in again.text  # once: a reload does not repeat it


def test_a_forged_message_cookie_shows_no_words_of_its_own(tmp_path):
    site = Site.create(tmp_path)
    owner = site.visitor().login("0912486419")
    for forged in ("<script>alert(1)</script>", "flash.not_registered", "nav.logout"):
        owner.http.cookies.set("qrgate_flash", forged)
        page = owner.http.get("/venues")
        assert page.status_code == 200
        assert 'id="flash"' not in page.text
