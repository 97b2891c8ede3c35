"""Units: the venues one weekly unit report covers (docs/reports.md, "Units").

A unit is a venue located within no other venue (its *head*) together with every venue
located within it, at any depth ("Nằm trong địa điểm" on the venue form): a company's
head office with its workshops, gates and the shuttle buses registered under it. Every
venue belongs to exactly one unit, the unit of its topmost venue; a venue on its own is
a unit of one. Only someone who manages a venue may place another within it
(server/venues/venues.py), so a unit is run by the people who run its head.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True)
class VenueFacts:
    """What a report says about one venue."""

    id: int
    name: str
    kind: str
    address: str
    parent_id: int | None


class VenueTree:
    """Every venue with its parent, read in one query when a report run starts."""

    def __init__(self, venues: Iterable[VenueFacts]):
        self.venues = {v.id: v for v in venues}
        self._children: dict[int, list[int]] = defaultdict(list)
        for v in self.venues.values():
            if v.parent_id is not None and v.parent_id in self.venues and v.parent_id != v.id:
                self._children[v.parent_id].append(v.id)
        for ids in self._children.values():
            ids.sort()

    @classmethod
    def read(cls, storage) -> VenueTree:
        db = storage.sql
        # A database whose venues were never opened by the web (tests, the CLI) may not
        # have the directory's columns yet: those venues stand alone.
        have = db.columns("venues")
        parent = "parent_id" if "parent_id" in have else "NULL"
        rows = db.rows(f"SELECT id, name, kind, address, {parent} FROM venues")
        return cls(VenueFacts(int(r[0]), r[1] or "", r[2] or "", r[3] or "", r[4]) for r in rows)

    def head_of(self, venue_id: int) -> int:
        """The unit's head: the venue's topmost ancestor (a loop, which the venue form
        refuses, stops at the first venue seen twice)."""
        seen = set()
        current = venue_id
        while True:
            seen.add(current)
            parent = self.venues[current].parent_id if current in self.venues else None
            if parent is None or parent not in self.venues or parent in seen:
                return current
            current = parent

    def is_head(self, venue_id: int) -> bool:
        return venue_id in self.venues and self.head_of(venue_id) == venue_id

    def within(self, venue_id: int) -> list[int]:
        """The venue and every venue located within it, at any depth: the venue first,
        then the others by their place in the tree (each parent before its children)."""
        out, todo, seen = [], [venue_id], set()
        while todo:
            current = todo.pop(0)
            if current in seen or current not in self.venues:
                continue
            seen.add(current)
            out.append(current)
            todo[:0] = self._children.get(current, [])
        return out

    def heads(self) -> list[int]:
        """Every unit's head, by id."""
        return sorted(v for v in self.venues if self.is_head(v))

    def units_of(self, venue_ids: Iterable[int]) -> dict[int, list[int]]:
        """The given venues grouped by the unit they belong to (head -> venue ids)."""
        groups: dict[int, list[int]] = defaultdict(list)
        for venue_id in sorted(set(venue_ids)):
            if venue_id in self.venues:
                groups[self.head_of(venue_id)].append(venue_id)
        return dict(groups)
