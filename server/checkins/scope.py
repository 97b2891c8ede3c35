"""Who sees which check-ins (docs/history.md): the venues a visitor may read and those
they read in full.

* venue members (owner, manager, gate controller) see their venues' check-ins masked;
* health officers see the check-ins of venues inside their areas in full, and venues
  outside their areas only as a member would, or not at all;
* operators see every venue's check-ins, masked (an operator who is also made an
  officer sees their area in full).

The venue names of the history filter and of a trace are read here, so that the route
modules run no SQL.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from server.storage.sql import in_list
from server.venues.permissions import allowed

if TYPE_CHECKING:
    from server.web.deps import Services, Visitor

VENUE_SELECT_MAX = 1000  # more venues than this: the filter takes a venue number instead


@dataclass
class Scope:
    """What one visitor may read."""

    venue_ids: list[int] | None            # None: every venue (operators)
    full_ids: frozenset[int]               # venues read in full: inside the visitor's officer areas
    venues: list[tuple[int, str]]          # (id, name) for the filter; empty when too many to list
    areas: list = field(default_factory=list)  # officers.OfficerArea

    def may_see(self, venue_id: int) -> bool:
        return self.venue_ids is None or venue_id in self.venue_ids


def scope_of(svc: Services, who: Visitor, names: bool = True) -> Scope:
    """What ``who`` may read; ``names``: with the venues' names for the filter (only the
    page of all one's venues shows it; a venue's page and the API do without)."""
    account = who.account
    areas = svc.officers.areas_of(account.id)
    full = svc.officers.venue_ids(account.id) if areas else []
    db = svc.storage.sql
    if account.is_operator:
        listed = []
        if names and db.value("SELECT count(*) FROM venues", default=0) <= VENUE_SELECT_MAX:
            listed = _by_name(db.rows("SELECT id, name FROM venues"))
        return Scope(None, frozenset(full), listed, areas)
    ids = {v.id for v, role in svc.venues.for_account(account.id) if allowed(role, "checkins.view")}
    ids |= set(full)
    ordered = sorted(ids)
    listed = []
    if names and ordered and len(ordered) <= VENUE_SELECT_MAX:
        condition, params = in_list(db, "id", ordered)
        listed = _by_name(db.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
    return Scope(ordered, frozenset(full), listed, areas)


def _by_name(rows: Iterable[Sequence]) -> list[tuple[int, str]]:
    # Sorted here: code point order on both engines, not PostgreSQL's collation.
    return sorted(((r[0], r[1]) for r in rows), key=lambda r: (r[1], r[0]))


def venue_names(storage, venue_ids: Sequence[int]) -> dict[int, str]:
    """The names of these venues, by id (an empty list reads nothing)."""
    if not venue_ids:
        return {}
    db = storage.sql
    condition, params = in_list(db, "id", venue_ids)
    return dict(db.rows(f"SELECT id, name FROM venues WHERE {condition}", params))
