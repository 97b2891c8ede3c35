"""The HTTP endpoints stations call: POST /api/enrol (a one-time code and a new key for
the station's binding) and POST /api/rotate-key (server/ingest/enrol.py does the work)."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Body, Request
from fastapi.responses import JSONResponse

from server.ingest.enrol import EnrolError
from server.web.deps import Svc

logger = logging.getLogger(__name__)

router = APIRouter()


# Plain functions: FastAPI runs them on a worker thread, so adding the broker account (a
# round trip to the broker, or a file written while it is stopped) never blocks the
# event loop.
@router.post("/api/enrol", tags=["stations"])
def enrol(svc: Svc, request: Request, body: dict = Body(...)):
    """Trade a single-use enrolment code and a station's public key for its binding."""
    try:
        return svc.enrolment.enrol(body)
    except EnrolError as exc:
        logger.warning("enrolment refused from %s: %s", request.client.host if request.client else "?", exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)


@router.post("/api/rotate-key", tags=["stations"])
def rotate_key(svc: Svc, request: Request, body: dict = Body(...)):
    """A station replaces its signing key; the old key signs the request."""
    try:
        return svc.enrolment.rotate(body)
    except EnrolError as exc:
        logger.warning("key rotation refused from %s: %s", request.client.host if request.client else "?", exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
