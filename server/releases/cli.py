"""qrgate-server's release commands (docs/updates.md, "Waves"): the same waves as the
releases page, from the server's shell.

  qrgate-server release-wave   --config C --version V [--percent N] [--groups a,b] [--stop-at N]
  qrgate-server release-stop   --config C --version V
  qrgate-server release-waves  --config C                 every wave and its counts, as JSON
  qrgate-server station-group  --config C --station S --group G   ("" takes it out)
"""

from __future__ import annotations

import json

from qrgate.cli import arg
from server.cli import CONFIG, app, open_storage

VERSION = arg("--version", required=True, help="the release, e.g. 0.3.0")


def _waves(config: str):
    from server.releases.service import ReleaseService

    cfg, storage = open_storage(config)
    return cfg, storage, ReleaseService(cfg.data_dir / "releases", storage).waves


def _audit(storage, action: str, **data) -> None:
    from server.audit import AuditLog

    AuditLog(storage).record(action, ip="cli", **data)


@app.command("release-wave", CONFIG, VERSION,
             arg("--percent", default="0", help="the share of stations, 0-100 (a hash of version and station id)"),
             arg("--groups", default="", help="station groups, comma separated (station-group puts a station in one)"),
             arg("--stop-at", default="10", help="stop by itself when this percent of the wave's stations fail"),
             arg("--no-announce", action="store_true", help="do not tell stations over MQTT to look now"))
def release_wave(config: str, version: str, percent: str, groups: str, stop_at: str, no_announce: bool) -> int:
    """Start a published release's wave, or widen it (stations look at once)."""
    from server.releases.waves import parse_groups, parse_percent

    cfg, storage, waves = _waves(config)
    wave = waves.start(version, parse_percent(percent), parse_groups(groups), parse_percent(stop_at, "--stop-at"))
    _audit(storage, "qrgate.release.wave", version=version, percent=wave["percent"], groups=wave["groups"],
           stop_at=wave["stop_at"], targeted=wave["targeted"])
    print(f"release {version}: wave to {wave['percent']}% of stations"
          f"{' and group(s) ' + ', '.join(wave['groups']) if wave['groups'] else ''}: {wave['targeted']} station(s)")
    if not no_announce:
        from qrgate.updates import announce

        announce(version, cfg.mqtt, cfg.base)
        print(f"announced {version} to the stations")
    return 0


@app.command("release-stop", CONFIG, VERSION)
def release_stop(config: str, version: str) -> int:
    """Stop a wave: stations not yet updated no longer get the release."""
    _, storage, waves = _waves(config)
    waves.stop(version)
    _audit(storage, "qrgate.release.wave_stopped", version=version)
    print(f"release {version}: wave stopped")
    return 0


@app.command("release-waves", CONFIG)
def release_waves(config: str) -> int:
    """Every wave, newest release first, with what its stations did (JSON)."""
    _, _, waves = _waves(config)
    print(json.dumps(waves.view(), ensure_ascii=False))
    return 0


@app.command("station-group", CONFIG, arg("--station", required=True), arg("--group", required=True))
def station_group(config: str, station: str, group: str) -> int:
    """Put a station in a named update group ("" takes it out)."""
    _, storage, waves = _waves(config)
    waves.set_group(station, group)
    _audit(storage, "qrgate.station.group", station=station, group=group.strip())
    print(f"{station}: group {group.strip() or '(none)'}")
    return 0
