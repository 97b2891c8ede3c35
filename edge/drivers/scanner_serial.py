"""USB QR scanners in serial (CDC/ACM) mode, read with pyserial: the exact bytes of each code."""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator

import serial

from edge.drivers.ports import BlockingReader, ScannedText, retry_with_backoff
from qrgate.errors import DriverError, UserError

logger = logging.getLogger(__name__)

MAX_CODE_BYTES = 4096
UTF8_BOM = b"\xef\xbb\xbf"
# How long one read may block; bounds how long close() takes to end captures().
READ_TIMEOUT_S = 0.1
_LINE_ENDS = (b"\r", b"\n")


class CodeSplitter:
    """Cuts a serial byte stream into codes at the scanner's terminator.

    With a CR or LF terminator (line mode) both CR and LF end a code, so CRLF and LF
    scanners work unconfigured and the empty piece between CR and LF is skipped. Any
    other terminator (e.g. ``b"\\x03"``) is the only end, so multi-line codes survive.
    A leading UTF-8 BOM is removed. Codes longer than ``max_bytes`` are discarded up
    to their terminator, with a log line.
    """

    def __init__(self, terminator: bytes = b"\r", *, max_bytes: int = MAX_CODE_BYTES):
        if not terminator:
            raise UserError("serial scanner terminator must not be empty")
        self.terminator = terminator
        self.line_mode = terminator in _LINE_ENDS
        self.max_bytes = max_bytes
        self._buffer = bytearray()
        self._discarding = False

    def reset(self) -> None:
        """Drop a partial code (the port was lost mid-code)."""
        self._buffer.clear()
        self._discarding = False

    def _next_end(self) -> tuple[int, int]:
        """Position and length of the first terminator in the buffer, or (-1, 0)."""
        if not self.line_mode:
            return self._buffer.find(self.terminator), len(self.terminator)
        positions = [p for p in (self._buffer.find(b"\r"), self._buffer.find(b"\n")) if p >= 0]
        return (min(positions), 1) if positions else (-1, 0)

    def feed(self, data: bytes) -> list[bytes]:
        """Add received bytes; return the codes they completed, oldest first."""
        self._buffer += data
        codes = []
        while True:
            end, length = self._next_end()
            if end < 0:
                break
            code = bytes(self._buffer[:end])
            del self._buffer[: end + length]
            if self._discarding:
                self._discarding = False
                continue
            if len(code) > self.max_bytes:
                logger.warning("serial code of %d bytes is longer than %d; discarding it",
                               len(code), self.max_bytes)
                continue
            if code.startswith(UTF8_BOM):
                code = code[len(UTF8_BOM):]
            if code:
                codes.append(code)
        if len(self._buffer) > self.max_bytes:
            if not self._discarding:
                logger.warning("serial code longer than %d bytes without terminator; "
                               "discarding it", self.max_bytes)
            self._discarding = True
            # Keep a terminator's worth of tail: a multi-byte terminator may be split.
            keep = len(self.terminator) - 1 if not self.line_mode else 0
            del self._buffer[: len(self._buffer) - keep]
        return codes


class SerialScannerSource(BlockingReader):
    """A USB QR scanner in serial mode (USB CDC/ACM, appears as ``/dev/ttyACM0``).

    Wiring: plug the scanner into any USB port after setting it to USB-serial (COM port
    emulation) mode, UTF-8 output and a CR suffix (docs/scanners.md). Pass the stable
    path ``/dev/serial/by-id/usb-<maker>_<model>-if00`` or any pyserial URL
    (``rfc2217://host:port``, ``loop://``). The service user must be in group
    ``dialout``. ``raw`` of each code is the exact bytes the scanner sent (without BOM
    and terminator) and ``text`` their UTF-8 decoding with replacement characters: the
    payload parser judges the encoding from ``raw``. If the port disappears
    (unplugged), the source logs it and reopens it with growing back-off.
    """

    name = "serial"

    def __init__(
        self,
        url_or_path: str,
        *,
        baudrate: int = 9600,
        terminator: bytes | str = b"\r",
        retry_s: float = 0.5,
    ):
        self.url = str(url_or_path)
        self.baudrate = baudrate
        self.retry_s = retry_s
        if isinstance(terminator, str):
            terminator = terminator.encode("utf-8")
        self.splitter = CodeSplitter(terminator)
        super().__init__()
        self._port = self._open()

    def _open(self) -> serial.SerialBase:
        try:
            port = serial.serial_for_url(self.url, baudrate=self.baudrate,
                                         timeout=READ_TIMEOUT_S)
        except (serial.SerialException, OSError, ValueError) as exc:
            raise DriverError(f"cannot open serial scanner {self.url}: {exc}") from exc
        self.splitter.reset()
        logger.info("serial scanner %s opened at %d baud", self.url, self.baudrate)
        return port

    def _close_port(self) -> None:
        port, self._port = self._port, None
        if port is not None:
            try:
                port.close()
            except (serial.SerialException, OSError):
                pass  # already gone with the device

    def _reopen(self) -> bool:
        """Reopen the port with growing back-off; False once ``close()`` is called."""
        def attempt() -> bool:
            try:
                self._port = self._open()
            except DriverError as exc:
                logger.debug("%s; retrying", exc)
                return False
            logger.info("serial scanner %s is back", self.url)
            return True

        return retry_with_backoff(self._closed, self.retry_s, attempt)

    def captures(self) -> Iterator[ScannedText]:
        """Yield each code the scanner sends, until ``close()`` is called."""
        return super().captures()

    def _is_open(self) -> bool:
        return self._port is not None

    def _release(self) -> None:
        self._close_port()

    def _read_codes(self) -> Iterator[ScannedText]:
        while not self._closed.is_set():
            if self._port is None and not self._reopen():
                return
            try:
                # Block for the first byte (up to the timeout), then take what has come.
                data = self._port.read(max(1, self._port.in_waiting))
            except (serial.SerialException, OSError) as exc:
                logger.warning("serial scanner %s lost (%s); reopening", self.url, exc)
                self._close_port()
                continue
            if not data:
                continue
            for raw in self.splitter.feed(data):
                yield ScannedText(raw.decode("utf-8", "replace"), time.monotonic_ns(),
                                  self.url, raw)

    def close(self) -> None:
        """Stop reading and close the port; ``captures()`` ends within a read timeout."""
        super().close()
