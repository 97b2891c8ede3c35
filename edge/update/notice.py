"""The release notice as the station hears it: the publisher hands each message on the
release topic (qrgate/updates.py RELEASES_TOPIC) to ``ReleaseNotice.receive``, which
writes the announced version into ``/run/qrgate/release-notice``; systemd's
``qrgate-update.path`` sees the file change and starts the updater at once.

The station itself runs unprivileged: it only leaves a note. What is installed is
decided by the updater from signed metadata, never from the notice.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

from qrgate.errors import RecordError
from qrgate.updates import parse_notice

logger = logging.getLogger(__name__)

NOTICE_FILE = "release-notice"


class ReleaseNotice:
    """Leaves the announced version where qrgate-update.path watches."""

    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / NOTICE_FILE
        self.last = b""

    def receive(self, payload: bytes) -> bool:
        """A message on the release topic (paho's thread): True if a note was left."""
        if not payload:  # a retained notice deleted
            return False
        try:
            version = parse_notice(payload)["version"]
        except RecordError as exc:
            logger.warning("ignoring a release notice: %s", exc)
            return False
        # The same notice again (a reconnect) is ignored; a new one for the same
        # version (the operator widened its wave) is passed on.
        if payload == self.last:
            return False

        tmp = self.path.with_name(f".{NOTICE_FILE}.tmp")
        try:
            tmp.write_text(version + "\n", encoding="ascii")
            os.replace(tmp, self.path)
        except OSError as exc:
            logger.error("cannot leave the release notice in %s: %s", self.path, exc)
            return False
        self.last = payload
        logger.info("release %s announced: the updater will look", version)
        return True
