"""Who may do what at a venue, for the routes of every feature."""

from __future__ import annotations

from fastapi import HTTPException

from server.venues.permissions import allowed
from server.venues.venues import Venue
from server.web.deps import Services, Visitor


def venue_for(svc: Services, who: Visitor, venue_id: int, action: str) -> tuple[Venue, str]:
    """The venue and the visitor's role there, if that role may do ``action``
    (server/venues/permissions.py). A visitor who is not a member gets 404 and learns
    nothing, not even that the id exists; a member whose role lacks the action gets 403."""
    venue = svc.venues.get(venue_id)
    role = svc.venues.role_of(venue_id, who.account.id) if venue else None
    if venue is None or role is None:
        raise HTTPException(404)
    if not allowed(role, action):
        raise HTTPException(403)
    return venue, role
