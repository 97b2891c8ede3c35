"""The pages every visitor may reach whatever their role: the server's health and the
choice of language."""

from __future__ import annotations

from fastapi import APIRouter
from fastapi.responses import RedirectResponse

from server.web import i18n
from server.web.deps import Svc, safe_next
from server.web.middleware import LANG_COOKIE

router = APIRouter()


@router.get("/healthz")
def healthz(svc: Svc):
    """Liveness: the database answers (one indexed row, cheap at any size)."""
    latest = svc.storage.latest_checkins(1)
    return {"ok": True, "latest_checkin_id": latest[0]["id"] if latest else None}


@router.get("/lang/{code}", include_in_schema=False)
def set_language(svc: Svc, code: str, next: str = "/"):
    response = RedirectResponse(safe_next(next) if next != "/" else "/", 303)
    response.set_cookie(LANG_COOKIE, code if code in i18n.LANGUAGES else "vi", max_age=365 * 86400,
                        samesite="lax", secure=svc.cookie_secure, httponly=True)
    return response
