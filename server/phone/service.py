"""What the phone scanner's routes call: enrolment, the station config a phone applies,
and its signed records verified and stored by the bridge's own code.

A phone's upload is the body of a station's MQTT records message, ``{"records":[...]}``
with each record in its signed canonical form, and it goes through
``Bridge.handle(records_topic(phone), body, from_station=True)``: the same checks (the
signature first, the station's key history, retirement, exact fields, the person
sealed to the server's key, the ingest window), the same idempotent store by (station,
seq), the same refusal counts, and the same ack, which the route returns as the answer.
Before that the phone must still be allowed: the account that enrolled it must still
hold a role at the venue the phone records for.

``attach(app, ...)`` makes the service once with the server's sealing key (to open the
person), its pass key (which signs passes and station configs) and the ingest window;
the routes answer 404 until it is attached.
"""

from __future__ import annotations

import json
import logging
import threading
from dataclasses import dataclass
from typing import Annotated, Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from fastapi import Depends, FastAPI, HTTPException, Request

from qrgate import __version__, protocol
from qrgate.sealing import PersonOpener, x25519_public_to_text
from server.ingest.bridge import Bridge
from server.phone.devices import PhoneDevice, PhoneDevices
from server.storage import IngestWindow

logger = logging.getLogger(__name__)

_MAKING = threading.Lock()


@dataclass(frozen=True, slots=True)
class UploadAnswer:
    """What an upload came to: ``status`` 200 with the bridge's ``ack`` (canonical JSON
    bytes), or another status with ``reason`` (``unknown``, ``retired``, ``no_role``,
    ``malformed``)."""

    status: int
    ack: bytes = b""
    reason: str = ""


class PhoneService:
    """Phones as stations, over HTTPS."""

    def __init__(self, services, *, sealing_key: X25519PrivateKey, pass_key: Ed25519PrivateKey,
                 ingest: IngestWindow | None = None):
        self.services = services
        storage = services.storage
        self.devices = PhoneDevices(storage, services.clock)
        self.configs = self.devices.configs
        # No broker: only Bridge.handle is used. One checking thread: an upload is small,
        # and the web's own worker threads already spread uploads over the cores.
        self.bridge = Bridge(storage, None, share_group=None, opener=PersonOpener(sealing_key), check_threads=1,
                             follow_status=False, ingest=ingest)
        self.server_key = x25519_public_to_text(sealing_key.public_key())
        self.pass_key = pass_key
        self.pass_keys = (protocol.public_key_to_text(pass_key.public_key()),)

    def now_ms(self) -> int:
        return int(self.services.clock() * 1000)

    def has_role(self, device: PhoneDevice) -> bool:
        """The account that enrolled the phone still holds a role at the phone's venue."""
        return self.services.venues.role_of(device.venue_id, device.account_id) is not None

    def setup(self, device: PhoneDevice) -> dict[str, Any]:
        """What a phone keeps after enrolment: its id, venue, the keys it seals to and
        checks passes with, the venue's time zone, and its first config."""
        venue = self.services.venues.get(device.venue_id)
        return {
            "station_id": device.station_id,
            "number": device.number,
            "venue_id": device.venue_id,
            "venue": venue.name if venue else "",
            "server_key": self.server_key,
            "pass_keys": list(self.pass_keys),
            "timezone": self.services.timezone,
            **self.config(device),
        }

    def config(self, device: PhoneDevice, backlog: int | None = None) -> dict[str, Any]:
        """The station config the server pushes to stations (settings, block list), as
        built for MQTT, and the server's clock for the phone to check its own against.
        The page asks every minute while it is open: that is its heartbeat on the fleet
        page (online, backlog), as a station's status message is."""
        now_ms = self.now_ms()
        self.heard_from(device.station_id, backlog)
        return {"config": self.configs.build(device.station_id, self.pass_key, now_ms=now_ms), "server_ms": now_ms}

    def heard_from(self, station_id: str, backlog: int | None = None) -> None:
        status = {"online": True, "fw": f"{__version__} (web)", **({"backlog": backlog} if backlog is not None else {})}
        try:
            self.bridge.fleet.record_status(station_id, json.dumps(status).encode("utf-8"))
        except Exception:  # the fleet's view must never stop a phone's records
            logger.exception("could not record the status of %s", station_id)

    def upload(self, station_id: str, body: bytes) -> UploadAnswer:
        """Verify and store one records message from a phone; the answer to send."""
        device = self.devices.get(station_id)
        if device is None:
            return UploadAnswer(404, reason="unknown")
        active = device.status == "active"
        if active and not self.has_role(device):
            logger.warning("refused records from %s: its account has no role at venue %d any more",
                           station_id, device.venue_id)
            return UploadAnswer(403, reason="no_role")
        # A retired phone is refused (and counted) by the bridge itself, as over MQTT.
        ack = self.bridge.handle(protocol.records_topic(station_id), body, from_station=True)
        if ack is None:
            return UploadAnswer(400, reason="malformed") if active else UploadAnswer(403, reason="retired")
        self.heard_from(station_id)
        return UploadAnswer(200, ack=ack.to_bytes())


def attach(app: FastAPI, *, sealing_key: X25519PrivateKey, pass_key: Ed25519PrivateKey,
           ingest: IngestWindow | None = None) -> PhoneService:
    """Give ``app`` (made by server.web.app.create_app) its phone service: the server's
    X25519 sealing key, its Ed25519 pass key, and server.toml's [ingest] window. Makes
    tables: not on the event loop."""
    with _MAKING:
        found = getattr(app.state, "phone", None)
        if found is None:
            found = app.state.phone = PhoneService(app.state.services, sealing_key=sealing_key, pass_key=pass_key,
                                                   ingest=ingest)
    return found


async def phone_service(request: Request) -> PhoneService:
    """FastAPI dependency: the app's PhoneService. A server that did not attach one (an app
    made without the server's keys; server/cli.py always attaches it) has no phone API:
    404, as for any path it does not serve."""
    found = getattr(request.app.state, "phone", None)
    if found is None:
        raise HTTPException(404, "this server is not set up for phone scanners")
    return found


PhoneSvc = Annotated[PhoneService, Depends(phone_service)]
