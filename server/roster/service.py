"""What the roster routes keep per app and the steps they take: the roster store, the
pass office, and the uploads, issues and revocations with their audit entries.

``attach(app)`` makes the app's RosterService, after ``app.state.services``: create_app
calls it, so the roster's and the passes' tables and the fallback pass-signing key exist
when the app is made; routes take it with the ``RosterSvc`` dependency.

Permissions (server/venues/permissions.py) are checked by the routes; here, only who
sees full names: owners and managers (``roster.manage``) do, gate controllers see masked
names, and every full-name read is written to the audit trail.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, HTTPException, Request

from server.roster import passes
from server.roster.parsing import RosterError
from server.roster.passes import IssueResult, PassOffice, PassRecord, PushResult
from server.roster.roster import ImportResult, RosterPerson, RosterStore
from server.venues.permissions import allowed
from server.web.deps import Services, Visitor

# The reason written on a pass revoked because its holder left the roster (the pages
# show a pass's reason as it was typed, and the people who read it read Vietnamese).
LEFT_THE_ROSTER = "không còn trong danh sách nhân sự"


def full_names(role: str) -> bool:
    """Whether a venue role sees the roster's full names (the ones who keep the roster)."""
    return allowed(role, "roster.manage")


class RosterService:
    """One app's roster store and pass offices (``app.state.roster_service``)."""

    def __init__(self, services: Services, state: Any):
        self.services = services
        self.state = state  # app.state: the server's entry point may set pass_office on it later
        self.roster = RosterStore(services.storage, services.clock)
        self.fallback = _fallback_office(services)

    # -- the pass office ------------------------------------------------------------------

    def office_or_none(self) -> PassOffice | None:
        """The server's entry point hands the app an office with the broker publisher
        (app.state.pass_office); without one, passes are signed with the key kept beside
        the database and revocations reach stations at their next config push."""
        configured = getattr(self.state, "pass_office", None)
        return configured if configured is not None else self.fallback

    def office(self) -> PassOffice:
        """The pass office; 503 when this server has no pass-signing key."""
        desk = self.office_or_none()
        if desk is None:
            raise HTTPException(503, "this server has no pass-signing key")
        return desk

    # -- shared steps ---------------------------------------------------------------------

    def today(self) -> dt.date:
        return dt.datetime.fromtimestamp(self.services.clock(), self.services.tz).date()

    def audit(self, who: Visitor, action: str, venue_id: int, **data: Any) -> None:
        self.services.audit.record(action, account=who.account, ip=who.ip, venue_id=venue_id, **data)

    def shown_rows(self, who: Visitor, venue_id: int, role: str, people: list[RosterPerson],
                   path: str) -> list[dict[str, Any]]:
        """The people as ``role`` sees them; a read of full names is audited (``path``: the page)."""
        shown = full_names(role)
        if shown and people:
            self.audit(who, "qrgate.roster.names.read", venue_id, rows=len(people), path=path)
        return [p.as_masked(shown) for p in people]

    def active_passes(self, venue_id: int) -> dict[int, str]:
        """Roster person id -> the pid of their pass active today (none without a key)."""
        out: dict[int, str] = {}
        desk = self.office_or_none()
        if desk is None:
            return out
        day = self.today()
        for record in desk.passes(venue_id):
            if record.person_id is not None and record.state_on(day) == "active":
                out[record.person_id] = record.pid
        return out

    # -- the roster -----------------------------------------------------------------------

    def upload(self, who: Visitor, venue_id: int, data: bytes, filename: str,
               mode: str) -> tuple[ImportResult | None, RosterError | None, list[str]]:
        """Store an upload; returns (ImportResult or None, RosterError or None, revoked pids)."""
        # A replace revokes the passes of people who left: have the office before storing.
        desk = self.office() if mode == "replace" else None
        try:
            result = self.roster.upload(venue_id, data, filename, mode, self.today().year)
        except RosterError as exc:
            return None, exc, []
        revoked: list[str] = []
        if result.ok:
            if result.removed_ids and desk is not None:
                revoked = desk.revoke_people(venue_id, result.removed_ids, LEFT_THE_ROSTER, self.today())
                if revoked:
                    desk.push(venue_id)
                    for pid in revoked:
                        self.audit(who, "qrgate.passes.revoked", venue_id, pid=pid, reason=LEFT_THE_ROSTER)
            self.audit(who, "qrgate.roster.uploaded", venue_id, mode=mode, rows=result.rows, added=result.added,
                       updated=result.updated, removed=len(result.removed_ids))
        return result, None, revoked

    def absent(self, venue_id: int) -> tuple[list[RosterPerson], dt.datetime]:
        """Roster people not checked in since local midnight (by ID and by pass), and that midnight."""
        desk = self.office_or_none()
        keys = desk.keys_by_person(venue_id) if desk else {}
        return self.roster.absent_today(venue_id, self.services.tz, self.services.clock(), keys)

    # -- passes ---------------------------------------------------------------------------

    def issue(self, who: Visitor, venue_id: int, person_ids: list[int], without_phone: bool,
              days: int) -> tuple[IssueResult | None, int]:
        """Issue one batch; returns (IssueResult or None, how many are left for another batch)."""
        desk = self.office()
        ids = list(dict.fromkeys(person_ids))
        left = 0
        if without_phone:
            # Everyone without a phone and a valid pass, one batch at a time: a big roster
            # is printed in several PDFs of at most MAX_PER_BATCH cards.
            waiting = [i for i in desk.without_phone(venue_id, self.today()) if i not in ids]
            room = max(0, passes.MAX_PER_BATCH - len(ids))
            ids += waiting[:room]
            left = len(waiting) - min(room, len(waiting))
        if not ids:
            return None, 0
        result = desk.issue(venue_id, ids, days, self.today(), who.account.id)
        if result.issued:
            self.audit(who, "qrgate.passes.issued", venue_id, count=len(result.issued), batch=result.batch_id,
                       expires=result.issued[0].expires.isoformat())
        return result, left

    def revoke(self, who: Visitor, venue_id: int, pid: str, reason: str,
               reissue_days: int) -> tuple[PassRecord, PassRecord | None, PushResult]:
        """Revoke a pass, maybe reissue, and push the block list; LookupError: no such pass."""
        desk = self.office()
        revoked, fresh = desk.revoke(venue_id, pid, reason, self.today(), reissue_days, who.account.id)
        self.audit(who, "qrgate.passes.revoked", venue_id, pid=pid, reason=revoked.reason)
        if fresh is not None:
            self.audit(who, "qrgate.passes.issued", venue_id, count=1, batch=fresh.batch_id,
                       expires=fresh.expires.isoformat())
        return revoked, fresh, desk.push(venue_id)

    def push(self, who: Visitor, venue_id: int) -> PushResult:
        """Send the venue's block list to its stations again (after a failed push)."""
        result = self.office().push(venue_id)
        self.audit(who, "qrgate.passes.pushed", venue_id, stations=result.stations)
        return result

    def push_notice(self, pushed: PushResult) -> tuple[str, dict[str, Any]]:
        """What a page says about a push, as an i18n key and its values: how many stations
        got the block list, or what to do when none could (never the broker's own words)."""
        if not pushed.error:
            return ("passes.pushed", {"count": pushed.stations}) if pushed.stations else ("passes.pushed_none", {})
        if self.office().publisher is None:
            return "passes.push.no_broker", {}
        return "passes.push.unreachable", {}


def _fallback_office(services: Services) -> PassOffice | None:
    """An office signing with ``pass-signing.key`` in the storage's data folder (server.toml's
    data folder: the SQLite file's, or the one PostgreSQL was opened with), with no
    broker: used when the app was not given one."""
    from qrgate.keyfiles import load_or_create_key

    folder = getattr(services.storage, "data_dir", None)
    if folder is None:
        return None
    return PassOffice(services.storage, load_or_create_key(Path(folder) / "pass-signing.key"), clock=services.clock)


def attach(app: FastAPI) -> RosterService:
    """Make the app's RosterService (create_app calls it once; ``app.state.services``
    must be set). It makes tables and may write the key file."""
    found = app.state.roster_service = RosterService(app.state.services, app.state)
    return found


async def roster_service(request: Request) -> RosterService:
    """FastAPI dependency: the app's RosterService."""
    return request.app.state.roster_service


RosterSvc = Annotated[RosterService, Depends(roster_service)]
