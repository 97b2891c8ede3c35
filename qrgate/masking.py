"""Masking of personal fields for screens, venue roles and exports.

Masking hides what a bystander or a venue manager does not need while keeping enough
for the person at the gate to recognise their own record. It is not escaping: output
code (CSV/XLSX, HTML) still escapes whatever these functions return.
"""

from __future__ import annotations

import functools
import re
import unicodedata

_BIRTH_YEAR = re.compile(r"(\d{4})(?:-(?:\d{2}|\*\*)-(?:\d{2}|\*\*))?", re.ASCII)
_BIRTH_DMY = re.compile(r"(?:\d{2}|\*\*)[/.](?:\d{2}|\*\*)[/.](\d{4})", re.ASCII)


def _letters(word: str) -> list[str]:
    """Split a word into user-visible letters: a base character and its combining marks.

    After NFC almost every Vietnamese letter is one code point, but a mark with no
    precomposed form stays separate and must not count as a letter of its own.
    """
    letters: list[str] = []
    for char in word:
        if letters and unicodedata.combining(char):
            letters[-1] += char
        else:
            letters.append(char)
    return letters


@functools.lru_cache(maxsize=4096)
def _mask_word(word: str) -> str:
    # Cached: a page of names repeats the same few given and middle names (Văn, Thị...),
    # and splitting letters one code point at a time was most of masking a row.
    letters = _letters(word)
    return letters[0] + "*" * (len(letters) - 1)


def mask_person_name(name: str) -> str:
    """Keep the family name whole and the first letter of every other word.

    ``"Nguyễn Văn Lâm"`` becomes ``"Nguyễn V** L**"``. Whitespace is collapsed. A
    one-word name is masked like a given name (``"Lâm"`` -> ``"L**"``): showing it
    whole would show the full name.
    """
    words = unicodedata.normalize("NFC", name).split()
    if not words:
        return ""
    if len(words) == 1:
        return _mask_word(words[0])
    return " ".join([words[0], *(_mask_word(word) for word in words[1:])])


def mask_id_number(id_number: str, visible: int = 3) -> str:
    """Replace all but the last ``visible`` characters with ``*``.

    ``"024083123451"`` -> ``"*********451"``. An id no longer than ``visible`` is
    masked completely, since showing it whole would not mask anything.
    """
    if visible < 0:
        raise ValueError(f"visible must be 0 or more, got {visible}")
    id_number = id_number.strip()
    if len(id_number) <= visible:
        return "*" * len(id_number)
    hidden = len(id_number) - visible
    return "*" * hidden + id_number[hidden:]


def mask_birth(birth: str) -> str:
    """Keep only the year: ``"1983-03-21"``, ``"1985-**-**"``, ``"21/03/1983"`` -> ``"1983"``.

    Anything that is not a recognised birth form gives ``""``: better to show nothing
    than to show a full date by accident.
    """
    birth = birth.strip()
    match = _BIRTH_YEAR.fullmatch(birth) or _BIRTH_DMY.fullmatch(birth)
    return match.group(1) if match else ""
