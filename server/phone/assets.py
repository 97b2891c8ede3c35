"""The phone scanner's files from npm, put where the page loads them, at set-up time.

``python -m server.phone.assets`` runs ``npm ci`` in server/web/static/phone/ (whose
package.json and package-lock.json pin the versions and their hashes) and copies the
few files the page loads into server/web/static/phone/vendor/: zxing-cpp's QR reader
compiled to WebAssembly (zxing-wasm, about 1 MB) and ChaCha20-Poly1305 from
@noble/ciphers (WebCrypto has no ChaCha, and the person is sealed with it,
docs/protocol.md). Neither is committed; nothing is downloaded when a page runs (the
page tells zxing-wasm where its .wasm is, and the Content-Security-Policy allows this
site only).

``python -m server.phone.assets --check`` says what is missing (or installed from another
package-lock.json), for a set-up script to install only when needed and a test to fail
with words.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

from qrgate.errors import UserError

PHONE_STATIC = Path(__file__).resolve().parents[1] / "web" / "static" / "phone"
VENDOR = PHONE_STATIC / "vendor"
STATIC_URL = "/static/phone/"
INSTALLED_FROM = "package-lock.sha256"  # in vendor/: the lock file the files came from

# vendor/<name> <- node_modules/<source>
VENDOR_FILES = {
    "zxing-wasm/es/reader/index.js": "zxing-wasm/dist/es/reader/index.js",
    "zxing-wasm/es/share.js": "zxing-wasm/dist/es/share.js",
    "zxing-wasm/reader/zxing_reader.wasm": "zxing-wasm/dist/reader/zxing_reader.wasm",
    "zxing-wasm/LICENSE": "zxing-wasm/LICENSE",
    "noble-ciphers/chacha.js": "@noble/ciphers/chacha.js",
    "noble-ciphers/_arx.js": "@noble/ciphers/_arx.js",
    "noble-ciphers/_poly1305.js": "@noble/ciphers/_poly1305.js",
    "noble-ciphers/utils.js": "@noble/ciphers/utils.js",
    "noble-ciphers/LICENSE": "@noble/ciphers/LICENSE",
}
# The project's own files of the page (the service worker caches them with the vendor files).
OWN_FILES = ("scanner.js", "camera.js", "payloads.js", "policy.js", "records.js", "store.js", "delivery.js",
             "phone.css", "icon-192.png", "icon-512.png")


def lock_digest(static: Path = PHONE_STATIC) -> str:
    return hashlib.sha256((static / "package-lock.json").read_bytes()).hexdigest()


def missing(static: Path = PHONE_STATIC) -> list[str]:
    """The vendor files not in place, or all of them when they were installed from another
    package-lock.json (empty: the page can run)."""
    stamp = static / "vendor" / INSTALLED_FROM
    if not stamp.is_file() or stamp.read_text().strip() != lock_digest(static):
        return list(VENDOR_FILES)
    return [name for name in VENDOR_FILES if not (static / "vendor" / name).is_file()]


def install(static: Path = PHONE_STATIC, npm: str = "npm") -> list[Path]:
    """``npm ci`` in ``static`` and copy the page's files into ``static/vendor``."""
    if shutil.which(npm) is None:
        raise UserError(f"{npm} not found: install it (apt install npm) to set up the phone scanner's files")
    try:
        subprocess.run([npm, "ci", "--ignore-scripts", "--no-audit", "--no-fund", "--omit=dev"], cwd=static,
                       check=True, stdout=subprocess.DEVNULL)
    except subprocess.CalledProcessError as exc:
        raise UserError(f"npm ci in {static} failed (exit status {exc.returncode})") from None
    copied = []
    for name, source in VENDOR_FILES.items():
        target = static / "vendor" / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(static / "node_modules" / source, target)
        copied.append(target)
    (static / "vendor" / INSTALLED_FROM).write_text(lock_digest(static) + "\n")
    return copied


def cached_urls() -> list[str]:
    """What the service worker keeps for offline use: the page's own files and the vendor files."""
    return [STATIC_URL + name for name in OWN_FILES] + [STATIC_URL + "vendor/" + name for name in VENDOR_FILES
                                                        if not name.endswith("LICENSE")]


def version(static: Path = PHONE_STATIC) -> str:
    """A digest of every cached file: a new one makes the service worker fetch them again."""
    digest = hashlib.sha256()
    for name in [*OWN_FILES, "sw.js", *(f"vendor/{n}" for n in VENDOR_FILES)]:
        path = static / name
        digest.update(name.encode() + b"\0")
        digest.update(path.read_bytes() if path.is_file() else b"-")
    return digest.hexdigest()[:16]


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv == ["--check"]:
        gone = missing()
        for name in gone:
            print(f"missing: {VENDOR / name}", file=sys.stderr)
        if gone:
            print("run: python -m server.phone.assets", file=sys.stderr)
        return 1 if gone else 0
    if argv:
        print("usage: python -m server.phone.assets [--check]", file=sys.stderr)
        return 2
    try:
        copied = install()
    except UserError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(f"phone scanner: {len(copied)} files in {VENDOR}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
