"""Venues: validation with Vietnamese messages, licence plates, areas as data, hostile
input in every form field, the poster (PNG/PDF with a readable QR) and self check-in."""

from __future__ import annotations

import csv
import io
import json
import re

import pytest
import zxingcpp
from PIL import Image

from qrgate import protocol
from server.areas.areas import AreaDirectory, sort_key
from server.selfcheckin.selfcheckin import SelfCheckinError, parse_declaration
from server.venues.venues import VenueError, VenueInput, normalise_plate
from test_web_support import CSRF_IN_PAGE, PLACE, Site

pytestmark = pytest.mark.timeout(30)
HOSTILE = ["=cmd|' /C calc'!A0", "<script>alert('x')</script>", "<img src=x onerror=alert(1)>", "Lê" * 300]


@pytest.fixture
def site(tmp_path):
    return Site.create(tmp_path)


@pytest.fixture
def owner(site):
    return site.visitor().login("0912486419")


@pytest.mark.parametrize("text, plate", [("51B-123.45", "51B-123.45"), ("51b 12345", "51B-123.45"),
                                         ("30A-1234", "30A-1234"), ("29LD-012.34", "29LD-012.34"),
                                         ("98C1-23456", "98C1-234.56")])
def test_licence_plates_are_normalised(text, plate):
    assert normalise_plate(text) == plate


@pytest.mark.parametrize("text", ["", "51B", "ABC-12345", "51B-123", "51B-1234567", "<script>", "5B-12345"])
def test_what_is_not_a_licence_plate_is_refused_with_an_example(text):
    with pytest.raises(VenueError) as refused:
        normalise_plate(text)
    assert "51B-123.45" in refused.value.problems["plate"]


def test_a_vehicle_is_named_by_its_plate_and_needs_no_address():
    clean = VenueInput(kind="vehicle", plate="51b 12345", province="79", district="760", ward="26743").validate(
        AreaDirectory.load())
    assert clean.name == "Xe BKS 51B-123.45" and clean.plate == "51B-123.45"


def test_missing_fields_are_named_in_vietnamese():
    with pytest.raises(VenueError) as refused:
        VenueInput().validate(AreaDirectory.load())
    problems = refused.value.problems
    assert problems["kind"] == "Hãy chọn loại địa điểm."
    assert problems["name"] == "Hãy nhập tên địa điểm."
    assert problems["province"] == "Hãy chọn tỉnh/thành phố trong danh sách."


def test_a_commune_of_another_province_is_refused():
    with pytest.raises(VenueError) as refused:
        VenueInput(**{**PLACE, "ward": "00004"}).validate(AreaDirectory.load())  # Phường Ba Đình, Hà Nội
    assert refused.value.problems == {"ward": "Hãy chọn xã/phường thuộc tỉnh/thành phố đã chọn."}


def test_the_map_is_the_2025_one_with_no_district_level():
    areas = AreaDirectory.load()
    assert len(areas.provinces) == 34 and len(areas.wards) == 3321
    assert areas.provinces["24"].name == "Tỉnh Bắc Ninh" and areas.provinces["04"].name == "Tỉnh Cao Bằng"
    clean = VenueInput(**PLACE).validate(areas)  # "district", as older callers send it, is not read
    assert (clean.province, clean.district, clean.ward) == ("79", "", "26743")
    assert areas.describe(clean.province, clean.ward) == "Phường Bến Thành, Thành phố Hồ Chí Minh"
    names = [w.name for w in areas.wards_of("01")]
    assert "Phường Ba Đình" in names and names == sorted(names, key=sort_key)


def test_the_naming_hint_is_in_the_form_not_a_rule(site, owner):
    page = owner.http.get("/venues/new").text
    assert "TP-Vincom" in page
    assert owner.create_venue(name="Chợ đêm") > 0


@pytest.mark.parametrize("field", ["name", "label", "address", "plate"])
@pytest.mark.parametrize("value", HOSTILE)
def test_hostile_text_in_any_field_is_shown_escaped_and_never_as_markup(site, owner, field, value):
    page = owner.http.get("/venues/new").text
    form = {**PLACE, "csrf": CSRF_IN_PAGE.search(page).group(1), field: value}
    if field == "plate":
        form["kind"] = "vehicle"
    response = owner.http.post("/venues/new", data=form)
    if response.status_code == 303:  # stored: the venue page shows it as text
        venue_id = int(response.headers["location"].rsplit("/", 1)[1])
        stored = site.services.venues.get(venue_id)
        assert getattr(stored, field) == value
        response = owner.http.get(f"/venues/{venue_id}")
        for page in (response.text, owner.http.get("/venues").text, owner.http.get(f"/venues/{venue_id}/edit").text):
            assert "<script>alert" not in page and "<img src=x" not in page
        if "<" in value:
            assert "&lt;" in response.text
    else:  # refused: the form comes back with a message in Vietnamese and the value escaped
        assert response.status_code == 400
        assert "<script>alert" not in response.text and "<img src=x" not in response.text
        assert any(word in response.text for word in ("Quá dài", "Biển số", "Chỉ phương tiện"))


def test_pages_forbid_inline_scripts_and_framing(site, owner):
    headers = owner.http.get("/venues").headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "frame-ancestors 'none'" in headers["content-security-policy"]
    assert headers["x-content-type-options"] == "nosniff"


def test_csv_export_cannot_run_formulas_in_a_spreadsheet(site, owner):
    venue = owner.create_venue()
    site.services.self_checkin.check_in(site.services.venues.get(venue), {
        "kind": "cccd", "dir": "in", "person": {"id": "001090000001", "name": "=cmd|' /C calc'!A0", "birth": "",
                                                "sex": ""}})
    response = owner.http.get(f"/venues/{venue}/checkins.csv")
    rows = list(csv.reader(io.StringIO(response.text.lstrip("\ufeff"))))
    name = rows[0].index("Họ tên")  # the headers are in the visitor's language, Vietnamese by default
    assert rows[1][name].startswith("'=")  # masked for the owner, and never a formula


def test_the_poster_is_a4_landscape_and_its_qr_opens_the_self_checkin_page(site, owner):
    venue = owner.create_venue()
    png = owner.http.get(f"/venues/{venue}/poster.png")
    assert png.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(png.content))
    assert image.size == (1754, 1240)
    url = zxingcpp.read_barcodes(image)[0].text
    token = site.services.venues.get(venue).public_token
    assert url == f"http://testserver/c/{token}"
    pdf = owner.http.get(f"/venues/{venue}/poster.pdf")
    assert pdf.content.startswith(b"%PDF")
    width, height = map(float, re.search(rb"/MediaBox \[ 0 0 ([\d.]+) ([\d.]+) \]", pdf.content).groups())
    assert abs(width - 841.89) < 1 and abs(height - 595.28) < 1  # A4 landscape in points


def test_the_poster_uses_the_configured_public_address(tmp_path):
    site = Site.create(tmp_path, public_url="https://qr.example.vn/")
    owner = site.visitor().login("0912486419")
    venue = owner.create_venue()
    image = Image.open(io.BytesIO(owner.http.get(f"/venues/{venue}/poster.png").content))
    assert zxingcpp.read_barcodes(image)[0].text.startswith("https://qr.example.vn/c/")


@pytest.mark.parametrize("id_number, kind", [("001090000123", "cccd"), ("012345678", "cccd"),
                                             ("DN4797915247366", "bhyt"), ("0010 9000 0123", "cccd")])
def test_self_declared_ids_are_recognised(id_number, kind):
    assert parse_declaration(id_number, "Lê Văn An", "", "in", 2026)["kind"] == kind


@pytest.mark.parametrize("fields, problem", [
    (("12345", "Lê Văn An", "", "in"), "id_number"),
    (("001090000123", "", "", "in"), "name"),
    (("001090000123", "<script>alert(1)</script>", "", "in"), "name"),
    (("001090000123", "=cmd|' /C calc'!A0", "", "in"), "name"),
    (("001090000123", "A" * 600, "", "in"), "name"),
    (("001090000123", "Lê Văn An", "1850", "in"), "birth_year"),
    (("001090000123", "Lê Văn An", "", "sideways"), "direction"),
])
def test_self_declarations_are_checked(fields, problem):
    with pytest.raises(SelfCheckinError) as refused:
        parse_declaration(*fields, this_year=2026)
    assert set(refused.value.problems) == {problem}


def test_a_self_checkin_is_a_signed_check_in_marked_self_declared(site, owner):
    venue = owner.create_venue()
    token = site.services.venues.ensure_public_token(venue)
    phone = site.visitor("198.51.100.77")
    page = phone.http.get(f"/c/{token}")
    assert page.status_code == 200 and "TP-Chợ Bến Thành" in page.text
    response = phone.http.post(f"/c/{token}", data={"csrf": CSRF_IN_PAGE.search(page.text).group(1),
                                                    "id_number": "001090000123", "name": "Lê Văn An",
                                                    "birth_year": "1990", "direction": "in"})
    assert response.status_code == 200 and "Đã ghi nhận: VÀO" in response.text and "Lê V** A*" in response.text
    rows = owner.http.get(f"/api/venues/{venue}/checkins").json()["checkins"]
    assert len(rows) == 1 and rows[0]["self_declared"] and rows[0]["name"] == "Lê V** A*"
    assert rows[0]["birth"] == "1990" and rows[0]["station_id"] == f"self-{venue}"
    stored = json.loads(site.storage.sql.value("SELECT record FROM checkins"))
    station = site.storage.station(f"self-{venue}")
    protocol.verify_record(stored, protocol.public_key_from_text(station.public_key))
    assert "tự khai báo" in owner.http.get(f"/venues/{venue}").text


def test_self_checkins_from_one_address_are_rate_limited(site, owner):
    venue = owner.create_venue()
    token = site.services.venues.ensure_public_token(venue)
    phone = site.visitor("198.51.100.78")
    body = {"id_number": "001090000123", "name": "Lê Văn An", "direction": "in"}
    statuses = [phone.api("POST", f"/api/self-checkin/{token}", body).status_code for _ in range(31)]
    assert statuses[:30] == [201] * 30 and statuses[30] == 429
    assert site.storage.count_checkins(f"self-{venue}") == 30


def test_the_api_is_in_the_openapi_document(site):
    paths = site.visitor().http.get("/openapi.json").json()["paths"]
    for path in ("/api/login/code", "/api/login", "/api/logout", "/api/session", "/api/venues",
                 "/api/venues/{venue_id}", "/api/venues/{venue_id}/invitations", "/api/venues/{venue_id}/history",
                 "/api/invitations/{invitation_id}/accept", "/api/self-checkin/{token}", "/api/areas",
                 "/venues/{venue_id}/poster.{fmt}", "/venues/{venue_id}/checkins.csv"):
        assert path in paths, path


def test_english_is_one_click_away(site, owner):
    owner.http.get("/lang/en?next=/venues")
    assert "My venues" in owner.http.get("/venues").text
    owner.http.get("/lang/vi")
    assert "Địa điểm của tôi" in owner.http.get("/venues").text


def test_every_formula_trigger_is_neutralised_in_csv_cells():
    from server.checkins.views import csv_cell

    for trigger in ("=", "+", "-", "@", "\t", "\r", "\x00"):
        assert csv_cell(trigger + "cmd|' /C calc'!A0").startswith("'")
    assert csv_cell("Nguyễn Văn A") == "Nguyễn Văn A"
