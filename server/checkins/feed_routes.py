"""Where a visitor lands at ``/``, and the latest check-ins of every venue, masked.

``/`` sends a logged-in account where its work is: a health officer to their area's
page (today's numbers, the trace box), an operator to the fleet, anyone else to their
venues. Anonymous visitors see the public feed there when the server's public_feed is
on. The feed itself is ``/feed`` (operators, or anyone with public_feed) and its JSON
twin ``/api/checkins``.
"""

from __future__ import annotations

from zoneinfo import ZoneInfo

from fastapi import APIRouter, Depends, HTTPException, Query, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server.checkins.views import phone_numbers, when_texts
from server.web.deps import Svc, Visitor, visitor
from server.web.pages import render

router = APIRouter()


def _present(row: dict, tz: ZoneInfo, phones: dict[str, int]) -> dict:
    """A check-in as a venue role may see it: personal fields masked; a phone's by its number."""
    time_iso, time_text = when_texts(row["wall_ms"], tz)
    return {
        "id": row["id"],
        "station_id": row["station_id"],
        "seq": row["seq"],
        "venue": row["venue"],
        "direction": row["direction"],
        "kind": row["kind"],
        "name": mask_person_name(row["name"]),
        "id_number": mask_id_number(row["id_number"]),
        "birth": mask_birth(row["birth"]),
        "time": time_iso,
        "time_text": time_text,
        "clock_synced": bool(row["clock_synced"]),
        "phone_number": phones.get(row["station_id"]),
    }


def _presented(svc, rows: list[dict]) -> list[dict]:
    phones = phone_numbers(svc.storage, {r["station_id"] for r in rows})
    return [_present(r, svc.tz, phones) for r in rows]


@router.get("/api/checkins")
def api_checkins(svc: Svc, limit: int = Query(50, ge=1, le=500), before_id: int | None = Query(None, ge=1, le=2**62),
                 who: Visitor = Depends(visitor)):
    """The latest check-ins of every venue, newest first, personal data masked; page with
    ``before_id``. Anonymous only when the server's public feed is on; else operators."""
    if not svc.public_feed and not (who.account and who.account.is_operator):
        raise HTTPException(404)
    rows = _presented(svc, svc.storage.latest_checkins(limit, before_id))
    return {"checkins": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}


def landing(svc, who: Visitor) -> str:
    """Where an account's work is: its officer area, else the fleet (operators), else its venues."""
    if svc.officers.is_officer(who.account.id):
        return "/area"
    if who.account.is_operator:
        return "/fleet"
    return "/venues"


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def index(svc: Svc, request: Request, who: Visitor = Depends(visitor)):
    if who.account is not None:
        return RedirectResponse(landing(svc, who), 303)
    return feed(svc, request, who)


@router.get("/feed", response_class=HTMLResponse, include_in_schema=False)
def feed(svc: Svc, request: Request, who: Visitor = Depends(visitor)):
    show_feed = svc.public_feed or (who.account is not None and who.account.is_operator)
    if who.account and not show_feed:
        raise HTTPException(404)
    rows = _presented(svc, svc.storage.latest_checkins(100)) if show_feed else []
    return render(request, who, "checkins.html", rows=rows, total=svc.storage.count_checkins() if show_feed else 0,
                  timezone=svc.timezone, show_feed=show_feed)
