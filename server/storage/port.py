"""The server's storage port: what the bridge and the web need from a database.

``Storage`` is the contract both engines keep (SqliteStorage in sqlite.py, PostgresStorage
in postgres.py); the values they hand back and the ingest window they both enforce sit
here beside it, so neither engine imports the other for them.
"""

from __future__ import annotations

import datetime
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from server.storage.sql import Database


@dataclass(frozen=True, slots=True)
class StationInfo:
    station_id: str
    public_key: str  # base64 of the raw Ed25519 key
    venue_id: int
    status: str  # active / retired


@dataclass(frozen=True, slots=True)
class StoreResult:
    stored: tuple[int, ...]  # newly stored or already stored identically
    new: int  # how many of ``stored`` were new
    refused: Mapping[int, str]


@dataclass(frozen=True, slots=True)
class IngestWindow:
    """The times a station's record may put in the database (server.toml ``[ingest]``):
    from ``earliest_ms`` to ``ahead_ms`` past the server's clock at the moment of storing,
    for every time a synchronised clock gave or a clock record corrected (an unsynced
    guess is kept from 1970 on until corrected: checkin_out_of_window).

    Anything else is refused as ``bad_time``, so every stored time is one a page, a
    report or a month partition can hold (a signed record in year 9999, or a clock
    record moving a boot's check-ins there, used to break the history pages for good).
    """

    earliest_ms: int
    ahead_ms: int

    @classmethod
    def from_config(cls, section) -> IngestWindow:
        """From a server.toml ``[ingest]`` section (server.config.IngestSection, checked there)."""
        day = datetime.date.fromisoformat(section.earliest)
        start = datetime.datetime(day.year, day.month, day.day, tzinfo=datetime.timezone.utc)
        return cls(int(start.timestamp()) * 1000, section.max_ahead_s * 1000)

    def bounds(self, now_ms: int) -> tuple[int, int]:
        """(lowest, highest) time in ms allowed when the server's clock says ``now_ms``."""
        return self.earliest_ms, now_ms + self.ahead_ms


def checkin_out_of_window(rec: Mapping[str, Any], corrected: int | None, bounds: tuple[int, int]) -> bool:
    """True if a check-in's times are outside the window ``bounds`` (IngestWindow.bounds).

    A synchronised clock's ``ts`` must be inside it. An unsynchronised one is a guess the
    server corrects once the boot's clock record is known (``corrected``: ``mono + base``),
    and that time must be inside; until then the check-in is kept at the station's
    ``ts``, which must lie between 1970 (where a clock never set starts) and the window's
    end: a time any page, report or partition can hold, marked as unsynchronised."""
    lo, hi = bounds
    ts = rec["ts"]
    if rec["sync"]:
        return not lo <= ts <= hi
    if corrected is not None and not lo <= corrected <= hi:
        return True
    return not 0 <= ts <= hi


def clock_out_of_window(rec: Mapping[str, Any], bounds: tuple[int, int]) -> bool:
    """True if a clock record's own times are outside the window: its ``ts`` and the wall
    time it gives its own moment, ``mono + base`` (the check-ins it corrects are checked
    by the storage, which has them)."""
    lo, hi = bounds
    return not (lo <= rec["ts"] <= hi and lo <= rec["mono"] + rec["base"] <= hi)


class Storage(Protocol):
    """What the bridge and the web need from a database; SQLite now, PostgreSQL later."""

    def add_venue(self, name: str, kind: str = "", address: str = "") -> int: ...
    def add_station(self, station_id: str, public_key: str, venue_id: int) -> None: ...
    def station_keys(self, station_id: str) -> list[tuple[int, str]]: ...
    def rotate_station_key(self, station_id: str, public_key: str, from_seq: int) -> None: ...
    def station(self, station_id: str) -> StationInfo | None: ...
    def store_records(self, station: StationInfo, records: Iterable[Mapping[str, Any]],
                      window: IngestWindow | None = None) -> StoreResult: ...
    def latest_checkins(self, limit: int = 50, before_id: int | None = None) -> list[dict[str, Any]]: ...
    def count_checkins(self, station_id: str | None = None) -> int: ...
    def count_refusal(self, station_id: str, reason: str) -> None: ...
    def refusal_counts(self) -> dict[str, int]: ...
    # The server's own tables (accounts, venues' details, audit, ...): server/storage/sql.py.
    sql: Database
