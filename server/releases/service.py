"""The served release repository and the stations' update reports.

``ReleaseService`` serves the files of one TUF repository folder (the server's data
folder, ``releases/``, written by ``qrgate-release publish``) by name, refusing any other
name, and keeps each station's last update report (table ``station_updates``) for the
fleet page. A report is signed by the station's own key (the one its records are signed
with); the answer tells the station what the server has seen from it, which is how an
updater on trial learns that a heartbeat and a record from the new release arrived, and
which releases its waves allow it (``allowed``, server/releases/waves.py).
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from qrgate import protocol
from qrgate.errors import RecordError
from qrgate.updates import CAUSES, REFUSALS, STATES, VERSION_RE, verify_report, version_key
from server.releases.waves import Waves

logger = logging.getLogger(__name__)

METADATA_NAME = re.compile(r"^(?:[1-9]\d{0,8}\.)?(?:root|targets|snapshot|timestamp)\.json$")
TARGET_NAME = re.compile(r"^[0-9a-f]{64}\.[A-Za-z0-9][A-Za-z0-9._-]{0,120}$")
MAX_TEXT = 300


class ReportRefused(Exception):
    def __init__(self, message: str, status: int):
        super().__init__(message)
        self.status = status


class ReleaseService:
    """Release files from ``folder`` (``metadata/``, ``targets/``) and update reports."""

    def __init__(self, folder: Path, storage, clock: Callable[[], float] = time.time):
        self.folder = Path(folder)
        self.storage = storage
        self.clock = clock
        db = storage.sql
        if not db.has_table("station_updates"):
            db.schema(
                """
                CREATE TABLE IF NOT EXISTS station_updates (
                    station_id TEXT PRIMARY KEY, n BIGINT, state TEXT, running TEXT, version TEXT,
                    reason TEXT, at_ms BIGINT, report TEXT);
                """
            )
        self.waves = Waves(storage, self.published, clock)

    def published(self) -> list[str]:
        """The release versions the served targets list (any architecture), oldest first."""
        from tuf.api.metadata import Metadata

        metadata = self.folder / "metadata"
        numbered = [(int(p.name.split(".", 1)[0]), p) for p in metadata.glob("*.targets.json")
                    if p.name.split(".", 1)[0].isdigit()] if metadata.is_dir() else []
        if not numbered:
            return []
        try:
            targets = Metadata.from_file(str(max(numbered)[1])).signed.targets
        except Exception as exc:  # a damaged file is the publisher's to mend; serve nothing new
            logger.error("cannot read the served targets: %s", exc)
            return []
        versions = {(info.unrecognized_fields.get("qrgate") or {}).get("version") for info in targets.values()}
        return sorted((v for v in versions if isinstance(v, str) and VERSION_RE.match(v)), key=version_key)

    def file(self, kind: str, name: str) -> Path | None:
        """The file a station asked for, or None (unknown name, or not published)."""
        pattern = METADATA_NAME if kind == "metadata" else TARGET_NAME if kind == "targets" else None
        if pattern is None or not pattern.match(name):
            return None
        path = self.folder / kind / name
        return path if path.is_file() else None

    def report(self, signed: dict[str, Any]) -> dict[str, Any]:
        """Keep a station's update report; answer what the server has seen from it."""
        station_id = signed.get("station_id")
        if not isinstance(station_id, str) or not protocol.STATION_ID_RE.match(station_id):
            raise ReportRefused("no station id", 400)
        info = self.storage.station(station_id)
        if info is None:
            raise ReportRefused("unknown station", 403)
        if info.status == "retired":
            raise ReportRefused("retired", 403)
        keys = self.storage.station_keys(station_id)
        body = None
        for _, text in sorted(keys, reverse=True):  # the newest key first
            try:
                body = verify_report(protocol.public_key_from_text(text), signed)
                break
            except (RecordError, ValueError):
                continue
        if body is None:
            raise ReportRefused("bad signature", 403)
        n = body.get("n")
        update = body.get("update")
        if not isinstance(n, int) or isinstance(n, bool) or not isinstance(update, dict):
            raise ReportRefused("a report has n (a count) and update (an object)", 400)
        state = update.get("state")
        if state not in STATES:
            raise ReportRefused(f"unknown state {state!r}", 400)
        now_ms = int(self.clock() * 1000)
        db = self.storage.sql
        with db.transaction(serial=f"station-update-{station_id}"):
            last = db.value("SELECT n FROM station_updates WHERE station_id = ?", [station_id])
            stored = last is None or n > last
            if stored:
                db.execute(
                    "INSERT INTO station_updates (station_id, n, state, running, version, reason, at_ms, report)"
                    " VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (station_id) DO UPDATE SET n = excluded.n,"
                    " state = excluded.state, running = excluded.running, version = excluded.version,"
                    " reason = excluded.reason, at_ms = excluded.at_ms, report = excluded.report",
                    [station_id, n, state, _text(update.get("running")), _text(update.get("version")),
                     _text(update.get("reason")), now_ms, json.dumps(update, ensure_ascii=False)[:2000]])
        if stored and state in ("kept", "rolled_back", "refused", "failed"):
            logger.info("station %s update %s: %s %s", station_id, state, update.get("version", ""),
                        update.get("reason", ""))
        if stored:
            stopped = self.waves.record(station_id, _text(update.get("version")), state)
            if stopped is not None:
                logger.error("release %s: the wave stopped by itself: %s", stopped["version"], stopped["reason"])
        seen = db.one("SELECT fw, last_seen_ms, online FROM station_status WHERE station_id = ?", [station_id]) \
            if db.has_table("station_status") else None
        return {
            "stored": stored, "server_ms": now_ms,
            "fw": (seen[0] or "") if seen else "", "last_seen_ms": seen[1] if seen else None,
            "online": bool(seen[2]) if seen else False,
            "checkins": self.storage.count_checkins(station_id),
            "allowed": self.waves.allowed(station_id),
        }

    def station_updates(self) -> dict[str, dict[str, Any]]:
        """Each station's last update report, for the fleet page: state, running, version,
        reason (the station's words, English), refusal and cause (codes to translate:
        qrgate/updates.py REFUSALS, CAUSES) and at_ms (when the server received it)."""
        rows = self.storage.sql.dicts(
            "SELECT station_id, state, running, version, reason, at_ms, report FROM station_updates")
        out = {}
        for r in rows:
            try:
                report = json.loads(r.pop("report") or "{}")
            except ValueError:
                report = {}
            r["refusal"] = report.get("refusal") if report.get("refusal") in REFUSALS else ""
            r["cause"] = report.get("cause") if report.get("cause") in CAUSES else ""
            out[r.pop("station_id")] = r
        return out


def _text(value: Any) -> str:
    return "".join(ch for ch in str(value or "") if ch.isprintable())[:MAX_TEXT]


def attach(app, folder: Path, storage, clock: Callable[[], float] = time.time) -> ReleaseService:
    """Serve the release repository in ``folder`` from this app (create_app calls it)."""
    service = ReleaseService(folder, storage, clock)
    app.state.releases = service
    return service
