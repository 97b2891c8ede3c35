"""What stations fetch and send about releases: the TUF metadata and targets, served as
files (GET /releases/metadata/NAME, /releases/targets/NAME), and the updater's signed
report (POST /api/releases/report). HTTPS is the reverse proxy's (docs/security.md); the
files' integrity does not depend on it: every byte is checked against signed metadata."""

from __future__ import annotations

import logging

from fastapi import APIRouter, Body, HTTPException, Request
from fastapi.responses import FileResponse, JSONResponse

from server.releases.service import ReleaseService, ReportRefused

logger = logging.getLogger(__name__)

router = APIRouter()


def _service(request: Request) -> ReleaseService:
    service = getattr(request.app.state, "releases", None)
    if service is None:
        raise HTTPException(404, "no releases are served here")
    return service


@router.get("/releases/{kind}/{name}", tags=["stations"])
def release_file(kind: str, name: str, request: Request):
    """One metadata file or target of the release repository (404 for any other name)."""
    path = _service(request).file(kind, name)
    if path is None:
        raise HTTPException(404, "not found")
    # timestamp.json changes in place every few hours; the rest never change under a name.
    cache = "no-cache" if name in ("timestamp.json", "root.json") else "public, max-age=31536000, immutable"
    media = "application/json" if kind == "metadata" else "application/octet-stream"
    return FileResponse(path, media_type=media, headers={"Cache-Control": cache})


@router.post("/api/releases/report", tags=["stations"])
def report(request: Request, body: dict = Body(...)):
    """A station's updater says where it stands (signed by the station's key); the answer
    says what the server has seen from the station (its firmware, last heartbeat, check-ins)."""
    try:
        return _service(request).report(body)
    except ReportRefused as exc:
        logger.warning("update report refused from %s: %s", request.client.host if request.client else "?", exc)
        return JSONResponse({"error": str(exc)}, status_code=exc.status)
