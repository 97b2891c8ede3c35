"""Tests for masking names, id numbers and birth dates before they are shown."""

from __future__ import annotations

import unicodedata

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qrgate.masking import mask_birth, mask_id_number, mask_person_name


@pytest.mark.parametrize(
    ("name", "masked"),
    [
        ("Nguyễn Văn Lâm", "Nguyễn V** L**"),
        ("Nguyễn Gia Mạnh", "Nguyễn G** M***"),
        ("Đỗ Thị Hồng Nhung", "Đỗ T** H*** N****"),
        ("Lê A", "Lê A"),
        ("  Trần   Thị  Mai  ", "Trần T** M**"),
        ("NGUYEN GIA MANH", "NGUYEN G** M***"),
    ],
)
def test_family_name_is_kept_and_other_words_show_only_their_first_letter(name, masked):
    assert mask_person_name(name) == masked


def test_one_word_name_is_masked_rather_than_shown_whole():
    assert mask_person_name("Lâm") == "L**"


def test_empty_or_blank_name_masks_to_empty():
    assert mask_person_name("") == ""
    assert mask_person_name(" \t ") == ""


def test_decomposed_letters_count_once():
    decomposed = unicodedata.normalize("NFD", "Phạm Thị Ngọc")
    assert mask_person_name(decomposed) == "Phạm T** N***"


def test_combining_mark_without_precomposed_form_stays_with_its_letter():
    # "a" + combining ring below has no single code point: it is still one letter.
    assert mask_person_name("Lý Ha\u0325n") == "Lý H**"


def test_600_character_name_is_masked_whole():
    name = "Nguyễn " + "A" * 593
    masked = mask_person_name(name)
    assert masked == "Nguyễn A" + "*" * 592
    assert "AA" not in masked


def test_formula_looking_name_is_masked_like_any_other_text():
    # Masking is not escaping; output code escapes. Only the first word stays whole.
    assert mask_person_name("=cmd' /C calc'!A0") == "=cmd' /* c*******"


@settings(max_examples=200, deadline=None)
@given(words=st.lists(st.text(alphabet=st.characters(categories=["L"]), min_size=1,
                              max_size=12), min_size=2, max_size=6))
def test_no_letter_after_the_first_of_a_given_name_is_ever_shown(words):
    words = [unicodedata.normalize("NFC", word) for word in words]
    masked = mask_person_name(" ".join(words)).split(" ")
    assert masked[0] == words[0]
    for shown, word in zip(masked[1:], words[1:], strict=True):
        head = shown.rstrip("*")
        assert word.startswith(head)
        # The head is one letter: a base character plus any combining marks on it.
        assert sum(not unicodedata.combining(char) for char in head) == 1


@pytest.mark.parametrize(
    ("id_number", "visible", "masked"),
    [
        ("024083123451", 3, "*********451"),
        ("024083123451", 4, "********3451"),
        ("7915123456", 3, "*******456"),
        ("******123451", 3, "*********451"),
        ("024083123451", 0, "************"),
        ("12", 3, "**"),
        ("123", 3, "***"),
        ("", 3, ""),
    ],
)
def test_id_number_shows_only_its_last_digits(id_number, visible, masked):
    assert mask_id_number(id_number, visible) == masked


def test_negative_visible_count_is_refused():
    with pytest.raises(ValueError):
        mask_id_number("024083123451", -1)


@pytest.mark.parametrize(
    ("birth", "year"),
    [
        ("1983-03-21", "1983"),
        ("1985-**-**", "1985"),
        ("1990-**-15", "1990"),
        ("1992", "1992"),
        ("21/03/1983", "1983"),
        ("", ""),
        ("not a date", ""),
        ("21031983", ""),
    ],
)
def test_birth_is_reduced_to_the_year(birth, year):
    assert mask_birth(birth) == year
