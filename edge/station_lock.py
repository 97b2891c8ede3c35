"""One station process per state folder: the lock a running station holds."""

from __future__ import annotations

import fcntl
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from qrgate.errors import UserError

LOCK_FILE = "station.lock"


@contextmanager
def station_lock(state_dir: Path) -> Iterator[None]:
    """Held by a running station; tools that must not run beside it (key rotation,
    selftest's check) take it too. Raises UserError while another process holds it."""
    state_dir.mkdir(parents=True, exist_ok=True)
    fd = os.open(state_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(fd)
        raise UserError(f"the station using {state_dir} is running: stop it first (systemctl stop qrgate-edge)") from None
    try:
        yield
    finally:
        fcntl.flock(fd, fcntl.LOCK_UN)
        os.close(fd)
