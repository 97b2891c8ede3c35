"""The phone page's payload rules agree with the station's, which are the rules of record.

Every payload of tests/test_payloads.py (its parametrised cases and builders), the demo's
samples, the photographed third-party QR texts beside the repository and a few thousand
mutations of valid payloads go through edge.payloads.parse_payload and, in a real
Chromium, through server/web/static/phone/payloads.js: each must give the same person
(kind, id, name, birth, sex) or the same refusal code. The masked name and the person
key, which the page computes for its screen and its repeat window, must agree too.
"""

from __future__ import annotations

import datetime as dt
import inspect
import random

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from playwright.sync_api import sync_playwright

import test_payloads
from conftest import QR_PHOTOS, new_storage, serve_app, unavailable
from edge.payloads import PayloadRefused, parse_payload
from qrgate import protocol
from qrgate.masking import mask_person_name
from qrgate.personal_pass import issue_pass, key_id
from qrgate.samples import demo_samples
from server.phone import assets
from server.web.app import create_app
from test_web_flows import ARGS, CHROMIUM

pytestmark = [pytest.mark.browser, pytest.mark.timeout(180)]
TODAY = dt.date(2025, 6, 1)
MUTATIONS = 3000


def parametrised_payloads() -> list[str]:
    """The text payloads of every parametrised case in tests/test_payloads.py."""
    found = []
    for _, function in inspect.getmembers(test_payloads, inspect.isfunction):
        for mark in getattr(function, "pytestmark", []):
            if mark.name != "parametrize" or "payload" not in str(mark.args[0]).split(","):
                continue
            for case in mark.args[1]:
                value = case.values[0] if hasattr(case, "values") else case
                value = value[0] if isinstance(value, tuple) else value
                if isinstance(value, str):
                    found.append(value)
    return found


def mutations(seeds: list[str], count: int) -> list[str]:
    """Valid payloads with a character removed, doubled, replaced or a field cut: the
    near misses where two parsers would most likely part ways."""
    rng = random.Random(23)
    alphabet = "0123456789|$*-/ ABCXYZabcdefạễưĐ\u00a0\u200b\t\n\x1c\ufeff\ufffd."
    out = []
    for _ in range(count):
        text = rng.choice(seeds)
        i = rng.randrange(len(text) + 1)
        roll = rng.random()
        if roll < 0.3:
            text = text[:i] + text[i + 1:]
        elif roll < 0.5:
            text = text[:i] + rng.choice(alphabet) + text[i:]
        elif roll < 0.75:
            text = text[:i] + rng.choice(alphabet) + text[i + 1:]
        elif roll < 0.9:
            text = "|".join(text.split("|")[:rng.randrange(1, 18)])
        else:
            text = text[:i] + text[i:].upper()
        out.append(text)
    return out


def corpus(pass_key: Ed25519PrivateKey) -> list[str]:
    other = Ed25519PrivateKey.generate()
    passes = [
        issue_pass(pass_key, pid="W-0042", name="Võ Thị Hoa", issued=TODAY, expires=TODAY + dt.timedelta(days=30),
                   birth="1979"),
        issue_pass(pass_key, pid="W-1", name="Lâm", issued=TODAY + dt.timedelta(days=3), expires=TODAY + dt.timedelta(days=9)),
        issue_pass(pass_key, pid="W-2", name="Lâm", issued=TODAY - dt.timedelta(days=9), expires=TODAY - dt.timedelta(days=3)),
        issue_pass(other, pid="W-3", name="Ai Đó", issued=TODAY, expires=TODAY),
    ]
    forged = passes[0][:-3] + ("AAA" if not passes[0].endswith("AAA") else "BBB")
    builders = [test_payloads.CCCD, test_payloads.NATIONAL_MASKED, test_payloads.cccd(), test_payloads.cccd(old_id=""),
                test_payloads.cccd(trailing=4), test_payloads.cccd(sex="NỮ"), test_payloads.cccd(sex="nu"),
                test_payloads.bhyt_old(), test_payloads.bhyt_new(), test_payloads.cccd(name="Trần\u200b Thị \u202eMai"),
                test_payloads.cccd(name="Nguye\u0302\u0303n  Gia\tMạnh"), test_payloads.bhyt_old(birth="1990"),
                test_payloads.cccd(birth="29022001"), test_payloads.cccd(birth="29022000")]
    samples = [s.text for s in demo_samples(pass_key, today=TODAY)]
    photos = [p.read_bytes().decode("utf-8", "replace") for p in sorted(QR_PHOTOS.glob("*/*.txt"))] if QR_PHOTOS.is_dir() else []
    seeds = builders + samples + passes
    return sorted(set(builders + samples + passes + [forged] + parametrised_payloads() + photos
                      + mutations(seeds, MUTATIONS)))


def python_answer(text: str, pass_key) -> dict:
    keys = {key_id(pass_key.public_key()): pass_key.public_key()}
    try:
        person = parse_payload(text, pass_keys=keys, today=TODAY)
    except PayloadRefused as exc:
        return {"refused": exc.reason}
    return {"kind": person.kind, "id": person.id_number, "name": person.name, "birth": person.birth, "sex": person.sex,
            "masked": mask_person_name(person.name), "key": person.person_key}


@pytest.fixture(scope="module")
def page_with_payloads(tmp_path_factory):
    if assets.missing():
        unavailable("the phone scanner's npm files are not set up (python -m server.phone.assets)")  # CI: a failure
    storage = new_storage(tmp_path_factory.mktemp("phone-payloads") / "server.sqlite3")
    app = create_app(storage)
    with serve_app(app) as base, sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        page = browser.new_page()
        page.goto(base + "/login")
        yield page
        browser.close()


JS_PARSE_ALL = """async ([texts, passKeys, today]) => {
    const m = await import('/static/phone/payloads.js');
    const keys = await m.importPassKeys(passKeys);
    const out = [];
    for (const text of texts) {
        try {
            const p = await m.parsePayload(text, { passKeys: keys, today });
            out.push({ kind: p.kind, id: p.id, name: p.name, birth: p.birth, sex: p.sex,
                       masked: m.maskPersonName(p.name), key: m.personKey(p) });
        } catch (error) {
            if (!(error instanceof m.PayloadRefused)) throw error;
            out.push({ refused: error.reason });
        }
    }
    return out;
}"""


def test_the_page_and_the_station_read_every_payload_alike(page_with_payloads):
    pass_key = Ed25519PrivateKey.generate()
    texts = corpus(pass_key)
    assert len(texts) > 2000
    got = page_with_payloads.evaluate(JS_PARSE_ALL, [texts, [protocol.public_key_to_text(pass_key.public_key())],
                                                     TODAY.isoformat()])
    differ = [(text, python_answer(text, pass_key), js) for text, js in zip(texts, got)
              if python_answer(text, pass_key) != js]
    assert differ == [], f"{len(differ)} of {len(texts)} differ, first: {differ[:3]}"
    kinds = {answer.get("kind") or answer["refused"] for answer in got}
    assert {"cccd", "bhyt", "national", "pass", "unknown_format", "bad_field", "bad_encoding", "too_long",
            "control_chars", "empty", "bad_signature", "expired", "not_yet_valid", "unknown_issuer"} <= kinds


def test_without_a_trusted_clock_the_page_checks_no_dates_as_the_station(page_with_payloads):
    pass_key = Ed25519PrivateKey.generate()
    late = issue_pass(pass_key, pid="W-2", name="Lâm", issued=dt.date(2020, 1, 1), expires=dt.date(2020, 2, 1))
    future_birth = test_payloads.cccd(birth="01012990")
    got = page_with_payloads.evaluate(JS_PARSE_ALL, [[late, future_birth],
                                                     [protocol.public_key_to_text(pass_key.public_key())], None])
    assert [g.get("kind") for g in got] == ["pass", "cccd"]
