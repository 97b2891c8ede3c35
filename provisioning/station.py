"""Binding a station to a venue on one machine (demo, tests, a technician's laptop).

The station's key is generated in the station's own state folder; only its public key
is written to the server's database. The station gets its own broker account, whose
password is written to a 0600 file beside its configuration.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from edge.app import STATION_KEY_FILE
from provisioning.broker import BrokerFiles
from qrgate import protocol
from qrgate.keyfiles import load_or_create_key
from server.storage import Storage


@dataclass(frozen=True)
class StationSetup:
    station_id: str
    config_path: Path
    public_key: str


def _toml_str(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'


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
    station_dir = Path(station_dir).resolve()
    state = station_dir / "state"
    key = load_or_create_key(state / STATION_KEY_FILE)
    public = protocol.public_key_to_text(key.public_key())
    storage.add_station(station_id, public, venue_id)
    password = broker.add_user(station_id)
    pw_file = station_dir / "mqtt.password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    source = source or {"kind": "folder", "path": "images"}
    feedback = feedback or {"indicators": "gpio", "pin_factory": "mock", "panel": "dummy", "screen_png": "screen.png"}

    def table(values: dict[str, object]) -> str:
        lines = []
        for k, v in values.items():
            if isinstance(v, bool):
                lines.append(f"{k} = {'true' if v else 'false'}")
            elif isinstance(v, (int, float)):
                lines.append(f"{k} = {v}")
            else:
                lines.append(f"{k} = {_toml_str(str(v))}")
        return "\n".join(lines)

    text = f"""\
# Station {station_id}: written by qrgate-provision.
[station]
id = {_toml_str(station_id)}
state_dir = "state"
venue = {_toml_str(venue_name)}
pass_keys = [{", ".join(_toml_str(k) for k in pass_keys)}]
server_key = {_toml_str(server_key)}
{table(station_options or {})}

[policy]
mode = {_toml_str(mode)}
repeat_window_s = 30.0

[mqtt]
host = {_toml_str(broker.host)}
port = {broker.port}
tls = true
ca_file = {_toml_str(str(broker.ca_cert))}
username = {_toml_str(station_id)}
password_file = "mqtt.password"

[decoder]
name = "default"

[feedback]
{table(feedback)}

[source]
{table(source)}
"""
    config_path = station_dir / "station.toml"
    config_path.write_text(text, encoding="utf-8")
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
                        data_dir: str = "data", web_host: str = "127.0.0.1") -> Path:
    """Write server.toml and the server's broker password file beside it."""
    path = Path(path).resolve()
    path.parent.mkdir(parents=True, exist_ok=True)
    pw_file = path.parent / "mqtt.password"
    fd = os.open(pw_file, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as fh:
        fh.write(password + "\n")
    path.write_text(
        f"""\
# Server configuration: written by qrgate-provision.
[server]
data_dir = {_toml_str(data_dir)}

[web]
host = {_toml_str(web_host)}
port = {web_port}

[mqtt]
host = {_toml_str(broker.host)}
port = {broker.port}
tls = true
ca_file = {_toml_str(str(broker.ca_cert))}
username = "qrgate-server"
password_file = "mqtt.password"
""",
        encoding="utf-8",
    )
    return path
