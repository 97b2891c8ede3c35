#!/usr/bin/env bash
# Install qrgate on 64-bit Raspberry Pi OS (or Debian) as a station or a server.
#
#   sudo provisioning/install.sh                 # a station (default)
#   sudo provisioning/install.sh --role server   # the server (with Mosquitto)
#   provisioning/install.sh --dry-run            # print every step, change nothing
#
# Creates the service user qrgate (groups gpio i2c video input dialout for a station),
# a venv in /opt/qrgate/venv that sees apt's picamera2, lgpio and evdev, config in
# /etc/qrgate (0750, files 0640), state in /var/lib/qrgate, udev rules for scanners and
# the systemd unit, enabled. Run it again to upgrade: it keeps config and state.
set -euo pipefail

ROLE=station
DRY=0
PREFIX=/opt/qrgate
SRC=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//'; }

while [ $# -gt 0 ]; do
    case "$1" in
        --role) ROLE=${2:-}; shift 2 ;;
        --dry-run) DRY=1; shift ;;
        --prefix) PREFIX=${2:-}; shift 2 ;;
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

if [ "$DRY" -eq 0 ] && [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: error: run as root (sudo), or with --dry-run to see the steps" >&2
    exit 1
fi

APT=(python3-venv python3-dev gcc libzbar0 fonts-dejavu-core)
GROUPS_WANTED=()
UNIT=qrgate-server.service
EXTRAS=server
if [ "$ROLE" = station ]; then
    APT+=(python3-picamera2 python3-lgpio python3-evdev i2c-tools)
    GROUPS_WANTED=(gpio i2c video input dialout)
    UNIT=qrgate-edge.service
    EXTRAS=pi
else
    APT+=(mosquitto)
fi

echo "Installing qrgate ($ROLE) from $SRC into $PREFIX"
run apt-get update -qq
run env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT[@]}"

if ! id qrgate >/dev/null 2>&1; then
    run useradd --system --home-dir /var/lib/qrgate --no-create-home --shell /usr/sbin/nologin qrgate
fi
for group in "${GROUPS_WANTED[@]}"; do
    if getent group "$group" >/dev/null; then
        run usermod -a -G "$group" qrgate
    else
        echo "note: group $group does not exist here; skipped" >&2
    fi
done

copy_source() {
    # The code and docs only: not a developer's venv, git history or demo data.
    tar -C "$SRC" --exclude=./.venv --exclude=./.git --exclude=./demo-data -cf - . | tar -C "$PREFIX/src.new" -xf -
}

run install -d -m 0755 "$PREFIX"
run rm -rf "$PREFIX/src.new"
run install -d -m 0755 "$PREFIX/src.new"
if [ "$DRY" -eq 1 ]; then
    echo "+ tar -C $SRC --exclude=./.venv --exclude=./.git --exclude=./demo-data -cf - . | tar -C $PREFIX/src.new -xf -"
else
    copy_source
fi
run rm -rf "$PREFIX/src"
run mv "$PREFIX/src.new" "$PREFIX/src"
# apt's picamera2, lgpio and evdev live in the system site packages: the venv sees them.
if [ ! -x "$PREFIX/venv/bin/python" ]; then
    run python3 -m venv --system-site-packages "$PREFIX/venv"
fi
run "$PREFIX/venv/bin/python" -m pip install -q --upgrade pip
run "$PREFIX/venv/bin/python" -m pip install -q -c "$PREFIX/src/constraints.txt" "$PREFIX/src[$EXTRAS]"

run install -d -m 0750 -o root -g qrgate /etc/qrgate
run install -d -m 0700 -o qrgate -g qrgate /var/lib/qrgate
if [ "$ROLE" = server ]; then
    run install -d -m 0750 -o qrgate -g qrgate /etc/qrgate/broker
fi
if [ "$ROLE" = station ]; then
    run install -m 0644 "$SRC/provisioning/udev/99-qrgate.rules" /etc/udev/rules.d/99-qrgate.rules
    run udevadm control --reload-rules
    run udevadm trigger --subsystem-match=tty --subsystem-match=input
fi
run install -m 0644 "$SRC/systemd/$UNIT" "/etc/systemd/system/$UNIT"
if [ "$ROLE" = server ]; then
    run install -m 0644 "$SRC/systemd/qrgate-broker.service" /etc/systemd/system/qrgate-broker.service
    # Extra bridge workers and web processes (docs/scaling.md): installed, not enabled.
    run install -m 0644 "$SRC/systemd/qrgate-bridge@.service" "/etc/systemd/system/qrgate-bridge@.service"
    run install -m 0644 "$SRC/systemd/qrgate-web@.service" "/etc/systemd/system/qrgate-web@.service"
fi
run systemctl daemon-reload
run systemctl enable "$UNIT"
if [ "$ROLE" = server ]; then
    run systemctl enable qrgate-broker.service
fi

if [ "$ROLE" = station ]; then
    cat <<TXT
Done. Next, bind this station to a venue: put a setup file in /etc/qrgate/station.toml
with [source] and [feedback] (see docs/technician.md), then run
    sudo -u qrgate $PREFIX/venv/bin/qrgate-edge enroll --config /etc/qrgate/station.toml
and show the setup code from the server to the camera. Then: systemctl start $UNIT
TXT
    echo
else
    echo "Done. Write /etc/qrgate/server.toml (docs/operator.md), then: systemctl start $UNIT"
fi
