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


class TraceInputError(ValueError):
    """A trace request that cannot be run as asked; the message says why."""


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
        raise TraceInputError("choose the card kind")
    compact = id_number.replace(" ", "").replace(".", "").upper()
    if not _ID_TEXT.fullmatch(compact):
        raise TraceInputError("the id number must be 3 to 20 letters, digits or *")
    if kind == "national" and not (compact.isdigit() and len(compact) == 12) and not (name.strip() and birth):
        raise TraceInputError("a national QR with a masked id needs the name and birth date as scanned; "
                              "or start the trace from one of the person's check-ins")
    return persons.person_key(kind, compact, name, birth.strip())


# -- running one -----------------------------------------------------------------------------

def run_trace(svc: Services, who: Visitor, scope: Scope, person_key: str, date_from: dt.date, date_to: dt.date,
              margin: int, stay: int, purpose: str) -> dict:
    """Trace ``person_key`` over the days [date_from, date_to] inside the officer's
    areas, audited with ``purpose`` ("page", "csv" or "json"); the answer as shown."""
    if date_to < date_from:
        raise TraceInputError("the last day is before the first")
    if (date_to - date_from).days + 1 > MAX_TRACE_DAYS:
        raise TraceInputError(f"trace at most {MAX_TRACE_DAYS} days at once")
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

    visits = [{**v, "venue": names.get(v["venue_id"], ""), "start_text": when(v["start_ms"]),
               "end_text": when(v["end_ms"]), "minutes": round((v["end_ms"] - v["start_ms"]) / 60000)}
              for v in result["visits"]]
    contacts = [{**c, "rank": i + 1, "venue_names": [names.get(v, "") for v in c["venues"]],
                 "first_text": when(c["first_contact_ms"])} for i, c in enumerate(result["contacts"])]
    person = ({"checkin_id": me[0], "kind": me[1], "id_number": me[2], "name": me[3], "birth": me[4]}
              if me else None)
    return {"person_key": person_key, "person": person, "from_ms": result["from_ms"], "to_ms": result["to_ms"],
            "margin_minutes": result["margin_s"] // 60, "stay_minutes": result["default_stay_s"] // 60,
            "visits": visits, "visits_elsewhere": result["visits_elsewhere"], "contacts": contacts}


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
            raise TraceInputError("dates must look like 2026-09-21")
        try:
            days.append(dt.date.fromisoformat(form[key]))
        except ValueError:
            raise TraceInputError("that date does not exist") from None
    try:
        margin, stay = int(form["margin"]), int(form["stay"])
    except ValueError:
        raise TraceInputError("margin and stay are whole minutes") from None
    if not (0 <= margin <= 240 and 5 <= stay <= 1440):
        raise TraceInputError("margin is 0 to 240 minutes, stay 5 to 1440")
    return run_trace(svc, who, scope, person_key, days[0], days[1], margin, stay, purpose)
