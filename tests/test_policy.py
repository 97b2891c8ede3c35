"""The check-in policy is a pure function: same inputs, same verdict, no clock inside."""

from __future__ import annotations

from edge.policy import Instant, LastCheckin, PolicyConfig, decide_checkin

BOOT = "boot-a"


def at(seconds: float, boot: str = BOOT, wall_offset: float = 1_790_000_000.0) -> Instant:
    return Instant(wall_offset + seconds, seconds, boot)


def test_first_scan_is_an_entry_in_toggle_mode():
    verdict = decide_checkin(None, at(100), PolicyConfig(mode="toggle"))
    assert (verdict.accepted, verdict.direction) == (True, "in")


def test_same_person_within_window_is_not_counted_twice():
    cfg = PolicyConfig(mode="toggle", repeat_window_s=30)
    last = LastCheckin("in", at(100))
    held = decide_checkin(last, at(103), cfg)  # held in front of the camera for 3 s
    assert (held.accepted, held.code) == (False, "already_counted")
    later = decide_checkin(last, at(131), cfg)
    assert (later.accepted, later.direction) == (True, "out")


def test_toggle_alternates_and_a_forgotten_exit_resets_to_entry():
    cfg = PolicyConfig(mode="toggle", repeat_window_s=30, toggle_reset_s=12 * 3600)
    assert decide_checkin(LastCheckin("out", at(0)), at(3600), cfg).direction == "in"
    assert decide_checkin(LastCheckin("in", at(0)), at(3600), cfg).direction == "out"
    assert decide_checkin(LastCheckin("in", at(0)), at(13 * 3600), cfg).direction == "in"


def test_entry_and_exit_stations_always_give_their_direction():
    last = LastCheckin("in", at(0))
    assert decide_checkin(last, at(100), PolicyConfig(mode="entry")).direction == "in"
    assert decide_checkin(last, at(100), PolicyConfig(mode="exit")).direction == "out"


def test_wall_clock_stepped_forward_does_not_break_the_window_within_one_boot():
    cfg = PolicyConfig(repeat_window_s=30)
    last = LastCheckin("in", Instant(1_000.0, 50.0, BOOT))
    # NTP stepped the wall clock forward by an hour; only 5 s passed really.
    now = Instant(1_000.0 + 3600 + 5, 55.0, BOOT)
    assert decide_checkin(last, now, cfg).code == "already_counted"


def test_across_reboots_the_wall_clock_decides_and_a_backward_jump_is_safe():
    cfg = PolicyConfig(repeat_window_s=30)
    last = LastCheckin("in", Instant(10_000.0, 500.0, "boot-a"))
    assert decide_checkin(last, Instant(10_100.0, 3.0, "boot-b"), cfg).accepted
    # Clock behind the last record (unsynced boot): never count twice.
    assert decide_checkin(last, Instant(9_000.0, 3.0, "boot-b"), cfg).code == "already_counted"


def test_a_blocked_person_is_refused_whatever_the_mode():
    for mode in ("entry", "exit", "toggle"):
        verdict = decide_checkin(None, at(0), PolicyConfig(mode=mode), blocked=True)
        assert (verdict.accepted, verdict.code) == (False, "blocked")


def test_anti_passback_refuses_a_second_entry_without_an_exit():
    cfg = PolicyConfig(mode="entry", repeat_window_s=30, anti_passback=True, toggle_reset_s=12 * 3600)
    last = LastCheckin("in", at(0))
    assert decide_checkin(last, at(600), cfg).code == "passback"
    assert decide_checkin(last, at(13 * 3600), cfg).accepted  # automatic check-out passed
    assert decide_checkin(LastCheckin("out", at(0)), at(600), cfg).accepted
    off = PolicyConfig(mode="entry", repeat_window_s=30)
    assert decide_checkin(last, at(600), off).accepted
    exit_cfg = PolicyConfig(mode="exit", repeat_window_s=30, anti_passback=True)
    assert decide_checkin(LastCheckin("out", at(0)), at(600), exit_cfg).code == "passback"
