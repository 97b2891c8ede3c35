"""Replacing a station's signing key without losing what is still in its outbox.

The station makes a new key, asks the server (over HTTPS, the request signed by the
current key) to accept it from the next sequence number on, and only then puts it in
place. Records already in the outbox keep their old signatures, which the server still
checks against the old key. Run it with the station stopped; a rotation cut short is
finished by running it again (the server recognises the retry).
"""

from __future__ import annotations

import base64
import logging
import os
import time

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from edge.config import StationConfig
from edge.station_lock import station_lock
from provisioning.enrol_client import post_json
from qrgate import protocol
from qrgate.keyfiles import load_or_create_key

logger = logging.getLogger(__name__)


def rotate_key(config: StationConfig, server_url: str, *, timeout: float = 20.0) -> int:
    """Rotate the station's key; return the first seq the new key signs."""
    from edge.app import STATION_KEY_FILE
    from edge.queue.outbox import Outbox
    from qrgate.keyfiles import load_or_create_secret

    state = config.state_dir
    key_path = state / STATION_KEY_FILE
    new_path = key_path.with_name(key_path.name + ".new")
    with station_lock(state):
        current = load_or_create_key(key_path)
        box = Outbox(state / "outbox.sqlite3", station_id=config.station.id, key=current,
                     person_secret=load_or_create_secret(state / "presence.secret"))
        from_seq = box.next_seq()
        box.close()
        # A rotation cut short left its new key here: offer the same one again.
        new = load_or_create_key(new_path, Ed25519PrivateKey)
        body = {"v": 1, "station_id": config.station.id,
                "new_public_key": protocol.public_key_to_text(new.public_key()),
                "from_seq": from_seq, "ts_ms": int(time.time() * 1000)}
        sig = current.sign(protocol.ROTATE_SIGNING_CONTEXT + protocol.canonical_json(body))
        post_json(server_url.rstrip("/") + "/api/rotate-key", {**body, "sig": base64.b64encode(sig).decode("ascii")},
                  refused="the server refused the new key", timeout=timeout)
        os.replace(new_path, key_path)
        fd = os.open(state, os.O_RDONLY)
        try:
            os.fsync(fd)  # the rename itself must survive a power cut
        finally:
            os.close(fd)
    logger.info("station %s signs with its new key from seq %d", config.station.id, from_seq)
    return from_seq

