"""The person key: stable text naming one person, whatever card they showed.

One rule across card types, shared by the station and the server. The station uses it
for repeat-scan suppression and the blocklist; the server stores it with every check-in
so that history search and contact tracing find the same person at other venues and on
other cards. Both sides must compute it the same way, so both call :func:`person_key`
here.

What matches (see docs/history.md for the full table):

* CCCD (chip ID card) ``cccd:<12 digits>``.
* National personal QR whose id is the unmasked 12-digit citizen number: the same key as
  that person's CCCD, ``cccd:<12 digits>``.
* BHYT (health insurance) ``bhxh:<last 10 digits>``: the lifelong social-insurance
  number, so a reissued card with a new prefix keeps the key. It cannot be linked to the
  CCCD: the card carries no citizen number.
* National QR with a masked or non-citizen id: ``national:<id>|<NAME>|<birth>``, so two
  people sharing a masked id are kept apart by name and birth.
* Anything else (the project's pass, unknown kinds): ``<kind>:<id>``.
"""

from __future__ import annotations

import re
import unicodedata

_CITIZEN_ID = re.compile(r"\d{12}", re.ASCII)
_BHYT_TAIL = re.compile(r"\d{10}", re.ASCII)


def person_key(kind: str, id_number: str, name: str, birth: str) -> str:
    """The key for a person read from a card of ``kind`` ("cccd", "bhyt", "national", "pass").

    ``name`` and ``birth`` matter only for a national QR whose id is not a full citizen
    number; the name is compared in upper case after NFC and whitespace collapsing.

    >>> person_key("national", "024083123451", "Nguyễn Văn Lâm", "1983-03-21")
    'cccd:024083123451'
    >>> person_key("bhyt", "DN4797915123456", "", "")
    'bhxh:7915123456'
    """
    if kind == "bhyt" and _BHYT_TAIL.fullmatch(id_number[-10:]):
        # The prefix (group, benefit level, province) changes when a card is reissued.
        return "bhxh:" + id_number[-10:]
    if kind == "national":
        if _CITIZEN_ID.fullmatch(id_number):
            return "cccd:" + id_number
        folded = unicodedata.normalize("NFC", " ".join(name.split())).upper()
        return f"national:{id_number}|{folded}|{birth}"
    return f"{kind}:{id_number}"
