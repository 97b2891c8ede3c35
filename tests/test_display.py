"""Every screen the station can show, compared pixel for pixel with reference PNGs.

Set QRGATE_UPDATE_REFERENCE=1 to rewrite the references after a deliberate change, then
look at them (docs/screens.md shows them enlarged) before committing.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from PIL import Image, ImageChops

from edge.display.panel import Screen, open_panel
from edge.display.screens import clean_text, render_idle, render_result
from edge.feedback import FeedbackLoop
from edge.outcome import Outcome, Result, StationState
from qrgate.errors import DriverError, UserError

REFERENCE = Path(__file__).parent / "reference" / "screens"
UPDATE = os.environ.get("QRGATE_UPDATE_REFERENCE") == "1"

VENUE = "Nhà máy Dệt Phú Thọ - Cổng 2"
ONLINE = StationState(venue=VENUE, mode="toggle", online=True, backlog=0)
OFFLINE = StationState(venue=VENUE, mode="entry", online=False, backlog=128)

SCREENS = {
    "idle-online": lambda: render_idle(ONLINE),
    "idle-offline-backlog": lambda: render_idle(OFFLINE),
    "idle-fault": lambda: render_idle(StationState(venue=VENUE, mode="exit", fault="storage")),
    "idle-shifted": lambda: render_idle(ONLINE, (1, -1)),
    "accepted-in": lambda: render_result(Outcome(Result.ACCEPTED, direction="in", masked_name="Nguyễn V** L**"), ONLINE),
    "accepted-out": lambda: render_result(Outcome(Result.ACCEPTED, direction="out", masked_name="Đặng T** Ư**"), ONLINE),
    "accepted-offline": lambda: render_result(
        Outcome(Result.ACCEPTED_OFFLINE, direction="in", masked_name="Trần T** H*"), OFFLINE),
    "already-counted": lambda: render_result(
        Outcome(Result.ALREADY_COUNTED, reason="already_counted", direction="in", masked_name="Lê V*** H***"), ONLINE),
    "refused-unknown-format": lambda: render_result(Outcome(Result.REFUSED, reason="unknown_format"), ONLINE),
    "refused-expired": lambda: render_result(Outcome(Result.REFUSED, reason="expired"), ONLINE),
    "refused-blocked": lambda: render_result(Outcome(Result.REFUSED, reason="blocked"), ONLINE),
    "refused-passback": lambda: render_result(Outcome(Result.REFUSED, reason="passback"), ONLINE),
    "refused-unlisted-code": lambda: render_result(Outcome(Result.REFUSED, reason="made_up_code"), ONLINE),
    "fault": lambda: render_result(Outcome(Result.FAULT, reason="storage"), OFFLINE),
    "long-name": lambda: render_result(
        Outcome(Result.ACCEPTED, direction="in", masked_name="Nguyễn " + "Ư** " * 40), ONLINE),
}


def check_reference(name: str, image: Image.Image) -> None:
    path = REFERENCE / f"{name}.png"
    if UPDATE:
        REFERENCE.mkdir(parents=True, exist_ok=True)
        image.save(path)
        return
    assert path.exists(), f"no reference {path}; run with QRGATE_UPDATE_REFERENCE=1"
    expected = Image.open(path).convert("1")
    assert image.size == (128, 64)
    # logical_xor, not difference: a decoded 1-bit PNG may hold 1 where a drawn image
    # holds 255, which difference() reports as a change.
    diff = ImageChops.logical_xor(image.convert("1"), expected).getbbox()
    assert diff is None, f"screen {name} differs from {path} in box {diff}"


@pytest.mark.parametrize("name", sorted(SCREENS))
def test_screen_matches_its_reference(name):
    check_reference(name, SCREENS[name]())


def test_screens_for_different_results_look_different():
    images = {name: SCREENS[name]().tobytes() for name in SCREENS if name != "refused-blocked"}
    assert len(set(images.values())) == len(images)


def test_a_blocked_person_sees_the_same_screen_as_any_other_refusal_to_see_the_guard():
    # The people queueing behind must not learn that someone is under a quarantine order.
    assert SCREENS["refused-blocked"]().tobytes() == SCREENS["refused-unlisted-code"]().tobytes()


def test_shown_on_the_dummy_panel_through_the_feedback_loop(tmp_path):
    device = open_panel("dummy")
    screen = Screen(device, mirror_png=tmp_path / "screen.png")
    loop = FeedbackLoop(None, screen, result_seconds=60)
    loop.start()
    try:
        loop.post(ONLINE)
        loop.post(Outcome(Result.ACCEPTED, direction="in", masked_name="Nguyễn V** L**"))
        assert loop.wait_idle(10)
        check_reference("accepted-in", device.image.convert("1"))
        assert Image.open(tmp_path / "screen.png").tobytes() == device.image.convert("1").tobytes()
    finally:
        loop.close()


IDLE_THROUGH_LOOP = {
    "idle-online": ONLINE,
    "idle-offline-backlog": OFFLINE,
    "idle-fault": StationState(venue=VENUE, mode="exit", fault="storage"),
}
RESULTS_THROUGH_LOOP = {
    "accepted-out": (ONLINE, Outcome(Result.ACCEPTED, direction="out", masked_name="Đặng T** Ư**")),
    "accepted-offline": (OFFLINE, Outcome(Result.ACCEPTED_OFFLINE, direction="in", masked_name="Trần T** H*")),
    "already-counted": (ONLINE, Outcome(Result.ALREADY_COUNTED, reason="already_counted", direction="in",
                                        masked_name="Lê V*** H***")),
    "refused-unknown-format": (ONLINE, Outcome(Result.REFUSED, reason="unknown_format")),
    "fault": (OFFLINE, Outcome(Result.FAULT, reason="storage")),
}


@pytest.fixture
def panel_loop():
    device = open_panel("dummy")
    loop = FeedbackLoop(None, Screen(device), result_seconds=60)
    loop.start()
    yield device, loop
    loop.close()


@pytest.mark.parametrize("name", sorted(IDLE_THROUGH_LOOP))
def test_idle_screens_reach_the_dummy_panel_through_the_feedback_loop(panel_loop, name):
    device, loop = panel_loop
    loop.post(IDLE_THROUGH_LOOP[name])
    assert loop.wait_idle(10)
    assert loop.shown is None
    check_reference(name, device.image.convert("1"))


@pytest.mark.parametrize("name", sorted(RESULTS_THROUGH_LOOP))
def test_result_screens_reach_the_dummy_panel_through_the_feedback_loop(panel_loop, name):
    device, loop = panel_loop
    state, outcome = RESULTS_THROUGH_LOOP[name]
    loop.post(state)
    loop.post(outcome)
    assert loop.wait_idle(10)
    assert loop.shown == outcome
    check_reference(name, device.image.convert("1"))


def test_the_mirror_png_is_replaced_whole_and_leaves_no_temporary_files(tmp_path):
    screen = Screen(open_panel("dummy"), mirror_png=tmp_path / "screen.png")
    screen.show(render_idle(ONLINE))
    screen.show(render_idle(OFFLINE))
    assert [path.name for path in tmp_path.iterdir()] == ["screen.png"]
    assert Image.open(tmp_path / "screen.png").tobytes() == render_idle(OFFLINE).tobytes()
    screen.save_png(tmp_path / "copy.png")
    assert Image.open(tmp_path / "copy.png").tobytes() == render_idle(OFFLINE).tobytes()


def test_a_missing_i2c_bus_is_named_in_the_error():
    if Path("/dev/i2c-1").exists():
        pytest.skip("this machine has /dev/i2c-1")
    with pytest.raises(DriverError, match=r"^I2C device not found: /dev/i2c-1 "):
        open_panel("sh1106")


def test_text_is_nfc_normalised_before_drawing():
    decomposed = "Nguye\u0302\u0303n"  # e + combining circumflex + combining tilde
    assert clean_text(decomposed) == "Nguyễn"
    assert clean_text("A\x00B\u200bC\nD") == "A B C D"


def test_unknown_panel_and_missing_bus_have_clear_messages():
    with pytest.raises(UserError, match="unknown panel 'lcd'; choose one of: ssd1306, sh1106, dummy"):
        open_panel("lcd")
    with pytest.raises(DriverError, match=r"/dev/i2c-7"):
        open_panel("ssd1306", i2c_port=7)
