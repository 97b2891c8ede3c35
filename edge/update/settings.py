"""The updater's settings: /etc/qrgate/update.toml (every key optional), checked once."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from qrgate.config import check_sections, load_section, option, read_toml
from qrgate.errors import ConfigError

DEFAULT_FILE = Path("/etc/qrgate/update.toml")


@dataclass(frozen=True)
class UpdateSection:
    # The station's own config: its id, state folder (key) and the server's address.
    station_config: str = option("/etc/qrgate/station.toml")
    # The server's web address; empty: [station] server_url of station.toml.
    server_url: str = option("")
    # The trusted root.json the station starts from (install.sh puts it here).
    root_file: str = option("/etc/qrgate/release-root.json")
    # Where releases are installed: releases/<version>, and the links current and good.
    prefix: str = option("/opt/qrgate")
    # The updater's own state: TUF metadata, downloads, its journal and status.
    state_dir: str = option("/var/lib/qrgate-update")
    unit: str = option("qrgate-edge.service")
    # A new release must reach READY within ready_s of its start, and be judged
    # healthy (watchdog fed, heartbeat and record acked by the server) within trial_s.
    ready_s: float = option(60.0, min=5.0, max=1800.0)
    trial_s: float = option(180.0, min=20.0, max=7200.0)
    # How long READY must hold with the watchdog fed and no restart (>= WatchdogSec).
    steady_s: float = option(35.0, min=1.0, max=600.0)
    # How often the trial looks at the unit and asks the server.
    poll_s: float = option(3.0, min=0.1, max=60.0)
    # Releases kept on disk besides the running and the good one.
    keep_releases: int = option(1, min=0, max=10)
    # "" = this machine's (dpkg's name: amd64, arm64).
    arch: str = option("")
    # The note the station leaves when it hears a release notice (qrgate-update.path
    # watches it): one that changes while a check runs makes the updater look again.
    notice_file: str = option("/run/qrgate/release-notice")


@dataclass(frozen=True)
class UpdateSettings:
    path: Path
    update: UpdateSection

    @property
    def prefix(self) -> Path:
        return Path(self.update.prefix)

    @property
    def state_dir(self) -> Path:
        return Path(self.update.state_dir)


def load_update_settings(path: str | Path = DEFAULT_FILE) -> UpdateSettings:
    path = Path(path)
    data = read_toml(path) if path.exists() else {}
    check_sections(data, ("update",), path)
    section = load_section(data, "update", UpdateSection, path)
    if section.server_url and not re.match(r"^https?://", section.server_url):
        raise ConfigError(f"{path}: section [update]: option 'server_url' must start with https:// or http://")
    if section.trial_s <= section.ready_s:
        raise ConfigError(f"{path}: section [update]: option 'trial_s' must be longer than ready_s")
    return UpdateSettings(path=path, update=section)
