"""The server's web UI and JSON API (FastAPI): the latest check-ins, masked."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from zoneinfo import ZoneInfo

from fastapi import FastAPI, Query, Request
from fastapi.responses import HTMLResponse
from fastapi.templating import Jinja2Templates

from qrgate import __version__
from qrgate.masking import mask_birth, mask_id_number, mask_person_name
from server.storage import Storage

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))


def _present(row: dict, tz: ZoneInfo) -> dict:
    """A check-in as a venue role may see it: personal fields masked."""
    when = dt.datetime.fromtimestamp(row["wall_ms"] / 1000, tz)
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
        "time": when.isoformat(timespec="seconds"),
        "time_text": when.strftime("%d/%m/%Y %H:%M:%S"),
        "clock_synced": bool(row["clock_synced"]),
    }


def create_app(storage: Storage, timezone: str = "Asia/Ho_Chi_Minh") -> FastAPI:
    """The web app; times are shown in ``timezone`` (an IANA name)."""
    tz = ZoneInfo(timezone)
    app = FastAPI(title="QR gate server", version=__version__)

    @app.get("/api/checkins")
    def api_checkins(limit: int = Query(50, ge=1, le=500), before_id: int | None = Query(None, ge=1)):
        """The latest check-ins, newest first, personal data masked; page with ``before_id``."""
        rows = [_present(r, tz) for r in storage.latest_checkins(limit, before_id)]
        return {"checkins": rows, "next_before_id": rows[-1]["id"] if len(rows) == limit else None}

    @app.get("/healthz")
    def healthz():
        return {"ok": True, "checkins": storage.count_checkins()}

    @app.get("/", response_class=HTMLResponse)
    def index(request: Request):
        rows = [_present(r, tz) for r in storage.latest_checkins(100)]
        return TEMPLATES.TemplateResponse(
            request, "checkins.html",
            {"rows": rows, "total": storage.count_checkins(), "timezone": timezone},
        )

    return app
