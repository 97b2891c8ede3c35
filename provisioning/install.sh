#!/usr/bin/env bash
# Install qrgate on 64-bit Raspberry Pi OS (or Debian 12) as a station or a server.
#
#   sudo provisioning/install.sh                 # a station (default)
#   sudo provisioning/install.sh --role server   # the server (with Mosquitto)
#   provisioning/install.sh --dry-run            # print every step, change nothing
#   --release-root FILE                          # the releases' trusted root.json (docs/updates.md)
#
# Creates the service user qrgate (groups gpio i2c video input dialout for a station),
# the release /opt/qrgate/releases/<version> (its source and a venv that sees apt's numpy,
# evdev, picamera2 and lgpio) with the links current and good to it, config in
# /etc/qrgate, state in /var/lib/qrgate, udev rules for serial scanners and the systemd
# units, enabled. Run it again to upgrade: it keeps config and state.
set -euo pipefail

ROLE=station
DRY=0
RELEASE_ROOT=
PREFIX=/opt/qrgate
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,13p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --role) ROLE=${2:-}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --prefix) PREFIX=${2:-}; shift 2 ;;
        --release-root) RELEASE_ROOT=${2:-}; shift 2 ;;
        -h|--help) usage; exit 0 ;;
        *) echo "install.sh: error: unknown argument $1" >&2; usage >&2; exit 1 ;;
    esac
done
case "$ROLE" in
    station|server) ;;
    *) echo "install.sh: error: --role must be station or server, not '$ROLE'" >&2; exit 1 ;;
esac

run() {
    if [ "$DRY" -eq 1 ]; then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}
note() { echo "note: $*" >&2; }

if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: error: run as root (sudo), or with --dry-run to see the steps" >&2
    exit 1
fi

# No compiler: every dependency comes as a wheel or as pure Python.
APT=(python3-venv libzbar0 fonts-dejavu-core)
GROUPS_WANTED=()
UNIT=qrgate-server.service
EXTRAS=server
# Packages apt provides for a station, which pip must not replace: picamera2's compiled
# parts (simplejpeg, libcamera) are built against apt's numpy, and a numpy 2 from pip in
# the venv makes them fail to import ("numpy.dtype size changed").
APT_PROVIDES=()
PI_APT=()
if [ "$ROLE" = station ]; then
    APT+=(python3-numpy python3-evdev i2c-tools)
    APT_PROVIDES=(numpy evdev)
    # Only in the Raspberry Pi archive: a Debian mini PC with a USB scanner is a station too.
    PI_APT=(python3-picamera2 python3-lgpio)
    GROUPS_WANTED=(gpio i2c video input dialout)
    UNIT=qrgate-edge.service
    EXTRAS=pi
else
    APT+=(mosquitto npm)
fi

echo "Installing qrgate ($ROLE) from $SRC into $PREFIX"
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT[@]}"
if [ ${#PI_APT[@]} -gt 0 ]; then
    if [ "$DRY" -eq 1 ]; then
        echo "+ (where the Raspberry Pi archive offers them) apt-get install -y -qq ${PI_APT[*]}"
    elif apt-cache show "${PI_APT[@]}" >/dev/null 2>&1; then
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${PI_APT[@]}"
    else
        note "${PI_APT[*]} are not offered here (not Raspberry Pi OS): no Pi camera or Pi pins;" \
             "USB scanners, image folders and the screen work"
    fi
fi

if ! id qrgate >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/qrgate --no-create-home --shell /usr/sbin/nologin qrgate
fi
for group in "${GROUPS_WANTED[@]}"; do
    if ! getent group "$group" >/dev/null; then
        # Raspberry Pi OS has gpio and i2c; plain Debian does not, and the unit's
        # SupplementaryGroups= would fail (status=216/GROUP) without them.
        run groupadd --system "$group"
    fi
    run usermod -a -G "$group" qrgate
done

# The A/B layout (docs/updates.md): each release in its own folder, chosen by links that
# are replaced with a rename. The updater installs later releases the same way.
VERSION=$(sed -n 's/^version = "\([0-9.]*\)"$/\1/p' "$SRC/pyproject.toml" | head -n 1)
if [ -z "$VERSION" ]; then
    echo "install.sh: error: no version line in $SRC/pyproject.toml" >&2
    exit 1
fi
REL="$PREFIX/releases/$VERSION"

copy_source() {
    # The code and docs only: not a developer's venv, git history or demo data.
    tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./demo-data -cf - . | tar -C "$REL/src.new" -xf -
}

# point LINK VERSION: LINK -> releases/VERSION, atomically (a new link renamed over the old).
point() {
    run ln -sfn "releases/$VERSION" "$PREFIX/.$1.new"
    run mv -T "$PREFIX/.$1.new" "$PREFIX/$1"
}

run install -d -m 0755 "$PREFIX" "$PREFIX/releases"
if [ "$DRY" -eq 0 ] && [ -e "$REL" ] && [ "$(readlink "$PREFIX/current" 2>/dev/null)" != "releases/$VERSION" ]; then
    rm -rf "$REL"  # an install cut short, or a release not running: made afresh
fi
run install -d -m 0755 "$REL"
run rm -rf "$REL/src.new"
run install -d -m 0755 "$REL/src.new"
if [ "$DRY" -eq 1 ]; then
    echo "+ tar -C $SRC --exclude=./.venv --exclude=./.git --exclude=./demo-data -cf - . | tar -C $REL/src.new -xf -"
else
    copy_source
fi
run rm -rf "$REL/src"
run mv "$REL/src.new" "$REL/src"
# apt's numpy, evdev, picamera2 and lgpio live in the system site packages: the venv sees them.
if [ ! -x "$REL/venv/bin/python" ]; then
    run python3 -m venv --system-site-packages "$REL/venv"
fi
# The pinned versions, less those apt provides (pip would otherwise install its own over them).
CONSTRAINTS="$REL/src/constraints.txt"
if [ ${#APT_PROVIDES[@]} -gt 0 ]; then
    CONSTRAINTS="$PREFIX/constraints-$ROLE.txt"
    pattern="^($(IFS='|'; echo "${APT_PROVIDES[*]}"))=="
    if [ "$DRY" -eq 1 ]; then
        echo "+ grep -v -E '$pattern' $REL/src/constraints.txt > $CONSTRAINTS"
    else
        grep -v -E "$pattern" "$REL/src/constraints.txt" > "$CONSTRAINTS"
    fi
fi
# pip's whole output (what it downloaded, any wheel it had to build) goes to a log.
LOG=/var/log/qrgate-install.log
pip_install() {
    if [ "$DRY" -eq 1 ]; then
        echo "+ $REL/venv/bin/python -m pip install $* >> $LOG"
    elif ! "$REL/venv/bin/python" -m pip install "$@" >>"$LOG" 2>&1; then
        tail -n 30 "$LOG" >&2
        echo "install.sh: error: pip failed; its whole output is in $LOG" >&2
        exit 1
    fi
}
pip_install --upgrade pip
if [ "$ROLE" = server ]; then
    # The phone scanner's decoder from the npm registry, pinned by its lock file (docs/phone.md),
    # into the source before it is installed: the page never downloads anything.
    run env -C "$REL/src" python3 -m server.phone.assets
fi
pip_install --prefer-binary -c "$CONSTRAINTS" "$REL/src[$EXTRAS]"
for module in "${APT_PROVIDES[@]}"; do
    if [ "$DRY" -eq 1 ]; then
        echo "+ check that the venv imports $module from apt (/usr/lib/python3/dist-packages)"
    elif ! "$REL/venv/bin/python" -c "import sys, $module; sys.exit(not $module.__file__.startswith('/usr/lib/python3/'))"; then
        echo "install.sh: error: the venv's $module is not apt's; remove it with" \
             "$REL/venv/bin/python -m pip uninstall $module, then run install.sh again" >&2
        exit 1
    fi
done
# Written last: a release folder without it is an install cut short (edge/update/layout.py).
if [ "$DRY" -eq 1 ]; then
    echo "+ write $REL/release.json"
else
    sync -f "$REL"
    printf '{"version": "%s", "made": "install.sh"}\n' "$VERSION" > "$REL/release.json"
fi
point current
point good
# The paths the guides and older units use, through the current release.
for name in venv src; do
    if [ -d "$PREFIX/$name" ] && [ ! -L "$PREFIX/$name" ]; then
        run rm -rf "$PREFIX/$name.before-releases"
        run mv "$PREFIX/$name" "$PREFIX/$name.before-releases"  # a station installed before releases
    fi
    run ln -sfn "current/$name" "$PREFIX/.$name.new"
    run mv -T "$PREFIX/.$name.new" "$PREFIX/$name"
done

if [ "$ROLE" = station ]; then
    # The station's service user writes its binding here when it enrols
    # (sudo -u qrgate qrgate-edge enroll); the unit itself only reads it.
    run install -d -m 0750 -o qrgate -g qrgate /etc/qrgate
else
    run install -d -m 0750 -o root -g qrgate /etc/qrgate
    run install -d -m 0750 -o qrgate -g qrgate /etc/qrgate/broker
fi
run install -d -m 0700 -o qrgate -g qrgate /var/lib/qrgate
if [ "$ROLE" = station ]; then
    if [ ! -e /etc/qrgate/station.toml ]; then
        run install -m 0640 -o qrgate -g qrgate "$SRC/provisioning/station.toml.in" /etc/qrgate/station.toml
    fi
    if [ -n "$RELEASE_ROOT" ]; then
        # The trust anchor of every later release (docs/updates.md): without it, the
        # updater takes the enrolled server's 1.root.json at its first run.
        run install -m 0644 "$RELEASE_ROOT" /etc/qrgate/release-root.json
    fi
    run install -m 0644 "$SRC/provisioning/udev/99-qrgate.rules" /etc/udev/rules.d/99-qrgate.rules
    if [ "$DRY" -eq 1 ] || udevadm control --ping >/dev/null 2>&1; then
        run udevadm control --reload-rules
        run udevadm trigger --subsystem-match=tty
    else
        note "udev is not running here (a container?): the scanner rules apply from the next boot"
    fi
    if command -v raspi-config >/dev/null 2>&1; then
        # The screen is on I2C, which Raspberry Pi OS leaves off (0 means: enable).
        run raspi-config nonint do_i2c 0
    fi
fi
run install -m 0644 "$SRC/systemd/$UNIT" "/etc/systemd/system/$UNIT"
if [ "$ROLE" = station ]; then
    # The updater: by a timer, at boot (a trial a power cut interrupted), and when the
    # station hears a release notice (the .path unit).
    for unit in qrgate-update.service qrgate-update.timer qrgate-update.path; do
        run install -m 0644 "$SRC/systemd/$unit" "/etc/systemd/system/$unit"
    done
fi
if [ "$ROLE" = server ]; then
    run install -m 0644 "$SRC/systemd/qrgate-broker.service" /etc/systemd/system/qrgate-broker.service
    # Extra bridge workers and web processes (docs/scaling.md): installed, not enabled.
    run install -m 0644 "$SRC/systemd/qrgate-bridge@.service" "/etc/systemd/system/qrgate-bridge@.service"
    run install -m 0644 "$SRC/systemd/qrgate-web@.service" "/etc/systemd/system/qrgate-web@.service"
    # A fresh release timestamp every 6 hours (docs/updates.md): enabled by the operator.
    run install -m 0644 "$SRC/systemd/qrgate-release-timestamp.service" /etc/systemd/system/
    run install -m 0644 "$SRC/systemd/qrgate-release-timestamp.timer" /etc/systemd/system/
fi
run systemctl daemon-reload
run systemctl enable "$UNIT"
if [ "$ROLE" = station ]; then
    run systemctl enable qrgate-update.service qrgate-update.timer qrgate-update.path
fi
if [ "$ROLE" = server ]; then
    run systemctl enable qrgate-broker.service
fi

if [ "$ROLE" = station ]; then
    cat <<TXT
Done. Next, say which camera or scanner and screen this station has in
/etc/qrgate/station.toml ([source] and [feedback], docs/technician.md), then bind it:
    sudo -u qrgate $PREFIX/venv/bin/qrgate-edge enroll --config /etc/qrgate/station.toml
and show the setup code from the server to the camera or scanner. Then:
    sudo systemctl enable --now $UNIT
(The unit waits for the binding: it does not start before enrolment.)
TXT
else
    echo "Done. Set up the broker and write /etc/qrgate/server.toml (docs/operator.md), then:" \
         "systemctl start qrgate-broker $UNIT"
fi
