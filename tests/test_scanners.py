"""Tests of the USB scanner sources: keyboard (HID) decoding and serial (CDC) framing."""

from __future__ import annotations

import errno
import logging
import os
import queue
import threading
import time
from collections import deque
from pathlib import Path

import pytest
from evdev import InputEvent, ecodes

from edge.drivers import scanner_hid
from edge.drivers.ports import ScannedText
from edge.drivers.scanner_hid import HidScannerSource, KeystrokeDecoder
from edge.drivers.scanner_serial import CodeSplitter, SerialScannerSource
from edge.drivers.sources import open_source
from qrgate.errors import DriverError

pytestmark = pytest.mark.timeout(30)

CCCD = "024083123451|3099789364|Nguyen Gia Manh|21031983|Nam|165/7 Nguyen Thi Minh Khai|06042021"
CCCD_VIETNAMESE = (
    "024083123451|3099789364|Nguyễn Gia Mạnh|21031983|Nam|"
    "165/7 Nguyễn Thị Minh Khai, Quận 3, TP Hồ Chí Minh|06042021"
)

# --- keystrokes as a US-layout scanner types them ----------------------------------

_UNSHIFTED = {
    **{c: f"KEY_{c.upper()}" for c in "abcdefghijklmnopqrstuvwxyz"},
    **{d: f"KEY_{d}" for d in "0123456789"},
    "-": "KEY_MINUS", "=": "KEY_EQUAL", "/": "KEY_SLASH", ".": "KEY_DOT", ",": "KEY_COMMA",
    ";": "KEY_SEMICOLON", " ": "KEY_SPACE",
}
_SHIFTED = {
    **{c.upper(): f"KEY_{c.upper()}" for c in "abcdefghijklmnopqrstuvwxyz"},
    "|": "KEY_BACKSLASH", ":": "KEY_SEMICOLON", "_": "KEY_MINUS", "+": "KEY_EQUAL",
    "$": "KEY_4", "*": "KEY_8", "<": "KEY_COMMA", ">": "KEY_DOT", "?": "KEY_SLASH",
}


class Typist:
    """Builds real ``evdev.InputEvent`` objects for text, 4 ms per event like a scanner."""

    def __init__(self, start: float = 1000.0, step: float = 0.004):
        self.now = start
        self.step = step

    def event(self, event_type: int, code: int, value: int) -> InputEvent:
        self.now += self.step
        seconds = int(self.now)
        return InputEvent(seconds, round((self.now - seconds) * 1_000_000), event_type, code, value)

    def key(self, name: str, value: int = 1) -> list[InputEvent]:
        return [self.event(ecodes.EV_KEY, ecodes.ecodes[name], value),
                self.event(ecodes.EV_SYN, ecodes.SYN_REPORT, 0)]

    def tap(self, name: str) -> list[InputEvent]:
        return self.key(name, 1) + self.key(name, 0)

    def type(self, text: str, enter: bool = True) -> list[InputEvent]:
        events = []
        for char in text:
            if char in _SHIFTED:
                events += self.key("KEY_LEFTSHIFT", 1) + self.tap(_SHIFTED[char])
                events += self.key("KEY_LEFTSHIFT", 0)
            else:
                events += self.tap(_UNSHIFTED[char])
        if enter:
            events += self.tap("KEY_ENTER")
        return events


def feed_all(decoder: KeystrokeDecoder, events: list[InputEvent]) -> list[str]:
    codes = []
    for event in events:
        text = decoder.feed(event.type, event.code, event.value, event.timestamp())
        if text is not None:
            codes.append(text)
    return codes


@pytest.fixture
def decoder() -> KeystrokeDecoder:
    return KeystrokeDecoder(char_timeout_s=0.05)


@pytest.fixture
def typist() -> Typist:
    return Typist()


def test_decoder_reads_a_cccd_code_with_pipes_and_capitals(decoder, typist):
    assert feed_all(decoder, typist.type(CCCD)) == [CCCD]


def test_decoder_applies_shift_only_while_it_is_held(decoder, typist):
    text = "aB|c:/._-=+$*<>, z"

    assert feed_all(decoder, typist.type(text)) == [text]


def test_right_shift_works_like_left_shift(decoder, typist):
    events = typist.key("KEY_RIGHTSHIFT", 1) + typist.tap("KEY_A") + typist.key("KEY_RIGHTSHIFT", 0)
    events += typist.tap("KEY_A") + typist.tap("KEY_KPENTER")

    assert feed_all(decoder, events) == ["Aa"]


def test_enter_ends_each_code_and_an_empty_enter_yields_nothing(decoder, typist):
    events = typist.type("first") + typist.tap("KEY_ENTER") + typist.type("second")

    assert feed_all(decoder, events) == ["first", "second"]


def test_keypad_digits_and_keypad_enter(decoder, typist):
    events = typist.tap("KEY_KP4") + typist.tap("KEY_KP2") + typist.tap("KEY_KPDOT")
    events += typist.tap("KEY_KP5") + typist.tap("KEY_KPENTER")

    assert feed_all(decoder, events) == ["42.5"]


def test_a_pause_longer_than_the_timeout_splits_codes_without_enter(decoder, typist):
    events = typist.type("ABC", enter=False)
    typist.now += 0.5  # the scanner waits for the next card
    events += typist.type("XYZ", enter=False)

    assert feed_all(decoder, events) == ["ABC"]
    # No more keys: the reader loop asks once the line has been idle for the timeout.
    assert decoder.flush_if_idle(typist.now + 0.01) is None
    assert decoder.flush_if_idle(typist.now + 0.2) == "XYZ"
    assert not decoder.pending


def test_after_an_enter_a_pause_inside_a_code_does_not_split_it(decoder, typist):
    # This scanner ends codes with Enter; a slow USB hub holds the rest of a name back.
    events = typist.type("first") + typist.type("Nguyen Gia", enter=False)
    typist.now += 0.2
    events += typist.type(" Manh")

    assert feed_all(decoder, events) == ["first", "Nguyen Gia Manh"]


def test_after_an_enter_an_idle_line_does_not_complete_a_code(decoder, typist):
    assert feed_all(decoder, typist.type("first") + typist.type("ABC", enter=False)) == ["first"]

    assert decoder.flush_if_idle(typist.now + 0.2) is None  # the reader loop's idle check
    typist.now += 0.2
    assert feed_all(decoder, typist.type("XYZ")) == ["ABCXYZ"]


def test_a_code_cut_off_before_its_enter_is_dropped_not_glued_to_the_next(decoder, typist, caplog):
    assert feed_all(decoder, typist.type("first") + typist.type("cut-o", enter=False)) == ["first"]

    with caplog.at_level(logging.WARNING, logger="edge.drivers.scanner_hid"):
        assert decoder.flush_if_idle(typist.now + 2.0) is None
    assert not decoder.pending and "stopped before its Enter" in caplog.text
    typist.now += 2.0
    assert feed_all(decoder, typist.type("next")) == ["next"]


def test_syn_dropped_discards_the_partial_code(decoder, typist):
    events = typist.type("lost-", enter=False)
    events.append(typist.event(ecodes.EV_SYN, ecodes.SYN_DROPPED, 0))
    events += typist.tap("KEY_Q")  # still part of the broken packet: ignored
    events += typist.type("next")

    assert feed_all(decoder, events) == ["next"]


def test_key_repeats_and_key_releases_add_no_characters(decoder, typist):
    events = typist.key("KEY_A", 1) + typist.key("KEY_A", 2) + typist.key("KEY_A", 2)
    events += typist.key("KEY_A", 0) + typist.tap("KEY_B") + typist.tap("KEY_ENTER")

    assert feed_all(decoder, events) == ["ab"]


def test_an_unknown_key_becomes_a_replacement_character_not_a_silent_gap(decoder, typist):
    events = typist.tap("KEY_A") + typist.tap("KEY_F5") + typist.tap("KEY_B")
    events += typist.key("KEY_LEFTCTRL", 1) + typist.key("KEY_LEFTCTRL", 0)
    events += typist.tap("KEY_ENTER")

    assert feed_all(decoder, events) == ["a\ufffdb"]


def test_an_alt_keypad_character_becomes_one_replacement_character(decoder, typist):
    # How a scanner in keyboard mode "types" a character missing from the layout.
    events = typist.type("Nguy", enter=False) + typist.key("KEY_LEFTALT", 1)
    for digit in "0234":
        events += typist.tap(f"KEY_KP{digit}")
    events += typist.key("KEY_LEFTALT", 0) + typist.type("n")

    assert feed_all(decoder, events) == ["Nguy\ufffdn"]


def test_an_endless_code_is_discarded(typist):
    decoder = KeystrokeDecoder(char_timeout_s=0.05, max_chars=10)
    events = typist.type("a" * 11) + typist.type("short")

    assert feed_all(decoder, events) == ["short"]


# --- the HID reader loop, with evdev.InputDevice replaced at the boundary ------------


class FakeInputDevice:
    """Stands in for ``evdev.InputDevice``: a pipe as its fd, events pushed by the test."""

    def __init__(self, path: str):
        self.path = path
        self.name = "Fake 2D Scanner"
        self.fd, self._signal = os.pipe()
        os.set_blocking(self.fd, False)
        self._events: deque[InputEvent] = deque()
        self.gone = False
        self.grabbed = False
        self.ungrab_calls = 0
        self.closed = False

    def push(self, events: list[InputEvent]) -> None:
        self._events.extend(events)
        os.write(self._signal, b"!")

    def unplug(self) -> None:
        self.gone = True
        os.write(self._signal, b"!")

    def read(self):
        try:
            os.read(self.fd, 4096)
        except BlockingIOError:
            pass
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        if not self._events:
            raise BlockingIOError(errno.EAGAIN, "Resource temporarily unavailable")
        events = list(self._events)
        self._events.clear()
        return iter(events)

    def grab(self):
        self.grabbed = True

    def ungrab(self):
        self.ungrab_calls += 1
        if self.gone:
            raise OSError(errno.ENODEV, "No such device")
        self.grabbed = False

    def close(self):
        if not self.closed:
            os.close(self.fd)
            os.close(self._signal)
            self.closed = True


class FakeDevices:
    """Every fake device opened so far; the test can wait for the next one."""

    def __init__(self):
        self.opened: list[FakeInputDevice] = []
        self.changed = threading.Condition()

    def open(self, path: str) -> FakeInputDevice:
        if not os.path.exists(path):
            raise FileNotFoundError(errno.ENOENT, "No such file or directory", path)
        device = FakeInputDevice(path)
        with self.changed:
            self.opened.append(device)
            self.changed.notify_all()
        return device

    def wait_for_count(self, count: int) -> FakeInputDevice:
        with self.changed:
            assert self.changed.wait_for(lambda: len(self.opened) >= count, timeout=5)
            return self.opened[count - 1]


@pytest.fixture
def fake_devices(monkeypatch) -> FakeDevices:
    devices = FakeDevices()
    monkeypatch.setattr(scanner_hid.evdev, "InputDevice", devices.open)
    return devices


@pytest.fixture
def scanner_path(tmp_path: Path) -> Path:
    path = tmp_path / "usb-Fake_2D_Scanner-event-kbd"
    path.touch()
    return path


class CaptureReader:
    """Runs a source's ``captures()`` on a thread and hands each capture to the test."""

    def __init__(self, source):
        self.source = source
        self.items: queue.Queue = queue.Queue()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self):
        for capture in self.source.captures():
            self.items.put(capture)
        self.items.put(None)

    def next(self, timeout: float = 5.0) -> ScannedText:
        return self.items.get(timeout=timeout)

    def stop(self) -> None:
        self.source.close()
        self.thread.join(timeout=3)
        assert not self.thread.is_alive(), "captures() still running after close()"


def test_hid_source_grabs_the_scanner_and_yields_typed_codes(fake_devices, scanner_path):
    source = HidScannerSource(scanner_path, retry_s=0.01)
    reader = CaptureReader(source)
    device = fake_devices.wait_for_count(1)

    device.push(Typist().type(CCCD))
    code = reader.next()
    grabbed_while_reading = device.grabbed
    reader.stop()

    assert grabbed_while_reading
    assert code.text == CCCD and code.raw == CCCD.encode()
    assert code.origin == str(scanner_path)
    assert device.ungrab_calls == 1 and device.closed  # the console gets its keyboard back


def test_hid_scanner_unplugged_and_plugged_back_is_read_again(fake_devices, scanner_path, caplog):
    source = HidScannerSource(scanner_path, retry_s=0.01)
    reader = CaptureReader(source)
    first = fake_devices.wait_for_count(1)
    first.push(Typist().type("before"))
    assert reader.next().text == "before"

    with caplog.at_level(logging.WARNING, logger="edge.drivers.scanner_hid"):
        scanner_path.unlink()
        first.unplug()
        scanner_path.touch()  # udev recreates the by-id link when it is plugged back
        second = fake_devices.wait_for_count(2)
        second.push(Typist().type("after"))
        code = reader.next()
    second_grabbed = second.grabbed
    reader.stop()

    assert code.text == "after"
    assert first.ungrab_calls == 1 and first.closed
    assert second_grabbed
    assert "lost" in caplog.text


def test_hid_scanner_that_sends_enter_keeps_a_code_whole_across_a_pause(fake_devices, scanner_path):
    source = HidScannerSource(scanner_path, retry_s=0.01)
    reader = CaptureReader(source)
    device = fake_devices.wait_for_count(1)
    typist = Typist(start=time.time())  # the reader compares key times with its own clock

    device.push(typist.type("first"))
    assert reader.next().text == "first"
    device.push(typist.type("Nguyen Gia", enter=False))
    typist.now += 0.3  # the rest comes 300 ms later, through a slow hub
    device.push(typist.type(" Manh"))
    code = reader.next()
    reader.stop()

    assert code.text == "Nguyen Gia Manh"


def test_hid_scanner_reopened_may_be_one_without_enter(fake_devices, scanner_path):
    source = HidScannerSource(scanner_path, retry_s=0.01)
    reader = CaptureReader(source)
    first = fake_devices.wait_for_count(1)
    first.push(Typist(start=time.time()).type("with-enter"))
    assert reader.next().text == "with-enter"

    scanner_path.unlink()
    first.unplug()
    scanner_path.touch()  # another scanner, set to send no suffix, on the same port
    second = fake_devices.wait_for_count(2)
    typist = Typist(start=time.time())
    events = typist.type("ABC", enter=False)
    typist.now += 0.5
    second.push(events + typist.type("XYZ", enter=False))
    codes = [reader.next().text, reader.next().text]
    reader.stop()

    assert codes == ["ABC", "XYZ"]  # split on the pause again, as before any Enter


def test_hid_close_while_waiting_for_keys_ends_captures_at_once(fake_devices, scanner_path):
    source = HidScannerSource(scanner_path)
    reader = CaptureReader(source)
    device = fake_devices.wait_for_count(1)

    reader.stop()

    assert reader.next(timeout=1) is None
    assert device.closed


def test_hid_source_that_cannot_be_opened_names_the_path(tmp_path):
    missing = tmp_path / "usb-Nothing-event-kbd"

    with pytest.raises(DriverError, match="usb-Nothing-event-kbd"):
        open_source("hid", device_path=str(missing))


# --- serial (CDC) scanners over a real pseudo-terminal -------------------------------


class LogWatcher(logging.Handler):
    """Lets a test wait until a driver has logged a message."""

    def __init__(self):
        super().__init__(logging.DEBUG)
        self.messages: list[str] = []
        self.changed = threading.Condition()

    def emit(self, record):
        with self.changed:
            self.messages.append(record.getMessage())
            self.changed.notify_all()

    def wait_for(self, fragment: str, timeout: float = 5.0) -> bool:
        with self.changed:
            return self.changed.wait_for(
                lambda: any(fragment in m for m in self.messages), timeout
            )


@pytest.fixture
def serial_log():
    watcher = LogWatcher()
    logger = logging.getLogger("edge.drivers.scanner_serial")
    previous_level = logger.level
    logger.setLevel(logging.DEBUG)
    logger.addHandler(watcher)
    yield watcher
    logger.removeHandler(watcher)
    logger.setLevel(previous_level)


class PseudoTerminal:
    """A pty pair: the source opens ``path`` (the slave), the test writes as the scanner."""

    def __init__(self):
        self.master, self.slave = os.openpty()
        self.path = os.ttyname(self.slave)

    def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            written = os.write(self.master, view)
            view = view[written:]

    def close(self) -> None:
        for fd in (self.master, self.slave):
            try:
                os.close(fd)
            except OSError:
                pass


@pytest.fixture
def pty():
    terminal = PseudoTerminal()
    yield terminal
    terminal.close()


@pytest.fixture
def serial_reader(pty):
    reader = CaptureReader(SerialScannerSource(pty.path))
    yield reader
    reader.stop()


def test_serial_vietnamese_text_arrives_byte_exact(pty, serial_reader):
    pty.send(CCCD_VIETNAMESE.encode("utf-8") + b"\r")

    code = serial_reader.next()

    assert code.text == CCCD_VIETNAMESE
    assert code.raw == CCCD_VIETNAMESE.encode("utf-8")
    assert code.origin == pty.path


def test_serial_crlf_ends_a_code_once(pty, serial_reader):
    pty.send(b"first\r\nsecond\r\n")

    assert serial_reader.next().text == "first"
    assert serial_reader.next().text == "second"
    pty.send(b"third\r")
    assert serial_reader.next().text == "third"  # no empty code from the LFs in between


def test_serial_two_codes_in_one_write_are_split(pty, serial_reader):
    pty.send(b"ABC123\rXYZ789\r")

    assert [serial_reader.next().raw, serial_reader.next().raw] == [b"ABC123", b"XYZ789"]


def test_serial_overlong_junk_line_is_discarded_and_the_next_code_read(
    pty, serial_reader, serial_log
):
    pty.send(b"J" * 5000 + b"\r" + b"after-junk\r")

    assert serial_reader.next().text == "after-junk"
    assert serial_log.wait_for("discarding")


def test_serial_invalid_utf8_is_delivered_as_raw_bytes(pty, serial_reader):
    pty.send(b"caf\xe9 \xff\xfe\r")

    code = serial_reader.next()

    assert code.raw == b"caf\xe9 \xff\xfe"
    assert "\ufffd" in code.text


def test_serial_utf8_bom_is_kept_out_of_the_code(pty, serial_reader):
    pty.send(b"\xef\xbb\xbf" + "Lê Việt Hưng".encode() + b"\r")

    code = serial_reader.next()

    assert code.raw == "Lê Việt Hưng".encode()
    assert code.text == "Lê Việt Hưng"


def test_serial_scanner_unplugged_is_reopened_at_its_stable_path(tmp_path, serial_log):
    first, second = PseudoTerminal(), PseudoTerminal()
    by_id = tmp_path / "usb-Fake_Scanner-if00"
    by_id.symlink_to(first.path)
    reader = CaptureReader(SerialScannerSource(str(by_id), retry_s=0.01))
    try:
        first.send(b"before\r")
        assert reader.next().text == "before"

        first.close()  # the scanner is unplugged: its tty goes away
        assert serial_log.wait_for("lost")
        by_id.unlink()
        by_id.symlink_to(second.path)  # plugged back in, udev points the link anew
        assert serial_log.wait_for("is back")
        second.send(b"after\r")

        assert reader.next().text == "after"
    finally:
        reader.stop()
        second.close()


def test_serial_close_from_another_thread_ends_captures(pty):
    reader = CaptureReader(SerialScannerSource(pty.path))

    reader.stop()

    assert reader.next(timeout=1) is None


def test_serial_port_that_cannot_be_opened_names_the_path(tmp_path):
    with pytest.raises(DriverError, match="ttyNOTHING"):
        SerialScannerSource(str(tmp_path / "ttyNOTHING"))


def test_splitter_with_a_custom_terminator_keeps_line_breaks_inside_a_code():
    splitter = CodeSplitter(b"\x03")

    assert splitter.feed(b"line one\r\nline") == []
    assert splitter.feed(b" two\x03next") == [b"line one\r\nline two"]
