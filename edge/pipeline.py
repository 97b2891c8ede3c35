"""The scan pipeline: decoded text -> payload -> check-in verdict -> signed record -> Outcome.

    capture -> decoder -> parse_payload -> decide_checkin -> outbox.append -> Outcome

The station (edge/app.py) owns the outbox, the publisher and its state; the pipeline
only reads them through ``PipelineContext`` and hands every Outcome back to it.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import Counter
from dataclasses import dataclass
from typing import Any, Protocol
from zoneinfo import ZoneInfo

from edge.config import StationConfig
from edge.drivers.ports import Capture, Frame
from edge.outcome import Outcome, Result, StationState
from edge.payloads import PayloadRefused, Person, parse_payload
from edge.policy import PolicyConfig, decide_checkin
from edge.pushed_config import PushedConfig
from edge.queue.outbox import Outbox, OutboxError
from edge.queue.publisher import Publisher
from qrgate.masking import mask_person_name
from qrgate.sealing import PersonSealer, x25519_public_from_text

# The station's log lines keep the name they always had (journald filters, the boot rig).
logger = logging.getLogger("edge.app")


class PipelineContext(Protocol):
    """What the pipeline needs from the station that runs it."""

    config: StationConfig
    clock: Any
    decoder: Any  # the Decoder port (edge/decoder)
    outbox: Outbox
    publisher: Publisher
    pass_keys: dict[str, Any]
    policy: PolicyConfig  # the file's, or the server's once a pushed config applies
    pushed: PushedConfig | None

    @property
    def fault(self) -> str: ...  # the fault on the screen, or ""

    @property
    def low_space(self) -> bool: ...  # the free-space guard is refusing scans

    def _set_fault(self, fault: str) -> None: ...

    def emit(self, event: Outcome | StationState) -> None: ...


@dataclass
class _Sighting:
    text: str
    mono_s: float


class ScanPipeline:
    """Decides each capture and emits its Outcome; ``counts`` tallies the results."""

    def __init__(self, station: PipelineContext):
        self.station = station
        config = station.config
        self._tz = ZoneInfo(config.station.timezone)  # the day a pass's dates are checked on
        self.sealer = PersonSealer(x25519_public_from_text(config.station.server_key), config.station.id)
        self.counts: Counter[str] = Counter()
        self._last: _Sighting | None = None

    def new_presentation(self) -> None:
        """The view was cleared (the next capture is a different person's card even if
        it holds the same code): used when each image is a separate presentation."""
        self._last = None

    def handle_capture(self, capture: Capture) -> list[Outcome]:
        if isinstance(capture, Frame):
            texts: list[str | bytes] = [d.text for d in self.station.decoder.decode(capture.gray)]
            if not texts:
                self.counts["no_code"] += 1
        else:
            texts = [capture.raw or capture.text]
        outcomes = []
        for text in texts:
            outcome = self.handle_text(text)
            if outcome is not None:
                outcomes.append(outcome)
        return outcomes

    def handle_text(self, text: str | bytes) -> Outcome | None:
        """Decide one read code; None when it is the same card still held up."""
        st = self.station
        now = st.clock.now()
        key = text if isinstance(text, str) else text.decode("utf-8", "replace")
        last = self._last
        self._last = _Sighting(key, now.mono_s)
        if last is not None and last.text == key and now.mono_s - last.mono_s < st.config.station.hold_s:
            return None
        mono_ns = int(now.mono_s * 1e9)
        synced = bool(st.clock.synced())
        # With an unsynced clock the date may be years off: check pass signatures, not dates.
        today = dt.datetime.fromtimestamp(now.wall_s, self._tz).date() if synced else None
        try:
            person = parse_payload(text, pass_keys=st.pass_keys, today=today)
        except PayloadRefused as exc:
            logger.info("refused code (%s): %s", exc.reason, exc.detail)
            return self._emit_outcome(Outcome(Result.REFUSED, reason=exc.reason, mono_ns=mono_ns))
        person_hash = st.outbox.person_hash(person.person_key)
        blocked = st.pushed is not None and st.pushed.is_blocked(person.person_key)
        verdict = decide_checkin(st.outbox.last_checkin(person_hash), now, st.policy, blocked=blocked)
        masked = mask_person_name(person.name)
        if verdict.code in ("blocked", "passback"):
            logger.info("refused a %s card: %s", person.kind, verdict.code)  # no personal data in logs
            return self._emit_outcome(Outcome(Result.REFUSED, reason=verdict.code, kind=person.kind, mono_ns=mono_ns))
        if not verdict.accepted:
            return self._emit_outcome(
                Outcome(Result.ALREADY_COUNTED, reason=verdict.code, direction=verdict.direction,
                        masked_name=masked, kind=person.kind, mono_ns=mono_ns)
            )
        if st.low_space:
            return self._emit_outcome(Outcome(Result.FAULT, reason="storage", mono_ns=mono_ns))
        try:
            appended = st.outbox.append(
                self.record_fields(person, verdict.direction, now, synced), person_hash=person_hash, now=now
            )
        except OutboxError as exc:
            logger.error("cannot record check-in: %s", exc)
            st._set_fault("storage")
            return self._emit_outcome(Outcome(Result.FAULT, reason="storage", mono_ns=mono_ns))
        if st.fault == "storage":
            # The write worked again (space freed, card re-seated): the fault clears by itself.
            st._set_fault("")
        st.publisher.wake()
        # On disk before anyone sees green; the line names no one.
        logger.info("recorded seq %d: %s %s", appended.seq, person.kind, verdict.direction)
        result = Result.ACCEPTED if st.publisher.online else Result.ACCEPTED_OFFLINE
        return self._emit_outcome(
            Outcome(result, direction=verdict.direction, masked_name=masked, kind=person.kind, mono_ns=mono_ns)
        )

    def record_fields(self, person: Person, direction: str, now, synced: bool) -> dict[str, Any]:
        """The check-in record as the outbox signs it; the person is sealed for the server."""
        person_fields = {"id": person.id_number, "name": person.name, "birth": person.birth, "sex": person.sex}
        return {
            "type": "checkin",
            "ts": int(now.wall_s * 1000),
            "mono": int(now.mono_s * 1000),
            "boot": now.boot_id,
            "sync": synced,
            "dir": direction,
            "kind": person.kind,
            "sealed": self.sealer.seal(person_fields),
        }

    def _emit_outcome(self, outcome: Outcome) -> Outcome:
        self.counts[outcome.result.value] += 1
        if outcome.reason and outcome.result in (Result.REFUSED, Result.FAULT):
            self.counts[f"{outcome.result.value}.{outcome.reason}"] += 1
        self.station.emit(outcome)
        return outcome
