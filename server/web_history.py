"""Web routes of one feature (filled in by its own change)."""

from __future__ import annotations

from fastapi import APIRouter


def make_router(kit) -> APIRouter:
    return APIRouter()
