"""The station's configuration file (station.toml), checked once at start."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from edge.policy import PolicyConfig
from qrgate import protocol
from qrgate.config import MqttSettings, check_sections, load_section, option, read_toml, resolve
from qrgate.errors import ConfigError
from qrgate.sealing import x25519_public_from_text


@dataclass(frozen=True)
class StationSection:
    id: str = option()
    state_dir: str = option("state")
    venue: str = option("")  # shown on the idle screen
    # Public keys (base64) of the servers allowed to issue personal passes.
    pass_keys: tuple[str, ...] = option(())
    # The server's X25519 public key (base64): personal fields are sealed to it before
    # they touch the station's disk.
    server_key: str = option("")  # required: checked in load_station_config
    # A code seen again within this gap is the same card still held up: no new decision.
    hold_s: float = option(1.5, min=0.1, max=10.0)
    # Records not acked by the server within this time are sent again.
    resend_after_s: float = option(15.0, min=0.5, max=600.0)
    # Below this much free space on the state folder's disk the station stops accepting
    # (a clear fault) before a write can fail: nothing shown green is ever lost.
    min_free_mb: int = option(64, min=1, max=100_000)
    # The server's web address (enrolment writes it; key rotation uses it).
    server_url: str = option("")
    # Prometheus metrics on this local port (0 = off).
    metrics_port: int = option(0, min=0, max=65535)
    metrics_host: str = option("127.0.0.1")
    # How often the station checks its clock, disk space and old presence.
    housekeeping_s: float = option(5.0, min=0.05, max=300.0)
    # The venue's time zone. A pass's dates are days of the server's calendar ([web]
    # timezone there): the station checks them against today's date in this zone, not in
    # the system's (often UTC on a fresh image, seven hours behind Vietnam).
    timezone: str = option("Asia/Ho_Chi_Minh")


@dataclass(frozen=True)
class DecoderSection:
    name: str = option("default")


@dataclass(frozen=True)
class FeedbackSection:
    indicators: str = option("gpio", choices=("gpio", "none"))
    # "mock" uses gpiozero's MockFactory (no pins); "" lets gpiozero pick (lgpio on a Pi).
    pin_factory: str = option("", choices=("", "mock", "lgpio"))
    green: int = option(17, min=0, max=27)
    red: int = option(27, min=0, max=27)
    amber: int = option(22, min=0, max=27)
    buzzer: int = option(18, min=0, max=27)
    # A passive (tonal) buzzer on a PWM pin plays a pitch per result; an active one beeps.
    tonal: bool = option(False)
    panel: str = option("ssd1306", choices=("ssd1306", "sh1106", "dummy", "none"))
    i2c_port: int = option(1, min=0, max=10)
    i2c_address: int = option(0x3C, min=0x03, max=0x77)
    screen_png: str = option("")  # also write every screen to this PNG (demo, debugging)
    result_seconds: float = option(2.5, min=0.5, max=30.0)


@dataclass(frozen=True)
class StationConfig:
    path: Path
    station: StationSection
    policy: PolicyConfig
    mqtt: MqttSettings
    decoder: DecoderSection
    feedback: FeedbackSection
    source: dict[str, Any] = field(default_factory=dict)

    @property
    def base(self) -> Path:
        return self.path.parent

    @property
    def state_dir(self) -> Path:
        return resolve(self.base, self.station.state_dir)


SECTIONS = ("station", "policy", "mqtt", "decoder", "feedback", "source")


def load_station_config(path: str | Path) -> StationConfig:
    path = Path(path).resolve()
    data = read_toml(path)
    check_sections(data, SECTIONS, path)
    station = load_section(data, "station", StationSection, path)
    if not protocol.STATION_ID_RE.match(station.id):
        raise ConfigError(f"{path}: section [station]: option 'id' must be 3-63 characters of a-z, 0-9 and '-', got {station.id!r}")
    if not station.server_key:
        raise ConfigError(f"{path}: section [station]: option 'server_key' is required (qrgate-provision writes it)")
    try:
        x25519_public_from_text(station.server_key)
    except ValueError:
        raise ConfigError(f"{path}: section [station]: option 'server_key' is not a base64 X25519 key") from None
    try:
        ZoneInfo(station.timezone)
    except (ValueError, ZoneInfoNotFoundError):
        raise ConfigError(f"{path}: section [station]: option 'timezone' is not a known time zone: {station.timezone!r}") from None
    for key in station.pass_keys:
        try:
            protocol.public_key_from_text(key)
        except ValueError:
            raise ConfigError(f"{path}: section [station]: option 'pass_keys' holds {key!r}, not a base64 Ed25519 key") from None
    source = data.get("source", {})
    if not isinstance(source, dict) or "kind" not in source:
        raise ConfigError(f"{path}: section [source]: option 'kind' is required")
    return StationConfig(
        path=path,
        station=station,
        policy=load_section(data, "policy", PolicyConfig, path),
        mqtt=load_section(data, "mqtt", MqttSettings, path),
        decoder=load_section(data, "decoder", DecoderSection, path),
        feedback=load_section(data, "feedback", FeedbackSection, path),
        source=dict(source),
    )
