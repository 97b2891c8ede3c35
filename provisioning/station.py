"""Binding a station to a venue on one machine (demo, tests, a technician's laptop).

The station's key is generated in the station's own state folder; only its public key
is written to the server's database. The station gets its own broker account, whose
password is written to a 0600 file beside its configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from edge.app import STATION_KEY_FILE
from provisioning.broker import BrokerFiles
from provisioning.broker_accounts import RESERVED_PREFIX, is_reserved_username
from qrgate import protocol
from qrgate.errors import UserError
from qrgate.keyfiles import load_or_create_key

if TYPE_CHECKING:  # the station side imports this module too, without the server
    from server.storage import Storage


@dataclass(frozen=True)
class StationSetup:
    station_id: str
    config_path: Path
    public_key: str


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


@dataclass(frozen=True)
class Binding:
    """What a station must know to work for a server: the outcome of enrolment."""

    station_id: str
    venue_name: str
    server_key: str  # X25519, seals personal fields
    pass_keys: tuple[str, ...]  # Ed25519 keys whose passes and configs the station trusts
    mqtt_host: str
    mqtt_port: int
    ca_file: str
    password: str


def _write_private(path: Path, text: str) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(text)


def _table(values: dict[str, object]) -> str:
    lines = []
    for k, v in values.items():
        if isinstance(v, bool):
            lines.append(f"{k} = {'true' if v else 'false'}")
        elif isinstance(v, (int, float)):
            lines.append(f"{k} = {v}")
        else:
            lines.append(f"{k} = {_toml_str(str(v))}")
    return "\n".join(lines)


# A station folder made by hand or by the demo keeps its state beside station.toml.
DEFAULT_STATE_DIR = "state"
DEFAULT_SOURCE = {"kind": "folder", "path": "images"}
DEFAULT_FEEDBACK = {"indicators": "gpio", "pin_factory": "mock", "panel": "dummy", "screen_png": "screen.png"}


def write_station_config(station_dir: Path, binding: Binding, *, source: dict[str, object] | None = None,
                         feedback: dict[str, object] | None = None, mode: str = "toggle",
                         station_options: dict[str, object] | None = None, state_dir: str = DEFAULT_STATE_DIR) -> Path:
    """Write station.toml and the 0600 broker password file into ``station_dir``.

    ``state_dir`` (the key, the outbox) is written as given: relative paths resolve
    beside station.toml; an installed station keeps it in /var/lib/qrgate, the one
    folder its unit may write.
    """
    station_dir = Path(station_dir).resolve()
    station_dir.mkdir(parents=True, exist_ok=True)
    _write_private(station_dir / "mqtt.password", binding.password + "\n")
    text = f"""\
# Station {binding.station_id}: written by qrgate-provision.
[station]
id = {_toml_str(binding.station_id)}
state_dir = {_toml_str(state_dir)}
venue = {_toml_str(binding.venue_name)}
pass_keys = [{", ".join(_toml_str(k) for k in binding.pass_keys)}]
server_key = {_toml_str(binding.server_key)}
{_table(station_options or {})}

[policy]
mode = {_toml_str(mode)}
repeat_window_s = 30.0

[mqtt]
host = {_toml_str(binding.mqtt_host)}
port = {binding.mqtt_port}
tls = true
ca_file = {_toml_str(binding.ca_file)}
username = {_toml_str(binding.station_id)}
password_file = "mqtt.password"

[decoder]
name = "default"

[feedback]
{_table(feedback or DEFAULT_FEEDBACK)}

[source]
{_table(source or DEFAULT_SOURCE)}
"""
    config_path = station_dir / "station.toml"
    tmp = config_path.with_name("station.toml.new")
    tmp.write_text(text, encoding="utf-8")
    os.chmod(tmp, 0o640)
    os.replace(tmp, config_path)
    return config_path


def state_path(station_dir: Path, state_dir: str = DEFAULT_STATE_DIR) -> Path:
    """The state folder as the station will resolve it (relative to station.toml's folder)."""
    return Path(station_dir).resolve() / state_dir  # an absolute state_dir wins the join


def station_public_key(state_folder: Path) -> str:
    """Make (once) the station's Ed25519 key in its state folder; return the public half."""
    key = load_or_create_key(Path(state_folder) / STATION_KEY_FILE)
    return protocol.public_key_to_text(key.public_key())


def enroll_local(
    *,
    storage: Storage,
    broker: BrokerFiles,
    station_id: str,
    venue_id: int,
    station_dir: Path,
    server_key: str,
    venue_name: str = "",
    pass_keys: tuple[str, ...] = (),
    source: dict[str, object] | None = None,
    mode: str = "toggle",
    feedback: dict[str, object] | None = None,
    station_options: dict[str, object] | None = None,
) -> StationSetup:
    """Create the station's key, register it, give it broker credentials, write station.toml."""
    if is_reserved_username(station_id):  # the server's own broker accounts
        raise UserError(f"station id {station_id}: ids starting with '{RESERVED_PREFIX}' are the server's")
    public = station_public_key(state_path(station_dir))
    storage.add_station(station_id, public, venue_id)
    binding = Binding(station_id, venue_name, server_key, tuple(pass_keys), broker.host, broker.port,
                      str(broker.ca_cert), broker.add_user(station_id))
    config_path = write_station_config(station_dir, binding, source=source, feedback=feedback, mode=mode,
                                       station_options=station_options)
    return StationSetup(station_id, config_path, public)


def server_public_keys(server_config) -> tuple[str, str]:
    """The server's pass-signing (Ed25519) and sealing (X25519) public keys, as text.

    Both private keys are made in the server's data folder on first use.
    """
    from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

    from qrgate.sealing import x25519_public_to_text

    signing = load_or_create_key(server_config.pass_key_file)
    sealing = load_or_create_key(server_config.sealing_key_file, X25519PrivateKey)
    return protocol.public_key_to_text(signing.public_key()), x25519_public_to_text(sealing.public_key())


def write_server_config(path: Path, *, broker: BrokerFiles, password: str, web_port: int,
                        data_dir: str = "data", web_host: str = "127.0.0.1", database: str = "",
                        public_feed: bool = False, trusted_proxies: tuple[str, ...] = ()) -> Path:
    """Write server.toml and the server's broker password file beside it; ``database``
    (a postgresql:// URL) puts the server's tables on PostgreSQL instead of SQLite.

    ``public_feed`` and ``trusted_proxies`` are written out even at their defaults, with
    what they do, so whoever reads the file sees the choice made ([web] in server/config.py).
    """
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    _write_private(path.parent / "mqtt.password", password + "\n")
    path.write_text(
        f"""\
# Server configuration: written by qrgate-provision.
[server]
data_dir = {_toml_str(data_dir)}
{f"database = {_toml_str(database)}" if database else ""}

[web]
host = {_toml_str(web_host)}
port = {web_port}
# true: anyone who opens / sees the latest (masked) check-ins of every venue.
public_feed = {"true" if public_feed else "false"}
# Reverse proxies (addresses or networks) whose X-Forwarded-For is believed; empty:
# none, the connecting address is the visitor's (docs/security.md, "Behind a reverse proxy").
trusted_proxies = [{", ".join(_toml_str(p) for p in trusted_proxies)}]

[mqtt]
host = {_toml_str(broker.host)}
port = {broker.port}
tls = true
ca_file = {_toml_str(str(broker.ca_cert))}
username = "qrgate-server"
password_file = "mqtt.password"

[broker]
files_dir = {_toml_str(str(broker.directory))}
""",
        encoding="utf-8",
    )
    return path
