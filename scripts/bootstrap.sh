#!/usr/bin/env bash
# Installs what qrgate needs on Debian or Raspberry Pi OS: apt packages, then a venv in .venv.
# Sourced by scripts/demo and scripts/test; usage: bootstrap <pip extras> [extra apt packages...]
# The "dev" extra (the test suite) also installs PostgreSQL and starts it: see postgresql_ready.
set -euo pipefail

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV="$ROOT/.venv"

bootstrap() {
    local extras=$1; shift
    local apt_wanted=(mosquitto libzbar0 fonts-dejavu-core python3-venv python3-dev gcc "$@") with_pg=0
    case ",$extras," in *,dev,*) with_pg=1; apt_wanted+=(postgresql) ;; esac
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
    [ $with_pg -eq 0 ] || postgresql_ready

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

# The server's tests store check-ins in a real PostgreSQL too: they need a running
# cluster and a role named after this user that may create (and drop) its own test
# databases, reached through the local socket (peer authentication, Debian's default).
postgresql_ready() {
    local as_root="" as_postgres=(sudo -u postgres)
    [ "$(id -u)" -eq 0 ] || as_root="sudo"
    [ "$(id -u)" -ne 0 ] || as_postgres=(runuser -u postgres --)
    if [ -z "$(pg_lsclusters -h 2>/dev/null)" ]; then
        local newest
        newest=$(find /usr/lib/postgresql -mindepth 1 -maxdepth 1 -printf '%f\n' | sort -V | tail -n 1)
        echo "Creating the PostgreSQL cluster $newest/main" >&2
        $as_root pg_createcluster "$newest" main >&2
    fi
    local version cluster status
    # Containers and fresh images often have the cluster but no service manager running it.
    while read -r version cluster _ status _; do
        case "$status" in
            online*) ;;
            *) echo "Starting the PostgreSQL cluster $version/$cluster" >&2
               $as_root pg_ctlcluster "$version" "$cluster" start >&2 ;;
        esac
    done < <(pg_lsclusters -h)
    local me
    me=$(id -un)
    if ! (cd / && "${as_postgres[@]}" psql -XtAc "SELECT 1 FROM pg_roles WHERE rolname = '$me'") | grep -q 1; then
        echo "Creating the PostgreSQL role $me (may create databases)" >&2
        (cd / && "${as_postgres[@]}" createuser --createdb "$me")
    fi
}

# The phone scanner's decoder (zxing-wasm, pinned by server/web/static/phone/package-lock.json)
# is copied into server/web/static/phone/vendor/ from the npm registry at set-up, never at
# run time (docs/phone.md). npm may come with Node.js from elsewhere: look for the command.
phone_assets() {
    if ! command -v npm >/dev/null; then
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo="sudo"
        echo "Installing with apt: npm" >&2
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends npm >&2
    fi
    "$VENV/bin/python" -m server.phone.assets --check 2>/dev/null || "$VENV/bin/python" -m server.phone.assets >&2
}
