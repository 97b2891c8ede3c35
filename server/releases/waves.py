"""Release waves: which stations may take which signed release (docs/updates.md, "Waves").

A published release reaches no station until the operator starts a wave for it: a
percentage of the fleet, named groups of stations, or both. A station is in a wave when
its group is named, or when its bucket (a hash of the version and its id, 0-99) is below
the percentage, so raising the percentage only adds stations, and each release starts
with a different set of stations. The station asks before each check (its signed update
report); the answer lists the versions its waves allow, and it takes the newest of those
above the one it runs: a bus back after a week skips the releases in between.

A wave stops by itself when the stations that failed or rolled the release back reach
``stop_at`` percent of the stations it targets (at least one): stations not yet updated
no longer get it, those that kept it keep it. The operator can widen, stop or resume it;
once resumed, only failures after the resumption count towards stopping it again.

Waves only choose among releases the station verifies itself (TUF): a server, or anyone
between it and a station, can hold a station back, never give it a release not signed.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import re
import time
from collections.abc import Callable
from typing import Any

from qrgate import protocol
from qrgate.errors import UserError
from qrgate.updates import VERSION_RE, version_key
from server.audit import register_actions

logger = logging.getLogger(__name__)

register_actions("qrgate.release.wave", "qrgate.release.wave_stopped", "qrgate.release.wave_resumed",
                 "qrgate.station.group")
GROUP_RE = re.compile(r"^[a-z0-9][a-z0-9_-]{0,39}$")
MAX_GROUPS = 20
DEFAULT_STOP_AT = 10  # percent of the wave's stations failing that stops it
FAILED = ("rolled_back", "failed")
UNDER_WAY = ("downloading", "installing", "trying")
SCHEMA = """
CREATE TABLE IF NOT EXISTS release_waves (
    version TEXT PRIMARY KEY, grps TEXT, percent INTEGER, stop_at INTEGER, state TEXT, reason TEXT,
    started_ms BIGINT, changed_ms BIGINT);
CREATE TABLE IF NOT EXISTS release_outcomes (
    version TEXT, station_id TEXT, state TEXT, at_ms BIGINT, PRIMARY KEY (version, station_id));
CREATE TABLE IF NOT EXISTS station_groups (station_id TEXT PRIMARY KEY, grp TEXT);
"""


class WaveError(UserError):
    """A wave or group the operator asked for cannot be: ``key`` names the words for it
    (releases.error.*, registered by server/releases/wave_routes.py)."""

    def __init__(self, key: str, message: str):
        super().__init__(message)
        self.key = key


def bucket(version: str, station_id: str) -> int:
    """The station's place (0-99) in this release's percentage."""
    digest = hashlib.sha256(f"{version}\n{station_id}".encode()).digest()
    return int.from_bytes(digest[:8], "big") % 100


def parse_groups(text: Any) -> list[str]:
    """Group names from a form or the command line ("pilot, buses-hn"), checked."""
    names = [part.strip().lower() for part in re.split(r"[,\s]+", str(text or "")[:1000]) if part.strip()]
    bad = [n for n in names if not GROUP_RE.match(n)]
    if bad:
        raise WaveError("group", f"not a group name: {bad[0][:40]!r} (a-z, 0-9, - and _, up to 40)")
    if len(names) > MAX_GROUPS:
        raise WaveError("group", f"at most {MAX_GROUPS} groups in a wave")
    return sorted(set(names))


def parse_percent(value: Any, name: str = "percent") -> int:
    try:
        number = int(str(value).strip().rstrip("%") or "0")
    except ValueError:
        raise WaveError("percent", f"{name}: a whole number from 0 to 100") from None
    if not 0 <= number <= 100:
        raise WaveError("percent", f"{name}: a whole number from 0 to 100")
    return number


class Waves:
    """Waves, station groups and each station's outcome per release (see the module docstring)."""

    def __init__(self, storage, published: Callable[[], list[str]], clock: Callable[[], float] = time.time):
        self.storage = storage
        self.published = published
        self.clock = clock
        db = storage.sql
        if not db.has_table("release_waves"):
            db.schema(SCHEMA)
            # A server upgraded to waves: what it already served had reached every station.
            now = self._now()
            for version in published():
                db.execute("INSERT INTO release_waves (version, grps, percent, stop_at, state, reason, started_ms,"
                           " changed_ms) VALUES (?, '[]', 100, ?, 'rolling', 'published before waves', ?, ?)"
                           " ON CONFLICT (version) DO NOTHING", [version, DEFAULT_STOP_AT, now, now])

    def _now(self) -> int:
        return int(self.clock() * 1000)

    # --- the operator's side ---
    def start(self, version: str, percent: int, groups: list[str], stop_at: int = DEFAULT_STOP_AT) -> dict:
        """Start (or reshape) the wave of a published release."""
        if not VERSION_RE.match(version or ""):
            raise WaveError("unpublished", f"not a release version: {version[:20]!r}")
        if version not in self.published():
            raise WaveError("unpublished", f"release {version} is not published on this server (qrgate-release publish)")
        if percent == 0 and not groups:
            raise WaveError("empty", "a wave needs a percentage above 0 or at least one group")
        now = self._now()
        self.storage.sql.execute(
            "INSERT INTO release_waves (version, grps, percent, stop_at, state, reason, started_ms, changed_ms)"
            " VALUES (?, ?, ?, ?, 'rolling', '', ?, ?) ON CONFLICT (version) DO UPDATE SET grps = excluded.grps,"
            " percent = excluded.percent, stop_at = excluded.stop_at, state = 'rolling', reason = '',"
            " changed_ms = excluded.changed_ms,"
            # Resumed: failures before count no more towards the automatic stop (widened: they do).
            " started_ms = CASE WHEN release_waves.state = 'stopped' THEN excluded.started_ms"
            " ELSE release_waves.started_ms END",
            [version, json.dumps(groups), percent, stop_at, now, now])
        logger.warning("release %s: wave to %d%% of stations%s, stops at %d%% failures", version, percent,
                       f" and group(s) {', '.join(groups)}" if groups else "", stop_at)
        return self.wave(version)

    def stop(self, version: str, reason: str = "stopped by the operator") -> dict:
        wave = self.wave(version)
        if wave is None:
            raise WaveError("no_wave", f"release {version[:20]} has no wave")
        self.storage.sql.execute("UPDATE release_waves SET state = 'stopped', reason = ?, changed_ms = ?"
                                 " WHERE version = ?", [reason[:300], self._now(), version])
        logger.warning("release %s: wave stopped (%s)", version, reason)
        return self.wave(version)

    def resume(self, version: str) -> dict:
        wave = self.wave(version)
        if wave is None:
            raise WaveError("no_wave", f"release {version[:20]} has no wave")
        return self.start(version, wave["percent"], wave["groups"], wave["stop_at"])

    def set_group(self, station_id: str, group: str) -> None:
        """Put a station in a named group ("" takes it out)."""
        if not protocol.STATION_ID_RE.match(station_id) or self.storage.station(station_id) is None:
            raise WaveError("station", f"no station {station_id[:40]!r}")
        names = parse_groups(group)
        if len(names) > 1:
            raise WaveError("one_group", "a station is in one group")
        db = self.storage.sql
        if names:
            db.execute("INSERT INTO station_groups (station_id, grp) VALUES (?, ?) ON CONFLICT (station_id)"
                       " DO UPDATE SET grp = excluded.grp", [station_id, names[0]])
        else:
            db.execute("DELETE FROM station_groups WHERE station_id = ?", [station_id])

    def groups(self) -> dict[str, str]:
        return dict(self.storage.sql.rows("SELECT station_id, grp FROM station_groups"))

    # --- the station's side ---
    def allowed(self, station_id: str) -> list[str]:
        """The versions the station's waves let it take, oldest first."""
        group = self.storage.sql.value("SELECT grp FROM station_groups WHERE station_id = ?", [station_id])
        out = [w["version"] for w in self._waves() if w["state"] == "rolling" and self._includes(w, station_id, group)]
        return sorted(out, key=version_key)

    def record(self, station_id: str, version: str, state: str) -> dict | None:
        """A station's report about ``version``; the wave if this report stopped it."""
        if not VERSION_RE.match(version or "") or state == "idle":
            return None
        db = self.storage.sql
        # A station repeats its last outcome in every later report: it is dated when it changed.
        db.execute("INSERT INTO release_outcomes (version, station_id, state, at_ms) VALUES (?, ?, ?, ?)"
                   " ON CONFLICT (version, station_id) DO UPDATE SET state = excluded.state, at_ms = excluded.at_ms"
                   " WHERE release_outcomes.state != excluded.state",
                   [version, station_id, state, self._now()])
        if state not in FAILED:
            return None
        wave = self.wave(version)
        if wave is None or wave["state"] != "rolling":
            return None
        failed = db.value("SELECT count(*) FROM release_outcomes WHERE version = ? AND state IN (?, ?)"
                          " AND at_ms >= ?", [version, *FAILED, wave["started_ms"]], 0)
        limit = max(1, math.ceil(wave["stop_at"] * max(wave["targeted"], 1) / 100))
        if failed >= limit:
            return self.stop(version, f"{failed} of {wave['targeted']} station(s) failed or rolled back "
                                      f"(the limit is {wave['stop_at']}%)")
        return None

    # --- what the fleet page shows ---
    def wave(self, version: str) -> dict | None:
        found = self.view(version)
        return found[0] if found else None

    def view(self, version: str | None = None) -> list[dict[str, Any]]:
        """Every wave (or ``version``'s), newest release first, with what its stations did."""
        waves = [w for w in self._waves() if version is None or w["version"] == version]
        if not waves:
            return []
        stations = self.fleet()
        groups = self.groups()
        out = []
        for w in waves:
            targeted = {s for s in stations if self._includes(w, s, groups.get(s))}
            outcomes = dict(self.storage.sql.rows(
                "SELECT station_id, state FROM release_outcomes WHERE version = ?", [w["version"]]))
            counts = {"kept": 0, "failed": 0, "rolled_back": 0, "under_way": 0, "refused": 0}
            for station_id, state in outcomes.items():
                if state in counts:
                    counts[state] += 1
                elif state in UNDER_WAY:
                    counts["under_way"] += 1
            counts["not_seen"] = len(targeted - set(outcomes))
            out.append({**w, "targeted": len(targeted), "counts": counts})
        return sorted(out, key=lambda w: version_key(w["version"]), reverse=True)

    def _waves(self) -> list[dict[str, Any]]:
        rows = self.storage.sql.dicts("SELECT version, grps, percent, stop_at, state, reason, started_ms, changed_ms"
                                      " FROM release_waves")
        for r in rows:
            r["groups"] = json.loads(r.pop("grps") or "[]")
        return rows

    def fleet(self) -> list[str]:
        """The stations a wave can reach: not retired, neither a phone nor a self check-in source."""
        db = self.storage.sql
        query = "SELECT station_id FROM stations WHERE status != 'retired'"
        for table in ("self_stations", "phone_devices"):
            if db.has_table(table):
                query += f" AND station_id NOT IN (SELECT station_id FROM {table} WHERE station_id IS NOT NULL)"
        return [r[0] for r in db.rows(query)]

    @staticmethod
    def _includes(wave: dict, station_id: str, group: str | None) -> bool:
        return bool(group and group in wave["groups"]) or bucket(wave["version"], station_id) < wave["percent"]
