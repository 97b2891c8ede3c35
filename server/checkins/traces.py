"""Contact tracing (F16) as health officers run it, from the pages and the API.

Tracing is for health officers only and only inside their areas (server/checkins/scope.py);
each run (and each CSV export of one) is audited as ``qrgate.trace.run``. A trace names
its person by one of their check-ins (404 outside the officer's areas, so check-in ids
reveal nothing) or by card kind and id number. The pairing and the contacts are
server/checkins/tracing.py's (``tracer_for`` picks the engine's
tracer); this module adds the dates, the audit and the names a page shows.
"""

from __future__ import annotations

import datetime as dt
import re
from typing import TYPE_CHECKING

from fastapi import HTTPException

from qrgate import persons
from server.checkins.scope import Scope, venue_names
from server.checkins.tracing import DAY_MS
from server.checkins.views import INVALID_TIME, local_time
from server.checkins.tracing import tracer_for
from server.storage.sql import in_list

if TYPE_CHECKING:
    from server.web.deps import Services, Visitor

MAX_TRACE_DAYS = 62
CARD_KINDS = ("cccd", "bhyt", "national", "pass")
_ID_TEXT = re.compile(r"[0-9A-Z*]{3,20}", re.ASCII)
_DATE = re.compile(r"\d{4}-\d{2}-\d{2}", re.ASCII)
# A birth date as people write it (30/11/2001, **/**/1985): stored as the card says it.
_BIRTH_DMY = re.compile(r"(\d{1,2}|\*\*)[/.-](\d{1,2}|\*\*)[/.-](\d{4})", re.ASCII)


class TraceInputError(ValueError):
    """A trace request that cannot be run as asked; the message (Vietnamese) says why."""


# -- whom to trace -------------------------------------------------------------------------

def person_from_checkin(storage, scope: Scope, checkin_id: int) -> str:
    """The person key of a check-in the officer reads in full; 404 for any other."""
    row = storage.sql.one("SELECT person_key, venue_id FROM checkins WHERE id = ?", [checkin_id])
    if row is None or row[1] not in scope.full_ids:
        raise HTTPException(404)
    return row[0]


def checkin_card(storage, checkin_id: int) -> tuple:
    """(kind, id_number, name, birth, venue_id) of a check-in, unmasked."""
    return storage.sql.one("SELECT kind, id_number, name, birth, venue_id FROM checkins WHERE id = ?", [checkin_id])


def person_from_card(kind: str | None, id_number: str, name: str, birth: str) -> str:
    if kind not in CARD_KINDS:
        raise TraceInputError("hãy chọn loại giấy tờ")
    compact = id_number.replace(" ", "").replace(".", "").upper()
    if not _ID_TEXT.fullmatch(compact):
        raise TraceInputError("số giấy tờ gồm 3 đến 20 chữ cái, chữ số hoặc dấu *")
    if kind == "national" and not (compact.isdigit() and len(compact) == 12) and not (name.strip() and birth):
        raise TraceInputError("mã QR cá nhân có số bị che cần họ tên và ngày sinh như khi quét;"
                              " hoặc bắt đầu truy vết từ một lượt quét của người này")
    return persons.person_key(kind, compact, name, birth_as_stored(birth))


def birth_as_stored(birth: str) -> str:
    """A birth date typed as dd/mm/yyyy (or yyyy-mm-dd, or a year) in the form cards
    carry and keys are made of: yyyy-mm-dd, ``**`` where the card leaves a part out."""
    birth = birth.strip()
    match = _BIRTH_DMY.fullmatch(birth)
    if not match:
        return birth
    day, month, year = (part.zfill(2) for part in match.groups())
    return f"{year}-{month}-{day}"


# -- running one -----------------------------------------------------------------------------

def run_trace(svc: Services, who: Visitor, scope: Scope, person_key: str, date_from: dt.date, date_to: dt.date,
              margin: int, stay: int, purpose: str) -> dict:
    """Trace ``person_key`` over the days [date_from, date_to] inside the officer's
    areas, audited with ``purpose`` ("page", "csv" or "json"); the answer as shown."""
    if date_to < date_from:
        raise TraceInputError("ngày cuối trước ngày đầu")
    if (date_to - date_from).days + 1 > MAX_TRACE_DAYS:
        raise TraceInputError(f"mỗi lần truy vết tối đa {MAX_TRACE_DAYS} ngày")
    tz = svc.tz
    since = int(dt.datetime.combine(date_from, dt.time(), tz).timestamp() * 1000)
    until = int(dt.datetime.combine(date_to, dt.time(), tz).timestamp() * 1000) + DAY_MS
    result = tracer_for(svc.storage).trace(person_key, since, until, margin_s=margin * 60, default_stay_s=stay * 60,
                                           venue_ids=scope.full_ids)
    if not result["visits"]:
        # Someone with no scan in the officer's areas is not their case: say nothing of elsewhere.
        result["visits_elsewhere"] = 0
    svc.audit.record("qrgate.trace.run", account=who.account, ip=who.ip, person=person_key,
                     contacts=len(result["contacts"]), visits=len(result["visits"]),
                     **{"from": date_from.isoformat(), "to": date_to.isoformat()},
                     margin_min=margin, stay_min=stay, output=purpose)
    return present_trace(svc, scope, person_key, result)


def present_trace(svc: Services, scope: Scope, person_key: str, result: dict) -> dict:
    storage, tz = svc.storage, svc.tz
    names = venue_names(storage, sorted({v["venue_id"] for v in result["visits"]}))
    me = _latest_card(storage, person_key, scope.full_ids) if scope.full_ids else None

    def when(ms: int) -> str:
        at = local_time(ms, tz)
        return at.strftime("%d/%m/%Y %H:%M") if at else INVALID_TIME

    contacts_of = venue_contacts(storage, sorted({v["venue_id"] for v in result["visits"]}))
    visits = [{**v, "venue": names.get(v["venue_id"], ""), "start_text": when(v["start_ms"]),
               "end_text": when(v["end_ms"]), "minutes": round((v["end_ms"] - v["start_ms"]) / 60000),
               "contact": contacts_of.get(v["venue_id"])}
              for v in result["visits"]]
    # Whole minutes for people (41, never 41.0); the API keeps overlap_minutes to a tenth.
    contacts = [{**c, "rank": i + 1, "venue_names": [names.get(v, "") for v in c["venues"]],
                 "whole_minutes": int(c["overlap_minutes"] + 0.5), "first_text": when(c["first_contact_ms"])}
                for i, c in enumerate(result["contacts"])]
    person = ({"checkin_id": me[0], "kind": me[1], "id_number": me[2], "name": me[3], "birth": me[4]}
              if me else None)
    return {"person_key": person_key, "person": person, "from_ms": result["from_ms"], "to_ms": result["to_ms"],
            "margin_minutes": result["margin_s"] // 60, "stay_minutes": result["default_stay_s"] // 60,
            "visits": visits, "visits_elsewhere": result["visits_elsewhere"], "contacts": contacts}


def venue_contacts(storage, venue_ids) -> dict[int, dict]:
    """The contact person (name, role, phone) of each of these venues that has one, in
    full: only officers tracing inside their areas, and the venues' own managers, see it."""
    db = storage.sql
    if not venue_ids or "contact_name" not in db.columns("venues"):
        return {}
    condition, params = in_list(db, "id", list(venue_ids))
    return {r[0]: {"name": r[1], "role": r[2] or "", "phone": r[3] or ""} for r in db.rows(
        f"SELECT id, contact_name, contact_role, contact_phone FROM venues WHERE {condition}"
        " AND coalesce(contact_name, '') <> ''", params)}


def area_contacts(storage, venue_ids) -> list[dict]:
    """The venues (of an officer's areas) with a contact person, by name."""
    db = storage.sql
    if not venue_ids or "contact_name" not in db.columns("venues"):
        return []
    condition, params = in_list(db, "id", sorted(venue_ids))
    rows = db.rows(f"SELECT id, name, contact_name, contact_role, contact_phone FROM venues WHERE {condition}"
                   " AND coalesce(contact_name, '') <> ''", params)
    rows.sort(key=lambda r: ((r[1] or "").casefold(), r[0]))
    return [{"venue_id": r[0], "venue": r[1] or "", "name": r[2], "role": r[3] or "", "phone": r[4] or ""}
            for r in rows]


def _latest_card(storage, person_key: str, venue_ids: frozenset[int]) -> tuple | None:
    """(id, kind, id_number, name, birth) of the person's latest check-in at these venues."""
    db = storage.sql
    # Unary + keeps the planner on the person index: a person has few rows, a venue many.
    condition, params = in_list(db, "+venue_id", sorted(venue_ids))
    return db.one(f"SELECT id, kind, id_number, name, birth FROM checkins WHERE person_key = ? AND {condition}"
                  " ORDER BY wall_ms DESC LIMIT 1", [person_key, *params])


def trace_from_form(svc: Services, who: Visitor, scope: Scope, form: dict, purpose: str) -> dict:
    """Run the trace the form (of the trace page, its values as text) asks for."""
    if form["checkin"]:
        if not form["checkin"].isdigit() or len(form["checkin"]) > 18:
            raise HTTPException(404)
        person_key = person_from_checkin(svc.storage, scope, int(form["checkin"]))
    else:
        person_key = person_from_card(form["kind"], form["id_number"], form["name"], form["birth"])
    days = []
    for key in ("from", "to"):
        if not _DATE.fullmatch(form[key]):
            raise TraceInputError("hãy chọn ngày trong lịch")
        try:
            days.append(dt.date.fromisoformat(form[key]))
        except ValueError:
            raise TraceInputError("ngày này không có thật") from None
    try:
        margin, stay = int(form["margin"]), int(form["stay"])
    except ValueError:
        raise TraceInputError("khoảng đệm và thời gian ở là số phút nguyên") from None
    if not (0 <= margin <= 240 and 5 <= stay <= 1440):
        raise TraceInputError("khoảng đệm từ 0 đến 240 phút, thời gian ở từ 5 đến 1440 phút")
    return run_trace(svc, who, scope, person_key, days[0], days[1], margin, stay, purpose)
