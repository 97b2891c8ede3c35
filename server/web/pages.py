"""Rendering a page: the Jinja2 templates of server/web/templates and what every page is
given (the visitor, language, CSRF token, translations, the retention period, the
one-time message saying what the last action did, and dates and the time zone as
people write them)."""

from __future__ import annotations

import datetime as dt
import re
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse, Response
from fastapi.templating import Jinja2Templates
import jinja2

from server.web import i18n

HERE = Path(__file__).parent
_DICT_METHODS = frozenset(dir(dict))


class TemplateEnvironment(jinja2.Environment):
    """Jinja's environment, but ``row.name`` on a dict reads its key first.

    Jinja tries the attribute and falls back to the key after an AttributeError; the
    pages' rows are dicts, and raising that error for every cell was a third of a
    history page's time (docs/performance.md). The names of dict's own methods
    (``items``, ``values``, ``get``...) still mean the methods.
    """

    def getattr(self, obj: Any, attribute: str) -> Any:
        if type(obj) is dict and attribute not in _DICT_METHODS:
            try:
                return obj[attribute]
            except KeyError:
                pass
        return super().getattr(obj, attribute)


# The templates are package files: no check of their modification time on every page.
TEMPLATES = Jinja2Templates(env=TemplateEnvironment(loader=jinja2.FileSystemLoader(HERE / "templates"),
                                                    autoescape=True, auto_reload=False))
STATIC_DIR = HERE / "static"
FLASH_COOKIE = "qrgate_flash"
_FLASH_KEY = re.compile(r"flash\.[a-z0-9_.]{1,60}")


def flash(request: Request, response: Response, key: str) -> Response:
    """Say what an action did on the next page the visitor sees: ``key`` names a text
    registered with i18n.register (``flash.*``), shown once, in the visitor's language.
    Only the key travels in the cookie: a forged cookie can show no words of its own."""
    if not _FLASH_KEY.fullmatch(key):
        raise ValueError(f"not a flash text key: {key!r}")
    response.set_cookie(FLASH_COOKIE, key, max_age=120, httponly=True, samesite="lax", path="/",
                        secure=request.app.state.services.cookie_secure)
    return response


def date_text(value: Any) -> str:
    """A date as Vietnamese write it, dd/mm/yyyy, from a date, a datetime or an ISO text
    (yyyy-mm-dd...); anything else as it is."""
    if isinstance(value, (dt.date, dt.datetime)):
        return value.strftime("%d/%m/%Y")
    text = "" if value is None else str(value)
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}.*", text):
        return f"{text[8:10]}/{text[5:7]}/{text[:4]}"
    return text


def zone_text(lang: str, services) -> str:
    """The server's time zone in words: Vietnam's by name, any other by its offset now."""
    if services.timezone in ("Asia/Ho_Chi_Minh", "Asia/Saigon"):
        return i18n.translate(lang, "checkins.zone_vn")
    offset = dt.datetime.fromtimestamp(services.clock(), services.tz).strftime("%z")
    return f"UTC{offset[:3]}:{offset[3:]}" if offset else services.timezone


def render(request: Request, who, name: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """The template ``name`` for the visitor ``who`` (server.web.deps.Visitor), in their
    language, with ``context`` added to what every page gets."""
    services = request.app.state.services
    lang = who.lang
    key = request.cookies.get(FLASH_COOKIE)
    message = i18n.translate(lang, key) if key and _FLASH_KEY.fullmatch(key) and key in i18n.TEXTS else ""
    response = TEMPLATES.TemplateResponse(request, name, {
        "who": who, "lang": lang, "csrf": who.csrf, "path": request.url.path,
        "is_officer": bool(who.account) and services.officers.is_officer(who.account.id),
        "t": lambda key, **v: i18n.translate(lang, key, **v),
        "role_name": lambda role: i18n.role_name(lang, role),
        "kind_name": lambda kind: i18n.kind_name(lang, kind),
        "card_name": lambda kind: i18n.card_name(lang, kind),
        "direction_name": lambda direction: i18n.direction_name(lang, direction),
        "birth_text": i18n.birth_text,
        "retention_days": services.retention_days,
        "date_text": date_text,
        "zone_text": lambda: zone_text(lang, services),
        "flash": message,
        **context,
    }, status_code=status_code)
    if key is not None:
        response.delete_cookie(FLASH_COOKIE, path="/", httponly=True, samesite="lax", secure=services.cookie_secure)
    return response
