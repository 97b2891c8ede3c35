"""Self check-in from a phone: the venue poster's QR opens a page where a person declares
coming in or going out; the server signs the record as the venue's pseudo-station
``self-<venue id>`` so it lands in the same ``checkins`` table as station scans.

Which stations are self-declared is listed in the ``self_stations`` table; their records
are what a person typed, not what a card proved.
"""

from __future__ import annotations

import logging
import re
import threading
import time
from collections.abc import Callable
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from qrgate import protocol
from server.accounts.accounts import server_secret
from server.storage.sql import POSTGRESQL
from server.venues.venues import Venue, clean_text

logger = logging.getLogger(__name__)

_CCCD = re.compile(r"\d{9}|\d{12}", re.ASCII)  # chip ID card (12) or the old ID card (9)
_BHYT = re.compile(r"[A-Z]{2}\d{13}", re.ASCII)  # health-insurance card number


class SelfCheckinError(ValueError):
    """Input refused; ``problems`` maps each field to a Vietnamese message."""

    def __init__(self, problems: dict[str, str]):
        super().__init__("; ".join(problems.values()))
        self.problems = problems


def self_station_id(venue_id: int) -> str:
    return f"self-{venue_id}"


def parse_declaration(id_number: str, name: str, birth_year: str, direction: str,
                      this_year: int) -> dict[str, Any]:
    """Check what a person typed; return the record's ``kind``, ``dir`` and ``person``."""
    problems = {}
    id_number = re.sub(r"[\s.\-]", "", str(id_number or "")).upper()
    if _CCCD.fullmatch(id_number):
        kind = "cccd"
    elif _BHYT.fullmatch(id_number):
        kind = "bhyt"
    else:
        kind = ""
        problems["id_number"] = "Số giấy tờ không đúng: CCCD 12 chữ số, CMND 9 chữ số hoặc mã thẻ BHYT 15 ký tự."
    name = clean_text(name)
    if not name:
        problems["name"] = "Hãy nhập họ và tên."
    elif len(name) > 100:
        problems["name"] = f"Họ tên quá dài: tối đa 100 ký tự (đang có {len(name)})."
    elif any(ch.isdigit() or ch in "<>{}[]=|\\/@#$%^&*_+;:\"" for ch in name):
        problems["name"] = "Họ tên chỉ gồm chữ cái, dấu cách, dấu nháy và dấu gạch."
    birth = ""
    year = str(birth_year or "").strip()
    if year:
        if not (year.isascii() and year.isdigit() and 1900 <= int(year) <= this_year):
            problems["birth_year"] = f"Năm sinh phải từ 1900 đến {this_year}."
        else:
            birth = f"{int(year):04d}-**-**"
    if direction not in protocol.DIRECTIONS:
        problems["direction"] = "Hãy chọn Vào hoặc Ra."
    if problems:
        raise SelfCheckinError(problems)
    return {"kind": kind, "dir": direction, "person": {"id": id_number, "name": name, "birth": birth, "sex": ""}}


class SelfCheckin:
    """Signs and stores self-declared check-ins with a key only the server holds."""

    def __init__(self, storage, clock: Callable[[], float] = time.time):
        self.storage = storage
        self.clock = clock
        self._key = Ed25519PrivateKey.from_private_bytes(server_secret(storage, "self-checkin-ed25519"))
        self._lock = threading.Lock()  # one sequence number per record, within this process
        db = storage.sql
        if not db.has_table("self_stations"):
            db.schema("CREATE TABLE IF NOT EXISTS self_stations"
                      " (station_id TEXT PRIMARY KEY, venue_id BIGINT NOT NULL)")
        # The largest seq stored for a station. On PostgreSQL the (station, seq) key is in
        # checkin_keys; the partitioned checkins table has no index on it.
        table = "checkin_keys" if db.dialect == POSTGRESQL else "checkins"
        self._last_seq = f"SELECT max(seq) FROM {table} WHERE station_id = ?"

    def station_for(self, venue: Venue):
        station_id = self_station_id(venue.id)
        station = self.storage.station(station_id)
        if station is None:
            self.storage.add_station(station_id, protocol.public_key_to_text(self._key.public_key()), venue.id)
            self.storage.sql.execute("INSERT INTO self_stations (station_id, venue_id) VALUES (?, ?)"
                                     " ON CONFLICT (station_id) DO NOTHING", [station_id, venue.id])
            station = self.storage.station(station_id)
        return station

    def check_in(self, venue: Venue, declaration: dict[str, Any]) -> dict[str, Any]:
        """Store one declaration (from ``parse_declaration``); return the stored record."""
        station = self.station_for(venue)
        with self._lock:
            for _ in range(5):
                last = self.storage.sql.value(self._last_seq, [station.station_id], 0)
                now_ms = int(self.clock() * 1000)
                record = protocol.sign_record({
                    "v": protocol.VERSION, "type": "checkin", "st": station.station_id, "seq": last + 1,
                    "ts": now_ms, "mono": int(time.monotonic() * 1000), "boot": "server-self-checkin", "sync": True,
                    **declaration,
                }, self._key)
                protocol.validate_record(record)
                result = self.storage.store_records(station, [record])
                if result.new == 1:
                    logger.info("self check-in %s#%d at venue %d", station.station_id, record["seq"], venue.id)
                    return record
                # Another server process took this number first: take the next one.
        raise RuntimeError(f"could not store a self check-in for {station.station_id}")
