"""qrgate-release: build, sign and publish station releases (docs/updates.md).

On the operator's release machine (the root key on its offline stick):
  qrgate-release init    --repo R --keys K --root-keys /media/usb
  qrgate-release build   --repo R --keys K --source . --version 0.2.0 [--arch amd64 --arch arm64]
  qrgate-release rotate-key --repo R --role targets --keys K --root-keys /media/usb
On the server:
  qrgate-release publish   --repo R --server-config /etc/qrgate/server.toml
  qrgate-release timestamp --server-config /etc/qrgate/server.toml      (every few hours, by a timer)
Anywhere:
  qrgate-release list --repo R
"""

from __future__ import annotations

import datetime as dt
import re
import shutil
from pathlib import Path

from qrgate.cli import App, arg
from qrgate.errors import UserError

app = App("qrgate-release", __doc__)

REPO = arg("--repo", required=True, help="the release repository folder (metadata/ and targets/)")
KEYS = arg("--keys", required=True, help="folder of the targets and snapshot keys (this machine)")
ROOT_KEYS = arg("--root-keys", required=True, help="folder of the root key (kept offline)")
SERVER_CONFIG = arg("--server-config", required=True, help="the server's server.toml")


def _duration(text: str) -> dt.timedelta:
    match = re.fullmatch(r"(\d+)([smhd])", text or "")
    if not match:
        raise UserError(f"a duration is a number and s, m, h or d (such as 1d), not {text!r}")
    return dt.timedelta(seconds=int(match.group(1)) * {"s": 1, "m": 60, "h": 3600, "d": 86400}[match.group(2)])


@app.command("init", REPO, KEYS, ROOT_KEYS)
def init(repo: str, keys: str, root_keys: str) -> int:
    """Make the four keys and the first signed metadata of a new release repository.

    The root key goes to --root-keys (an offline stick: it is needed again only to rotate
    a key), targets and snapshot to --keys, and the timestamp key too: copy it to the
    server's data folder as release-timestamp.pem and delete it here. Put
    metadata/1.root.json beside each installation (install.sh --release-root).
    """
    from provisioning.release_repo import ReleaseRepository

    ids = ReleaseRepository(repo).init(Path(keys), Path(root_keys))
    for role, keyid in ids.items():
        print(f"{role:9} key {keyid}")
    print(f"trusted root for stations: {Path(repo) / 'metadata' / '1.root.json'}")
    return 0


@app.command("build", REPO, KEYS, arg("--source", default=".", help="the project's source tree (default: .)"),
             arg("--version", required=True, help="the release's version, three numbers: 0.2.0"),
             arg("--arch", action="append", choices=("amd64", "arm64"),
                 help="station architecture (repeatable; default: this machine's)"),
             arg("--timestamp-key", default="", help="also sign timestamp.json here (default: the server does)"))
def build(repo: str, keys: str, source: str, version: str, arch: list[str] | None, timestamp_key: str) -> int:
    """Build the release for each architecture (wheels fetched here) and sign it in."""
    from provisioning.release_build import build_release, target_name
    from provisioning.release_repo import ReleaseRepository, key_path, load_key_file, parse_version
    from qrgate.updates import machine_arch

    repository = ReleaseRepository(repo)
    signers = {role: load_key_file(key_path(Path(keys), role)) for role in ("targets", "snapshot")}
    if timestamp_key:
        signers["timestamp"] = load_key_file(Path(timestamp_key))
    known = {r["version"] for r in repository.releases()}
    if version in known:
        raise UserError(f"release {version} exists already: a version is never reused (make {version} + 1)")
    newest = max((parse_version(v) for v in known), default=None)
    if newest is not None and parse_version(version) < newest:
        raise UserError(f"{version} is older than the newest release ({'.'.join(map(str, newest))}): stations "
                        f"never go back; to undo a release, release the old code under a newer version")
    work = Path(repo) / "build"
    for one in arch or [machine_arch()]:
        bundle = build_release(Path(source), version, one, work)
        repository.add_target(bundle, target_name(version, one), {"version": version, "arch": one}, signers)
        print(f"release {version} for {one}: {bundle.stat().st_size} bytes, signed")
        bundle.unlink()
    return 0


@app.command("publish", REPO, SERVER_CONFIG,
             arg("--timestamp-key", default="", help="default: release-timestamp.pem in the server's data folder"))
def publish(repo: str, server_config: str, timestamp_key: str) -> int:
    """Serve the repository from the server. No station takes a new release until a wave
    includes it (qrgate-server release-wave, or the releases page), which tells them."""
    from provisioning.release_publish import publish as publish_repo
    from server.config import load_server_config

    cfg = load_server_config(server_config)
    done = publish_repo(Path(repo), cfg.data_dir, Path(timestamp_key) if timestamp_key else None)
    print(f"published {done['copied']} file(s); timestamp version {done['timestamp_version']}; "
          f"newest release {done['newest']}")
    if done["newest"]:
        print(f"no station takes {done['newest']} before a wave includes it: qrgate-server release-wave "
              f"--config {server_config} --version {done['newest']} --percent 10 (or the releases page)")
    return 0


@app.command("timestamp", SERVER_CONFIG,
             arg("--timestamp-key", default="", help="default: release-timestamp.pem in the server's data folder"),
             arg("--expires", default="1d", help="how long the new timestamp holds (default 1d)"))
def timestamp(server_config: str, timestamp_key: str, expires: str) -> int:
    """Sign a fresh timestamp.json for what the server serves (run every few hours)."""
    from provisioning.release_publish import refresh_timestamp
    from server.config import load_server_config

    cfg = load_server_config(server_config)
    version = refresh_timestamp(cfg.data_dir, Path(timestamp_key) if timestamp_key else None, _duration(expires))
    print(f"timestamp version {version}, valid for {expires}")
    return 0


@app.command("rotate-key", REPO, ROOT_KEYS,
             arg("--role", required=True, choices=("targets", "snapshot", "timestamp", "root")),
             arg("--keys", default="", help="folder of the targets and snapshot keys (for targets, snapshot)"),
             arg("--timestamp-key", default="", help="the timestamp key file (for --role timestamp)"))
def rotate_key(repo: str, root_keys: str, role: str, keys: str, timestamp_key: str) -> int:
    """Replace one role's key: a new root.json (signed offline) trusts the new key only.

    The old key file is kept as <role>.pem.revoked; what it signs from now on is refused
    by every station (the status says bad_signature). Targets and snapshot are re-signed
    with the new key here; publish the repository afterwards.
    """
    from provisioning.release_repo import ReleaseRepository, key_path, load_key_file, new_key_file

    repository = ReleaseRepository(repo)
    if role not in ("root", "timestamp") and not keys:
        raise UserError(f"--keys is needed to rotate the {role} key")
    if role == "timestamp" and not timestamp_key:
        raise UserError("--timestamp-key is needed to rotate the timestamp key")
    if role == "timestamp":
        path = Path(timestamp_key)
    else:
        path = key_path(Path(root_keys) if role == "root" else Path(keys), role)
    old = load_key_file(path)
    root_signer = load_key_file(key_path(Path(root_keys), "root"))
    revoked = path.with_name(path.name + ".revoked")
    shutil.move(path, revoked)
    new = new_key_file(path)
    extra = [new] if role == "root" else []
    root_md = repository.rotate_key(role, old.public_key.keyid, new.public_key,
                                    old if role == "root" else root_signer, extra)
    if role in ("targets", "snapshot"):
        snapshot = load_key_file(key_path(Path(keys), "snapshot"))
        repository.resign(role, new if role == "targets" else snapshot, snapshot_signer=snapshot)
    print(f"root version {root_md.signed.version}: {role} key {new.public_key.keyid} replaces "
          f"{old.public_key.keyid} (kept as {revoked})")
    return 0


@app.command("list", REPO)
def list_releases(repo: str) -> int:
    """Each role's version and expiry, and every release signed in."""
    from provisioning.release_repo import ReleaseRepository, describe

    print(describe(ReleaseRepository(repo)))
    return 0


def main(argv=None) -> int:
    return app.main(argv)
