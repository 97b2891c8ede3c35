"""What every request passes through before a route sees it (plain ASGI middleware):
the security headers and pre-session cookie (VisitorCookies), the visitor's real address
behind a trusted proxy (ForwardedClient), and the size and text of a request body
(BodyLimits)."""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import re
import secrets

from fastapi import Request
from fastapi.responses import JSONResponse, Response
from starlette.datastructures import MutableHeaders
from starlette.requests import HTTPConnection

logger = logging.getLogger(__name__)

SESSION_COOKIE = "qrgate_session"
PRE_COOKIE = "qrgate_pre"  # binds the CSRF token of a visitor who has not logged in yet
LANG_COOKIE = "qrgate_lang"
SECURITY_HEADERS = {
    "Content-Security-Policy": "default-src 'self'; img-src 'self' data:; script-src 'self'; style-src 'self';"
                               " frame-ancestors 'none'; form-action 'self'; base-uri 'none'",
    "X-Content-Type-Options": "nosniff",
    # Self check-in URLs carry the venue's token: never hand them to another site.
    "Referrer-Policy": "no-referrer",
    "X-Frame-Options": "DENY",
}


def pre_session(request: Request) -> str:
    """The visitor's pre-session cookie value; a new one (set on the response by
    VisitorCookies) when the request came without one."""
    state = request.state
    if state.pre is None:
        state.pre, state.pre_new = secrets.token_urlsafe(24), True
    return state.pre


class VisitorCookies:
    """Every response: the security headers, `no-store` outside /static/, and the
    pre-session cookie a visitor's CSRF token is bound to before logging in. A request
    without one gets one only when it was used (:func:`pre_session`): a logged-in
    visitor's token is bound to the session, and minting a cookie for every API call of
    a script that keeps only its session cookie was a few per cent of each answer. Plain
    ASGI: the decorator form of a Starlette middleware runs each request through extra
    tasks and streams, a cost every page paid."""

    def __init__(self, app, secure: bool):
        self.app = app
        self.secure = secure

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        pre = HTTPConnection(scope).cookies.get(PRE_COOKIE)
        state = scope.setdefault("state", {})
        state["pre"] = pre if pre and len(pre) <= 100 else None
        static = scope["path"].startswith("/static/")

        async def send_with_headers(message):
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                if state.get("pre_new"):
                    carrier = Response()
                    carrier.set_cookie(PRE_COOKIE, state["pre"], httponly=True, samesite="lax", secure=self.secure)
                    headers.append("set-cookie", carrier.headers["set-cookie"])
                for name, value in SECURITY_HEADERS.items():
                    if name not in headers:
                        headers[name] = value
                if not static and "cache-control" not in headers:
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)


class ForwardedClient:
    """Plain ASGI: the visitor's address as a reverse proxy saw it, believed only from a
    proxy named in ``[web] trusted_proxies`` (docs/security.md).

    From a trusted proxy, X-Forwarded-For is read from the right: the first address that
    is not itself a trusted proxy is the one the nearest proxy saw connecting, and what a
    client wrote to the left of it is never read; X-Forwarded-Proto (the nearest proxy's
    value) gives the scheme. From any other address both headers are ignored: otherwise
    whoever reaches the port chooses the address every per-address limit and audit entry
    goes by. (uvicorn's own reading of these headers is off: server.cli.uvicorn_config.)
    """

    def __init__(self, app, trusted: tuple[str, ...] = ()):
        self.app = app
        self.networks = tuple(ipaddress.ip_network(p, strict=False) for p in trusted)
        self._warned = False
        # The proxy's own address comes with every request: parse it once, not each time.
        self.is_trusted = functools.lru_cache(maxsize=4096)(self._is_trusted)

    def _is_trusted(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host)
        except ValueError:
            return False
        if address.version == 6 and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self.networks)

    async def __call__(self, scope, receive, send):
        if scope["type"] == "http":
            client = scope.get("client")
            if client and self.networks and self.is_trusted(client[0]):
                scope = self.forwarded(scope)
            elif not self._warned and any(name == b"x-forwarded-for" for name, _ in scope["headers"]):
                self._warned = True  # once: a proxy left out of the list would fill the log
                logger.warning("X-Forwarded-For from %s ignored: that address is not in [web] trusted_proxies",
                               client[0] if client else "?")
        await self.app(scope, receive, send)

    def forwarded(self, scope) -> dict:
        hops: list[str] = []
        proto = ""
        for name, value in scope["headers"]:
            if name == b"x-forwarded-for":
                hops.extend(value.decode("latin-1").split(","))
            elif name == b"x-forwarded-proto":
                proto = value.decode("latin-1").rsplit(",", 1)[-1].strip().lower()
        client = None
        for hop in reversed(hops):
            try:
                client = str(ipaddress.ip_address(hop.strip()))
            except ValueError:
                break  # no trusted proxy wrote this: believe nothing further left
            if not self.is_trusted(client):
                break
        if client is None and proto not in ("http", "https"):
            return scope
        scope = dict(scope)
        if client is not None:
            scope["client"] = (client, 0)
        if proto in ("http", "https"):
            scope["scheme"] = proto
        return scope


BODY_LIMIT = 1024 * 1024  # bytes of a request body, except where a route needs more
_ESCAPED_SURROGATE = re.compile(r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}")
_SURROGATE = re.compile("[\ud800-\udfff]")


_NOT_FINITE_HINT = re.compile(r"[0-9][eE]|Infinity|NaN")


def _refuse_constant(name: str):
    raise ValueError(name)


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError(text)
    return value


def json_body_problem(body: bytes) -> str | None:
    """Why a JSON body must be refused before any route reads it, or None.

    The validator's 422 echoes what it was given, and neither a lone surrogate
    (\\uD800 alone) nor a number that is NaN or overflows to infinity (3e+308) can be
    encoded in the answer or logged: each was a 500. Most bodies hold neither hint, and
    are not parsed here at all; the others are parsed once. A body that is not JSON at
    all is left to the route, which refuses it as such.
    """
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        return "the JSON body is not Unicode text (UTF-8, no lone surrogates)"
    surrogates = "\\u" in text and _ESCAPED_SURROGATE.search(text) is not None
    if not surrogates and not _NOT_FINITE_HINT.search(text):
        return None
    try:
        todo = [json.loads(text, parse_float=_finite_float, parse_constant=_refuse_constant)]
    except json.JSONDecodeError:
        return None
    except ValueError:
        return "the JSON body holds a number that is not finite"
    except RecursionError:
        return None
    while surrogates and todo:  # by hand, not recursion: nesting is the sender's choice
        value = todo.pop()
        if isinstance(value, str):
            if _SURROGATE.search(value):
                return "the JSON body is not Unicode text (UTF-8, no lone surrogates)"
        elif isinstance(value, dict):
            todo.extend(value.keys())
            todo.extend(value.values())
        elif isinstance(value, list):
            todo.extend(value)
    return None


class BodyLimits:
    """Plain ASGI: a request body over its limit (BODY_LIMIT, or for the routes that take
    files the limit of the first ``uploads`` pattern matching the whole path) is answered
    413 before anything reads it; a JSON body that is not Unicode text is answered 400.
    Neither echoes nor logs the body: a lone surrogate used to reach the validator, whose
    error message could not be encoded (a 500, and the value in the log)."""

    def __init__(self, app, uploads: tuple[tuple[str, int], ...] = ()):
        self.app = app
        self.uploads = tuple((re.compile(pattern), limit) for pattern, limit in uploads)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = content_type = None
        chunked = False
        for name, value in scope["headers"]:
            if name == b"content-length":
                length = value
            elif name == b"content-type":
                content_type = value.lower()
            elif name == b"transfer-encoding":
                chunked = b"chunked" in value.lower()
        if length is None and not chunked:
            await self.app(scope, receive, send)  # no body
            return
        limit = next((n for pattern, n in self.uploads if pattern.fullmatch(scope["path"])), BODY_LIMIT)
        if length is not None and (not length.isdigit() or int(length) > limit):
            await self._refuse(scope, receive, send, 413, f"request body larger than {limit} bytes")
            return
        is_json = content_type is None or b"json" in content_type
        if not is_json and length is not None:
            await self.app(scope, receive, send)  # the server reads exactly Content-Length bytes
            return
        chunks, size = [], 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > limit:
                await self._refuse(scope, receive, send, 413, f"request body larger than {limit} bytes")
                return
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        problem = json_body_problem(body) if is_json and body else None
        if problem is not None:
            await self._refuse(scope, receive, send, 400, problem)
            return
        replayed = False

        async def replay():
            nonlocal replayed
            if replayed:
                return await receive()
            replayed = True
            return {"type": "http.request", "body": body, "more_body": False}

        await self.app(scope, replay, send)

    @staticmethod
    async def _refuse(scope, receive, send, status: int, detail: str) -> None:
        await JSONResponse({"detail": detail}, status)(scope, receive, send)
