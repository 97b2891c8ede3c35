#!/usr/bin/env bash
# Installs what qrgate needs on Debian or Raspberry Pi OS: apt packages, then a venv in .venv.
# Sourced by scripts/demo and scripts/test; usage: bootstrap <pip extras> [extra apt packages...]
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

bootstrap() {
    local extras=$1; shift
    local apt_wanted=(mosquitto libzbar0 fonts-dejavu-core python3-venv python3-dev gcc "$@")
    local missing=()
    for pkg in "${apt_wanted[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -gt 0 ]; then
        echo "Installing with apt: ${missing[*]}" >&2
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
    fi

    if [ ! -x "$VENV/bin/python" ]; then
        local site=()
        # On a Pi, picamera2, lgpio and evdev come from apt: let the venv see them.
        if grep -qs "Raspberry Pi" /proc/device-tree/model; then site=(--system-site-packages); fi
        python3 -m venv "${site[@]}" "$VENV"
    fi
    # Reinstall only when the pins changed or an extra is asked for that is not there yet.
    local hash installed
    hash=$(cat "$ROOT/pyproject.toml" "$ROOT/constraints.txt" | sha256sum | cut -c1-16)
    installed=$(cat "$VENV/.qrgate-installed" 2>/dev/null || true)
    local have_hash=${installed%% *} have_extras=" ${installed#* } " need=0 extra
    [ "$have_hash" = "$hash" ] || { need=1; have_extras=" "; }
    for extra in ${extras//,/ }; do
        case "$have_extras" in *" $extra "*) ;; *) need=1; have_extras="$have_extras$extra " ;; esac
    done
    if [ $need -eq 1 ]; then
        local all
        all=$(echo "$have_extras" | xargs | tr ' ' ',')
        echo "Installing Python packages into .venv ($all)" >&2
        "$VENV/bin/python" -m pip install -q --upgrade pip >&2
        "$VENV/bin/python" -m pip install -q -c "$ROOT/constraints.txt" -e "${ROOT}[${all}]" >&2
        echo "$hash $(echo "$have_extras" | xargs)" > "$VENV/.qrgate-installed"
    fi
}
