"""Self check-in (F8): a person scans the venue's poster and declares coming in or
going out on their own phone; the page at ``/c/{token}`` and its JSON twin. A closed
venue's page says so and takes no declaration (the API answers 409 ``venue_closed``)."""

from __future__ import annotations

import datetime as dt

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, Field

from qrgate.masking import mask_id_number, mask_person_name
from server.accounts.accounts import address_key
from server.selfcheckin.selfcheckin import SelfCheckinError, parse_declaration
from server.venues.venues import Venue
from server.web import i18n
from server.web.deps import Services, Svc, Visitor, csrf_checked, visitor
from server.web.pages import render

router = APIRouter()

CLOSED_MESSAGE = "Địa điểm này đã đóng cửa và không nhận khai báo ra vào nữa."
i18n.register({"self.closed": (CLOSED_MESSAGE, "This venue is closed and takes no more check-ins.")})


class VenueClosed(Exception):
    """A declaration at a closed venue."""


class DeclarationBody(BaseModel):
    id_number: str = Field(max_length=40)
    name: str = Field(max_length=2000)
    birth_year: str = Field("", max_length=10)
    direction: str = Field(examples=["in"])


def declare(svc: Services, who: Visitor, token: str, form: dict) -> tuple[Venue, dict]:
    venue = svc.venues.by_token(token)
    if venue is None:
        raise HTTPException(404)
    if venue.closed:
        raise VenueClosed()
    if not svc.accounts.allow(f"self:ip:{address_key(who.ip)}", 30, 600):
        raise HTTPException(429, "Quá nhiều lượt khai báo từ địa chỉ này. Vui lòng thử lại sau.")
    declaration = parse_declaration(form.get("id_number", ""), form.get("name", ""), form.get("birth_year", ""),
                                    form.get("direction", ""), dt.datetime.now(svc.tz).year)
    record = svc.self_checkin.check_in(venue, declaration)
    return venue, record


@router.get("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
def selfcheckin_page(svc: Svc, request: Request, token: str, who: Visitor = Depends(visitor)):
    venue = svc.venues.by_token(token)
    if venue is None:
        raise HTTPException(404)
    return render(request, who, "selfcheckin.html", venue=venue, address=svc.venues.address_text(venue),
                  values={}, errors={}, done=None)


@router.post("/c/{token}", response_class=HTMLResponse, include_in_schema=False)
async def selfcheckin_submit(svc: Svc, request: Request, token: str, who: Visitor = Depends(csrf_checked)):
    form = {k: str(v)[:2000] for k, v in (await request.form()).items()}
    try:
        venue, record = declare(svc, who, token, form)
    except SelfCheckinError as exc:
        venue = svc.venues.by_token(token)
        return render(request, who, "selfcheckin.html", 400, venue=venue, address=svc.venues.address_text(venue),
                      values=form, errors=exc.problems, done=None)
    except VenueClosed:
        venue = svc.venues.by_token(token)
        return render(request, who, "selfcheckin.html", 409, venue=venue, address=svc.venues.address_text(venue),
                      values={}, errors={}, done=None)
    when = dt.datetime.fromtimestamp(record["ts"] / 1000, svc.tz)
    done = {"direction": record["dir"], "name": mask_person_name(record["person"]["name"]),
            "id_number": mask_id_number(record["person"]["id"]), "time_text": when.strftime("%d/%m/%Y %H:%M:%S")}
    return render(request, who, "selfcheckin.html", venue=venue, address=svc.venues.address_text(venue),
                  values={}, errors={}, done=done)


@router.post("/api/self-checkin/{token}", tags=["self check-in"], status_code=201)
def api_selfcheckin(svc: Svc, token: str, body: DeclarationBody, who: Visitor = Depends(csrf_checked)):
    """Declare coming in or going out of the venue whose poster carries ``token``."""
    try:
        venue, record = declare(svc, who, token, body.model_dump())
    except SelfCheckinError as exc:
        return JSONResponse({"detail": "invalid", "problems": exc.problems}, 422)
    except VenueClosed:
        return JSONResponse({"detail": "venue_closed", "message": CLOSED_MESSAGE}, 409)
    return {"venue": venue.name, "direction": record["dir"], "time_ms": record["ts"],
            "name": mask_person_name(record["person"]["name"])}


# -- stations: enrolment codes (venue roles), the fleet (operators) ----------------------
