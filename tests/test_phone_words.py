"""The phone scanner says what a station's screen says, in the same words for each result,
refusal code and mode (edge/display/screens.py), and has every word in both languages."""

from __future__ import annotations

import pytest

from edge.display import screens
from edge.outcome import Result
from edge.payloads import REFUSAL_CODES
from server.phone import words
from server.web import i18n

pytestmark = pytest.mark.timeout(30)


def test_result_words_are_the_stations():
    assert words.HEADLINES["in"][0] == screens.HEADLINE_IN
    assert words.HEADLINES["out"][0] == screens.HEADLINE_OUT
    assert words.HEADLINES["counted"][0] == screens.HEADLINE_COUNTED
    for result, text in screens.HEADLINE.items():
        assert words.HEADLINES[Result(result).value][0] == text
    assert {code: pair[0] for code, pair in words.REFUSALS.items()} == screens.REFUSAL_TEXT
    assert words.REFUSAL_GENERIC[0] == screens.REFUSAL_GENERIC
    assert words.FAULT_GENERIC[0] == screens.FAULT_GENERIC
    assert {mode: pair[0] for mode, pair in words.MODES.items()} == screens.MODE_TEXT


def test_every_refusal_code_has_words_on_the_page():
    assert set(REFUSAL_CODES) | {"blocked", "passback"} == set(words.REFUSALS)


@pytest.mark.parametrize("lang", i18n.LANGUAGES)
def test_the_page_gets_every_word_in_its_language(lang):
    page = words.page_words(lang)
    assert all(text and not text.startswith("phone.") for text in page.values())
    assert page["dir.in"] == i18n.direction_name(lang, "in") and page["card.bhyt"] == i18n.card_name(lang, "bhyt")
    if lang == "vi":
        assert page["state.offline"] == "đã ghi khi mất mạng"
