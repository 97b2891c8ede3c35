"""USB QR scanners in keyboard (HID) mode, read with evdev and grabbed from the console."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import select
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import evdev
from evdev import ecodes

from edge.drivers.ports import BlockingReader, ScannedText, retry_with_backoff
from qrgate.errors import DriverError

logger = logging.getLogger(__name__)

MAX_CODE_CHARS = 4096
# A scanner that ends its codes with Enter never pauses this long inside one: a partial
# code left this long (the scanner unplugged mid-code) is thrown away, not glued to the next.
PARTIAL_CODE_TIMEOUT_S = 1.0

# Key -> (unshifted, shifted) on a US keyboard layout, the layout scanners default to.
_US_KEYS: dict[int, tuple[str, str]] = {
    **{getattr(ecodes, f"KEY_{c}"): (c.lower(), c) for c in "ABCDEFGHIJKLMNOPQRSTUVWXYZ"},
    **{getattr(ecodes, f"KEY_{d}"): (d, s) for d, s in zip("1234567890", "!@#$%^&*()")},
    ecodes.KEY_MINUS: ("-", "_"),
    ecodes.KEY_EQUAL: ("=", "+"),
    ecodes.KEY_LEFTBRACE: ("[", "{"),
    ecodes.KEY_RIGHTBRACE: ("]", "}"),
    ecodes.KEY_BACKSLASH: ("\\", "|"),
    ecodes.KEY_SEMICOLON: (";", ":"),
    ecodes.KEY_APOSTROPHE: ("'", '"'),
    ecodes.KEY_GRAVE: ("`", "~"),
    ecodes.KEY_COMMA: (",", "<"),
    ecodes.KEY_DOT: (".", ">"),
    ecodes.KEY_SLASH: ("/", "?"),
    ecodes.KEY_SPACE: (" ", " "),
    ecodes.KEY_TAB: ("\t", "\t"),
    # Some scanners send digits from the keypad; they assume Num Lock is on.
    **{getattr(ecodes, f"KEY_KP{d}"): (d, d) for d in "0123456789"},
    ecodes.KEY_KPDOT: (".", "."),
    ecodes.KEY_KPMINUS: ("-", "-"),
    ecodes.KEY_KPPLUS: ("+", "+"),
    ecodes.KEY_KPASTERISK: ("*", "*"),
    ecodes.KEY_KPSLASH: ("/", "/"),
    ecodes.KEY_KPEQUAL: ("=", "="),
}
_SHIFT_KEYS = frozenset({ecodes.KEY_LEFTSHIFT, ecodes.KEY_RIGHTSHIFT})
_END_KEYS = frozenset({ecodes.KEY_ENTER, ecodes.KEY_KPENTER})
# Keys held for a chord. Scanners type characters missing from the layout as
# Alt + keypad digits (a host code page number); the chord stands for one character
# the station cannot know, so it becomes a single U+FFFD, never its digits.
_CHORD_KEYS = frozenset({
    ecodes.KEY_LEFTCTRL, ecodes.KEY_RIGHTCTRL, ecodes.KEY_LEFTALT, ecodes.KEY_RIGHTALT,
    ecodes.KEY_LEFTMETA, ecodes.KEY_RIGHTMETA,
})
# Lock keys carry no character; any other unknown key does, so it becomes U+FFFD and
# the payload parser refuses the code instead of reading a silently shortened name.
_SILENT_KEYS = frozenset({ecodes.KEY_CAPSLOCK, ecodes.KEY_NUMLOCK, ecodes.KEY_SCROLLLOCK})

KEY_DOWN, KEY_UP, KEY_REPEAT = 1, 0, 2


class KeystrokeDecoder:
    """Turns a scanner's key events back into the text of the code it read.

    Feed it every event as ``(type, code, value, timestamp)``; it returns the code's
    text when one is complete, else ``None``. A code ends at Enter (main or keypad).
    Until the device has sent an Enter it may be a scanner set to send no suffix: then a
    code also ends when the next key comes more than ``char_timeout_s`` after the
    previous one (call ``flush_if_idle`` when no event arrives). Once an Enter has been
    seen, Enter alone ends codes: a slow USB hub or a long name typed as Alt+keypad
    chords may pause longer than ``char_timeout_s`` inside one code. A partial code idle
    for ``partial_timeout_s`` is then discarded.
    Only key-down counts; auto-repeat is ignored; Shift is tracked. After the kernel
    reports ``SYN_DROPPED`` the partial code is thrown away, as characters are missing.
    """

    def __init__(self, char_timeout_s: float = 0.05, *, max_chars: int = MAX_CODE_CHARS,
                 partial_timeout_s: float = PARTIAL_CODE_TIMEOUT_S):
        self.char_timeout_s = char_timeout_s
        self.partial_timeout_s = partial_timeout_s
        self.max_chars = max_chars
        self.ends_with_enter = False  # this device has ended a code with Enter
        self._chars: list[str] = []
        self._shift_down: set[int] = set()
        self._chord_down: set[int] = set()
        self._chord_typed = False
        self._last_key_at: float | None = None
        self._resyncing = False
        self._overflowed = False

    @property
    def pending(self) -> bool:
        """True while part of a code has been typed and not yet completed."""
        return bool(self._chars) or self._overflowed

    @property
    def idle_timeout_s(self) -> float:
        """How long a partial code may wait for its next key before ``flush_if_idle`` acts."""
        return self.partial_timeout_s if self.ends_with_enter else self.char_timeout_s

    def reset(self, *, new_device: bool = False) -> None:
        """Forget any partial code and modifier state (events dropped); with
        ``new_device`` also whether the device ends codes with Enter (reopened: the
        scanner plugged in now may be set differently)."""
        if new_device:
            self.ends_with_enter = False
        self._chars.clear()
        self._shift_down.clear()
        self._chord_down.clear()
        self._chord_typed = False
        self._last_key_at = None
        self._resyncing = False
        self._overflowed = False

    def _finish(self) -> str | None:
        text = "".join(self._chars)
        overflowed = self._overflowed
        self._chars.clear()
        self._overflowed = False
        if overflowed or not text:
            return None
        return text

    def flush_if_idle(self, now: float) -> str | None:
        """Complete the partial code if no key came for ``char_timeout_s`` before ``now``
        (scanners without Enter); for a scanner that ends codes with Enter, discard a
        partial code idle for ``partial_timeout_s``."""
        if not self.pending or self._last_key_at is None or now - self._last_key_at <= self.idle_timeout_s:
            return None
        if not self.ends_with_enter:
            return self._finish()
        logger.warning("a scanned code stopped before its Enter; discarding %d character(s)", len(self._chars))
        self._chars.clear()
        self._overflowed = False
        return None

    def feed(self, event_type: int, code: int, value: int, timestamp: float) -> str | None:
        """Take one input event; return a completed code's text or ``None``."""
        if event_type == ecodes.EV_SYN:
            if code == ecodes.SYN_DROPPED:
                if self._chars:
                    logger.warning("input events were dropped; discarding a partial code")
                self.reset()
                self._resyncing = True
            elif code == ecodes.SYN_REPORT:
                self._resyncing = False
            return None
        if self._resyncing or event_type != ecodes.EV_KEY or value == KEY_REPEAT:
            return None
        if code in _SHIFT_KEYS:
            if value == KEY_DOWN:
                self._shift_down.add(code)
            else:
                self._shift_down.discard(code)
        if code in _CHORD_KEYS and value == KEY_UP:
            self._chord_down.discard(code)
            if not self._chord_down and self._chord_typed:
                self._chord_typed = False
                self._append("\ufffd")
        if value != KEY_DOWN:
            return None

        completed = None
        gap = timestamp - self._last_key_at if self._last_key_at is not None else 0.0
        if gap > self.idle_timeout_s:
            completed = self.flush_if_idle(timestamp)
        self._last_key_at = timestamp

        if code in _CHORD_KEYS:
            self._chord_down.add(code)
            return completed
        if code in _SHIFT_KEYS or code in _SILENT_KEYS:
            return completed
        if self._chord_down:
            self._chord_typed = True
            return completed
        if code in _END_KEYS:
            self.ends_with_enter = True
            return completed if completed is not None else self._finish()
        pair = _US_KEYS.get(code)
        self._append(pair[1 if self._shift_down else 0] if pair else "\ufffd")
        return completed

    def _append(self, char: str) -> None:
        if self._overflowed:
            return
        if len(self._chars) >= self.max_chars:
            logger.warning("scanned code longer than %d characters; discarding it", self.max_chars)
            self._chars.clear()
            self._overflowed = True
            return
        self._chars.append(char)


# EVIOCSCLOCKID = _IOW('E', 0xa0, int): choose the clock of the device's timestamps.
_EVIOCSCLOCKID = 0x400445A0


def _use_monotonic_timestamps(device) -> bool:
    """Ask the kernel for monotonic event times; a Pi without RTC jumps its wall clock."""
    try:
        fcntl.ioctl(device.fd, _EVIOCSCLOCKID, struct.pack("i", time.CLOCK_MONOTONIC))
    except OSError:
        return False
    return True


class HidScannerSource(BlockingReader):
    """A USB QR scanner in keyboard (HID) mode, read with evdev.

    Wiring: plug the scanner into any USB port; pass its stable path,
    ``/dev/input/by-id/usb-<maker>_<model>-event-kbd``. The service user must be in
    group ``input``. With ``grab`` (the default) the station takes the device for
    itself, so the typed codes never reach a login console. If the scanner is
    unplugged, the source logs it and reopens the same path once it reappears.

    Keyboard mode cannot carry Vietnamese text reliably (see docs/scanners.md); prefer
    the serial (CDC) mode with ``scanner_serial.SerialScannerSource``.
    """

    name = "hid"

    def __init__(
        self,
        device_path: str | Path,
        *,
        grab: bool = True,
        char_timeout_s: float = 0.05,
        retry_s: float = 0.5,
    ):
        self.device_path = str(device_path)
        self.grab = grab
        self.retry_s = retry_s
        self.decoder = KeystrokeDecoder(char_timeout_s)
        super().__init__()
        self._device = None
        self._monotonic = False
        self._open()
        # close() writes here to wake the reader blocked in select().
        self._wake_read, self._wake_write = os.pipe()
        os.set_blocking(self._wake_read, False)
        os.set_blocking(self._wake_write, False)

    def _open(self) -> None:
        try:
            device = evdev.InputDevice(self.device_path)
        except OSError as exc:
            hint = " (is the service user in group 'input'?)" if exc.errno == errno.EACCES else ""
            raise DriverError(
                f"cannot open HID scanner {self.device_path}: {exc.strerror or exc}{hint}"
            ) from exc
        if self.grab:
            try:
                device.grab()
            except OSError as exc:
                device.close()
                raise DriverError(
                    f"cannot grab HID scanner {self.device_path}: {exc.strerror or exc} "
                    "(another program holds it?)"
                ) from exc
        self._monotonic = _use_monotonic_timestamps(device)
        self._device = device
        self.decoder.reset(new_device=True)
        logger.info("HID scanner %s (%s) opened%s", self.device_path,
                    getattr(device, "name", "?"), ", grabbed" if self.grab else "")

    def _now(self) -> float:
        return time.monotonic() if self._monotonic else time.time()

    def _drop_device(self) -> None:
        device, self._device = self._device, None
        if device is None:
            return
        if self.grab:
            try:
                device.ungrab()
            except OSError:
                pass  # an unplugged device cannot be ungrabbed; closing releases it
        try:
            device.close()
        except OSError:
            pass

    def _reopen(self) -> bool:
        """Wait for the device path to come back and reopen it; False once closed."""
        def attempt() -> bool:
            if not os.path.exists(self.device_path):
                return False
            try:
                self._open()
            except DriverError as exc:
                logger.warning("%s; retrying", exc)
                return False
            logger.info("HID scanner %s is back", self.device_path)
            return True

        return retry_with_backoff(self._closed, self.retry_s, attempt)

    def captures(self) -> Iterator[ScannedText]:
        """Yield each code the scanner types, until ``close()`` is called."""
        return super().captures()

    def _is_open(self) -> bool:
        return self._device is not None

    def _read_codes(self) -> Iterator[ScannedText]:
        while not self._closed.is_set():
            if self._device is None and not self._reopen():
                return
            timeout = self.decoder.idle_timeout_s if self.decoder.pending else None
            ready, _, _ = select.select([self._device.fd, self._wake_read], [], [], timeout)
            if self._wake_read in ready:
                continue  # close() was called; the loop condition ends it
            if not ready:
                text = self.decoder.flush_if_idle(self._now())
                if text is not None:
                    yield self._scanned(text)
                continue
            try:
                events = list(self._device.read())
            except BlockingIOError:
                continue
            except OSError as exc:
                logger.warning("HID scanner %s lost (%s); waiting for it to come back",
                               self.device_path, exc.strerror or exc)
                self._drop_device()
                continue
            for event in events:
                text = self.decoder.feed(event.type, event.code, event.value, event.timestamp())
                if text is not None:
                    yield self._scanned(text)

    def _scanned(self, text: str) -> ScannedText:
        return ScannedText(text, time.monotonic_ns(), self.device_path, text.encode("utf-8"))

    def _release(self) -> None:
        self._drop_device()
        for fd in (self._wake_read, self._wake_write):
            try:
                os.close(fd)
            except OSError:
                pass
        self._wake_read = self._wake_write = -1

    def _interrupt(self) -> None:
        try:
            os.write(self._wake_write, b"x")  # wakes the reader blocked in select()
        except OSError:
            pass  # pipe full: the reader is already being woken

    def close(self) -> None:
        """Stop reading and release (ungrab) the scanner; safe from any thread, twice."""
        super().close()
