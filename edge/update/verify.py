"""Which release to install, as the TUF metadata says, verified with python-tuf's
``tuf.ngclient.Updater``: everything it refuses becomes one ``UpdateRefused`` with a
closed code (qrgate/updates.py REFUSALS), shown on the fleet page.

The trust anchor is the root.json installed with the station (``root_file``); the
updater keeps what it verified since in its own folder, so a server that later offers
older metadata (a replayed release) is refused, as is an expired timestamp (a frozen
view of the releases), a snapshot that does not match the timestamp (mixed metadata), a
file whose hash differs from the signed one, and metadata signed by a revoked key.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from pathlib import Path

from tuf.api import exceptions as tuf_errors
from tuf.api.metadata import Metadata
from tuf.ngclient import Updater, UpdaterConfig

from qrgate.errors import QrgateError
from qrgate.updates import REFUSALS, VERSION_RE, machine_arch, version_key

logger = logging.getLogger(__name__)

TARGET_PREFIX = "qrgate-"


class UpdateRefused(QrgateError):
    """The release metadata or a file failed verification; ``code`` is in REFUSALS."""

    def __init__(self, code: str, detail: str):
        assert code in REFUSALS, code
        super().__init__(f"{code}: {detail}")
        self.code = code
        self.detail = detail


class ServerUnreachable(QrgateError, OSError):
    """The release server did not answer (a station offline is normal: try later)."""


@dataclass(frozen=True)
class Offer:
    """A release the verified metadata offers for this station."""

    version: str
    arch: str
    target: str  # the target's path in the repository
    length: int


def _refusal(exc: Exception, stage: str) -> UpdateRefused:
    """Map python-tuf's errors to the station's closed list of refusals."""
    text = str(exc) or type(exc).__name__
    if isinstance(exc, tuf_errors.ExpiredMetadataError):
        return UpdateRefused("expired", text)
    if isinstance(exc, tuf_errors.UnsignedMetadataError):
        return UpdateRefused("bad_signature", text)
    if isinstance(exc, (tuf_errors.LengthOrHashMismatchError, tuf_errors.DownloadLengthMismatchError)):
        # During refresh the hashes are those of metadata named by newer metadata.
        return UpdateRefused("bad_hash" if stage == "download" else "mixed", text)
    if isinstance(exc, tuf_errors.BadVersionNumberError):
        # python-tuf's words: "New timestamp version 3 must be >= 5" and "Expected
        # targets.json version ..." (a snapshot listing older targets) are older than
        # what is trusted; "Expected snapshot version 4, got 3" is a mix of two sets.
        if "must be >=" in text or re.match(r"Expected \S+\.json version", text):
            return UpdateRefused("rollback", text)
        return UpdateRefused("mixed", text)
    if isinstance(exc, tuf_errors.RepositoryError):
        return UpdateRefused("bad_metadata", text)
    raise exc


def first_root(root_file: Path, url: str) -> None:
    """No root was installed with the station: take version 1 from the server it enrolled
    with, once (the trust enrolment already gave that server: the broker's CA and the
    server's keys came the same way). Every later root must be signed by this one."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            data = response.read(512 * 1024)
    except (urllib.error.URLError, OSError) as exc:
        raise ServerUnreachable(f"release server: cannot fetch the first root.json: {exc}") from None
    try:
        md = Metadata.from_bytes(data)
        if md.signed.type != "root" or md.signed.version != 1:
            raise ValueError("not version 1 of root.json")
        md.signed.verify_delegate("root", md.signed_bytes, md.signatures)
    except Exception as exc:  # any parse or signature failure: the file is not a root
        raise UpdateRefused("bad_metadata", f"the server's 1.root.json: {exc}") from None
    root_file.parent.mkdir(parents=True, exist_ok=True)
    tmp = root_file.with_name(root_file.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(root_file)
    logger.warning("trusting the releases' root from %s (first use; install.sh --release-root avoids this)", url)


class ReleaseChecker:
    """One check against the release server: refresh the metadata, pick, download."""

    def __init__(self, root_file: Path, metadata_dir: Path, download_dir: Path, server_url: str, *, arch: str = ""):
        base = server_url.rstrip("/")
        if not Path(root_file).exists():
            first_root(Path(root_file), f"{base}/releases/metadata/1.root.json")
        try:
            self.bootstrap = Path(root_file).read_bytes()
        except OSError as exc:
            raise QrgateError(f"no trusted root for releases: {root_file}: {exc.strerror} "
                              f"(install.sh --release-root puts it there)") from None
        self.metadata_dir = Path(metadata_dir)
        self.download_dir = Path(download_dir)
        self.metadata_dir.mkdir(parents=True, exist_ok=True)
        self.download_dir.mkdir(parents=True, exist_ok=True)
        self.arch = arch or machine_arch()
        self._updater = Updater(str(self.metadata_dir), f"{base}/releases/metadata/", str(self.download_dir),
                                f"{base}/releases/targets/", config=UpdaterConfig(), bootstrap=self.bootstrap)

    def refresh(self) -> None:
        """Fetch and verify root, timestamp, snapshot and targets (UpdateRefused, ServerUnreachable)."""
        try:
            self._updater.refresh()
        except (tuf_errors.DownloadError, OSError) as exc:
            raise ServerUnreachable(f"release server: {exc}") from None
        except tuf_errors.RepositoryError as exc:
            raise _refusal(exc, "refresh") from None

    def offers(self) -> list[Offer]:
        """Every release for this station's architecture the verified targets list, oldest first."""
        targets = Metadata.from_file(str(self.metadata_dir / "targets.json")).signed
        found = []
        for path, info in targets.targets.items():
            custom = info.unrecognized_fields.get("qrgate")
            if not path.startswith(TARGET_PREFIX) or not isinstance(custom, dict):
                continue
            version, arch = custom.get("version"), custom.get("arch")
            if arch != self.arch or not isinstance(version, str) or not VERSION_RE.match(version):
                continue
            found.append(Offer(version, arch, path, info.length))
        return sorted(found, key=lambda o: version_key(o.version))

    def newest(self, running: str, skip: set[str] = frozenset(), allowed: list[str] | None = None) -> Offer | None:
        """The newest release above ``running``, not in ``skip`` and, when the server
        named the versions this station's waves allow, one of ``allowed``; or None."""
        self.refresh()
        above = [o for o in self.offers() if version_key(o.version) > version_key(running) and o.version not in skip
                 and (allowed is None or o.version in allowed)]
        return above[-1] if above else None

    def download(self, offer: Offer) -> Path:
        """The release file, verified against its signed length and hash."""
        info = self._updater.get_targetinfo(offer.target)
        if info is None:
            raise UpdateRefused("bad_metadata", f"{offer.target} is not in the signed targets")
        cached = self._updater.find_cached_target(info)
        if cached:
            return Path(cached)
        try:
            return Path(self._updater.download_target(info))
        except (tuf_errors.RepositoryError, tuf_errors.DownloadLengthMismatchError) as exc:
            raise _refusal(exc, "download") from None
        except tuf_errors.DownloadError as exc:  # HTTP errors included
            raise ServerUnreachable(f"release file {offer.target}: {exc}") from None
