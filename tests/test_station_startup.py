"""A station started with parts missing runs, shows what is wrong and uses the parts once they appear."""

from __future__ import annotations

import logging
import sys
import threading
import types
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from gpiozero.pins.mock import MockFactory
from luma.core.device import dummy

from conftest import wait_until
from edge.app import FeedbackDevices, Station, open_indicators
from edge.config import load_station_config
from edge.display.screens import render_idle
from edge.drivers.fake import ListSource
from edge.feedback import IDLE_SHIFTS
from edge.outcome import Outcome, Result, StationState
from provisioning.broker import free_port
from qrgate.errors import ConfigError, DriverError
from qrgate.samples import cccd, write_qr_png
from qrgate.sealing import x25519_public_to_text
from test_scanners import FakeDevices, Typist

pytestmark = pytest.mark.timeout(60)

PERSON = cccd("024083123451", "", "Nguyễn Gia Mạnh", "21031983", "Nam", "Quận 3, TP Hồ Chí Minh", "06042021")
NO_FEEDBACK = 'indicators = "none"\npanel = "none"'


def station_config(tmp_path: Path, source: str, feedback: str = NO_FEEDBACK):
    """A station.toml with no broker to reach (offline) and housekeeping every 50 ms."""
    path = tmp_path / "station.toml"
    path.write_text(f"""
[station]
id = "gate-start"
venue = "Cổng 1"
server_key = "{x25519_public_to_text(X25519PrivateKey.generate().public_key())}"
housekeeping_s = 0.05
[mqtt]
port = {free_port()}
tls = false
[feedback]
{feedback}
[source]
{source}
""")
    return load_station_config(path)


@pytest.fixture
def started():
    """Starts stations, runs their pipeline on a thread, and stops them after the test."""
    running: list[tuple[Station, threading.Thread | None]] = []

    def start(station: Station, *, run: bool = False) -> Station:
        station.start()
        thread = threading.Thread(target=station.run, daemon=True) if run else None
        running.append((station, thread))
        if thread is not None:
            thread.start()
        return station

    yield start
    for station, thread in running:
        station.close()
        if thread is not None:
            thread.join(timeout=10)
            assert not thread.is_alive(), "the pipeline did not stop"


class Events:
    """A station listener the test can wait on."""

    def __init__(self):
        self.seen: list[Outcome | StationState] = []
        self.changed = threading.Condition()

    def __call__(self, event):
        with self.changed:
            self.seen.append(event)
            self.changed.notify_all()

    def faults(self) -> list[str]:
        with self.changed:
            return [e.fault for e in self.seen if isinstance(e, StationState)]

    def wait_for(self, predicate, timeout: float = 15.0) -> bool:
        with self.changed:
            return self.changed.wait_for(lambda: predicate(self.seen), timeout)


def accepted(seen) -> bool:
    return any(isinstance(e, Outcome) and e.result is Result.ACCEPTED_OFFLINE for e in seen)


def test_a_camera_folder_missing_at_start_is_a_fault_until_it_appears(tmp_path, started):
    rig = tmp_path / "rig"
    cfg = station_config(tmp_path, f'kind = "folder"\npath = "{rig}"\nloop = true\ninterval_s = 0.05')
    events = Events()
    station = started(Station(cfg, listeners=[events]), run=True)  # start() does not fail

    assert events.faults()[-1] == "camera"  # on the screen and in the status heartbeat
    assert station._status_fields()["fault"] == "camera"
    rig.mkdir()
    write_qr_png(PERSON, rig / "card.png")

    assert events.wait_for(accepted), events.seen
    assert events.faults()[-1] == ""  # cleared when frames came
    assert station.outbox.backlog() == 1


def test_a_scanner_plugged_in_after_start_clears_the_fault_and_reads(tmp_path, started, monkeypatch):
    from edge.drivers import scanner_hid

    devices = FakeDevices()
    monkeypatch.setattr(scanner_hid.evdev, "InputDevice", devices.open)
    port = tmp_path / "usb-Fake_2D_Scanner-event-kbd"
    cfg = station_config(tmp_path, f'kind = "hid"\ndevice_path = "{port}"')
    events = Events()
    started(Station(cfg, listeners=[events]), run=True)
    assert events.faults()[-1] == "scanner"

    port.touch()  # plugged in: udev makes the by-id link
    device = devices.wait_for_count(1)
    assert events.wait_for(lambda seen: [e.fault for e in seen if isinstance(e, StationState)][-1] == "")
    device.push(Typist().type("not a card"))

    assert events.wait_for(lambda seen: any(isinstance(e, Outcome) for e in seen))


@pytest.mark.parametrize("source, words", [
    ('kind = "folder"\npath = "rig"\nframes_per_second = 3', "frames_per_second"),
    ('kind = "foldr"\npath = "rig"', "unknown source kind 'foldr'"),
])
def test_a_typo_in_the_source_section_still_stops_the_start(tmp_path, source, words):
    station = Station(station_config(tmp_path, source))
    try:
        with pytest.raises(ConfigError, match=words):
            station.start()
    finally:
        station.close()


def test_a_panel_missing_at_start_is_logged_and_used_once_it_answers(tmp_path, started, caplog):
    panels = []

    def panel_opener(kind, *, i2c_port, address):
        if not panels:
            panels.append(None)
            # What edge.display.panel.open_panel says when I2C is not enabled.
            raise DriverError(f"I2C device not found: /dev/i2c-{i2c_port} (enable I2C: raspi-config)")
        panels.append(dummy(width=128, height=64, mode="1"))
        return panels[-1]

    cfg = station_config(tmp_path, 'kind = "list"', 'indicators = "none"\npanel = "ssd1306"')
    devices = FeedbackDevices(cfg, retry_s=0.0, panel_opener=panel_opener)
    with caplog.at_level(logging.ERROR, logger="edge.app"):
        station = started(Station(cfg, source=ListSource([]), decoder=object(), feedback_devices=devices))
    assert "no screen: ssd1306 panel at 0x3C on /dev/i2c-1: I2C device not found" in caplog.text
    assert station.handle_text(PERSON).result is Result.ACCEPTED_OFFLINE  # counting without a screen

    idle = StationState(venue="Cổng 1", mode="toggle")
    expected = {render_idle(idle, shift).convert("1").tobytes() for shift in IDLE_SHIFTS}
    wait_until(lambda: len(panels) > 1 and panels[-1].image.convert("1").tobytes() in expected, 15,
               "the idle screen on the panel that answered later")
    assert devices.problems == {}


def test_missing_parts_are_tried_again_at_most_every_retry_period(tmp_path):
    calls = []

    def panel_opener(kind, **where):
        calls.append(kind)
        raise DriverError("I2C device not found: /dev/i2c-1 (enable I2C: raspi-config)")

    now = [100.0]
    cfg = station_config(tmp_path, 'kind = "list"', 'indicators = "none"\npanel = "sh1106"')
    devices = FeedbackDevices(cfg, retry_s=30.0, panel_opener=panel_opener, clock=lambda: now[0])
    loop = devices.open_loop()
    try:
        now[0] += 29.0
        devices.retry_missing(loop)
        assert len(calls) == 1
        now[0] += 1.0
        devices.retry_missing(loop)
        assert len(calls) == 2
        assert "I2C device not found" in devices.problems["screen"]
    finally:
        loop.close()


def test_without_lgpio_the_lights_stay_off_and_the_station_counts(tmp_path, started, monkeypatch, caplog):
    # As on a Pi whose venv cannot see apt's python3-lgpio.
    monkeypatch.setitem(sys.modules, "lgpio", None)
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", None)
    cfg = station_config(tmp_path, 'kind = "list"', 'indicators = "gpio"\npin_factory = "lgpio"\npanel = "none"')

    with caplog.at_level(logging.ERROR, logger="edge.app"):
        station = started(Station(cfg, source=ListSource([]), decoder=object()))

    assert "no lights: pin_factory 'lgpio': lgpio is not installed" in caplog.text
    assert station.handle_text(PERSON).result is Result.ACCEPTED_OFFLINE
    assert "lgpio is not installed" in station.health()["missing"]["lights"]


class RecordingLGPIOFactory(MockFactory):
    """Stands in for gpiozero.pins.lgpio.LGPIOFactory: mock pins, and remembers it was made."""

    made: list[RecordingLGPIOFactory] = []

    def __init__(self, chip=None):
        super().__init__()
        RecordingLGPIOFactory.made.append(self)


def test_pin_factory_lgpio_is_the_one_gpiozero_drives_the_lights_with(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "gpiozero.pins.lgpio", types.SimpleNamespace(LGPIOFactory=RecordingLGPIOFactory))
    RecordingLGPIOFactory.made.clear()
    cfg = station_config(tmp_path, 'kind = "list"', 'indicators = "gpio"\npin_factory = "lgpio"\npanel = "none"')

    indicators = open_indicators(cfg)
    try:
        (factory,) = RecordingLGPIOFactory.made
        assert all(led.pin_factory is factory for led in indicators.leds.values())
        indicators.signal(Result.ACCEPTED)
        wait_until(lambda: factory.pin(17).state, 5, "the green light on GPIO17")
    finally:
        indicators.close()
        factory.reset()
