"""The station side of enrolment: read the code, make the key here, fetch the binding.

Used by `qrgate-provision enroll --token ... --server ...` (from a shell) and by
`qrgate-edge enroll` (the station reads the code with its own camera or scanner).
"""

from __future__ import annotations

import json
import logging
import os
import urllib.error
import urllib.request
from pathlib import Path
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from provisioning.station import DEFAULT_STATE_DIR, Binding, state_path, station_public_key, write_station_config
from qrgate.errors import DriverError, UserError

logger = logging.getLogger(__name__)

HANDSHAKE_VERSION = 1
CODE_KEY = "qrgate_enrol"


def parse_enrol_code(text: str) -> tuple[str, str]:
    """(server URL, token) from an enrolment QR; UserError if it is not one we can use."""
    try:
        obj = json.loads(text)
    except ValueError:
        raise UserError("this is not an enrolment code") from None
    if not isinstance(obj, dict) or CODE_KEY not in obj:
        raise UserError("this is not an enrolment code")
    version = obj[CODE_KEY]
    if not isinstance(version, int) or version > HANDSHAKE_VERSION:
        raise UserError(f"enrolment code version {version} is newer than this station knows "
                        f"({HANDSHAKE_VERSION}): update the station")
    url, token = obj.get("url"), obj.get("token")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")) or not isinstance(token, str):
        raise UserError("the enrolment code has no server address or token")
    return url, token


def post_json(url: str, body: dict, *, refused: str, timeout: float = 20.0) -> dict:
    """POST JSON to the server; UserError("<refused>: <server's reason>") when it says no,
    DriverError when it cannot be reached."""
    request = urllib.request.Request(url, data=json.dumps(body).encode(),
                                     headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return json.loads(response.read())
    except urllib.error.HTTPError as exc:
        try:
            message = json.loads(exc.read()).get("error", exc.reason)
        except ValueError:
            message = exc.reason
        raise UserError(f"{refused}: {message}") from None
    except (urllib.error.URLError, OSError) as exc:
        raise DriverError(f"cannot reach {url}: {getattr(exc, 'reason', exc)}") from None


def check_writable(station_dir: Path, state_folder: Path) -> None:
    """Refuse before the one-time code is spent if the binding could not be written."""
    for folder, what in ((station_dir, "the configuration folder"), (state_folder, "the state folder")):
        probe = folder
        while not probe.exists() and probe != probe.parent:
            probe = probe.parent  # a folder still to be made: its parent must be writable
        if not os.access(probe, os.W_OK | os.X_OK):
            raise UserError(f"{what} {folder} is not writable by user id {os.getuid()}: run enrolment as the "
                            f"station's service user (sudo -u qrgate ...) on a station installed by install.sh")


def enrol(server_url: str, token: str, station_dir: Path, *, name: str = "", source: dict | None = None,
          feedback: dict | None = None, timeout: float = 20.0, state_dir: str = DEFAULT_STATE_DIR) -> Path:
    """Enrol this station; return the path of the station.toml written.

    ``state_dir`` is where the key and the outbox live ([station] state_dir; relative
    to ``station_dir``).
    """
    station_dir = Path(station_dir).resolve()
    state_folder = state_path(station_dir, state_dir)
    check_writable(station_dir, state_folder)
    public_key = station_public_key(state_folder)  # made here, on the device; never sent
    answer = post_json(server_url.rstrip("/") + "/api/enrol",
                       {"v": HANDSHAKE_VERSION, "token": token, "public_key": public_key, "name": name},
                       refused="the server refused the enrolment", timeout=timeout)
    try:
        mqtt = answer["mqtt"]
        ca_file = station_dir / "ca.crt"
        station_dir.mkdir(parents=True, exist_ok=True)
        ca_file.write_text(mqtt["ca_pem"], encoding="ascii")
        os.chmod(ca_file, 0o644)
        binding = Binding(
            station_id=answer["station_id"], venue_name=answer["venue"], server_key=answer["server_key"],
            pass_keys=tuple(answer["pass_keys"]), mqtt_host=mqtt["host"], mqtt_port=int(mqtt["port"]),
            ca_file=str(ca_file), password=mqtt["password"],
        )
        options = {"server_url": server_url.rstrip("/")}
        if "timezone" in answer:  # the server's calendar, for the dates on its passes
            options["timezone"] = str(ZoneInfo(answer["timezone"]))
    except (KeyError, TypeError, ValueError, ZoneInfoNotFoundError):
        raise UserError("the server's answer is not an enrolment binding") from None
    path = write_station_config(station_dir, binding, source=source, feedback=feedback, station_options=options,
                                state_dir=state_dir)
    logger.info("enrolled as %s at %s", binding.station_id, binding.venue_name)
    return path
