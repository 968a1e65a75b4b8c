#!/usr/bin/env bash
# Installs what a carla-rllib training instance needs: CARLA 0.9.16's server and its system packages,
# and the project (uploaded to PROJECT_DIR) in its own virtual environment; then checks that the
# server starts headless and answers, and that the project imports.
#
#   install.sh [PROJECT_DIR]      (aws_helper.py create-image runs it on the builder instance)
#
# Idempotent: what is already in place is kept. Stops at the first failing step, naming it.
# Settings (environment): CARLA_TARBALL_URL, CARLA_ROOT, CARLA_SYSTEM_PACKAGES, PYTHON, SERVER_START_TIMEOUT_S.
set -euo pipefail

CARLA_VERSION=0.9.16
PROJECT_DIR=${1:-$HOME/carla-rllib}
CARLA_TARBALL_URL=${CARLA_TARBALL_URL:-https://carla-releases.s3.us-east-005.backblazeb2.com/Linux/CARLA_${CARLA_VERSION}.tar.gz}
CARLA_ROOT=${CARLA_ROOT:-$HOME/CARLA_${CARLA_VERSION}}
# libomp5: CARLA's physics; libvulkan1: off-screen rendering on the NVIDIA driver; xdg-user-dirs: UE4 start-up;
# python3-venv: the project's environment; rsync: aws_helper.py put/get.
CARLA_SYSTEM_PACKAGES=${CARLA_SYSTEM_PACKAGES-libomp5 libvulkan1 xdg-user-dirs python3-venv rsync}
PYTHON=${PYTHON:-python3}
STATE_DIR=$HOME/.carla-rllib          # the venv and env.sh, which run_aws.bash's runs source
VENV=$STATE_DIR/venv
SERVER_START_TIMEOUT_S=${SERVER_START_TIMEOUT_S:-300}  # CARLA's first start compiles shaders

SERVER_PID=""                         # the check's server, stopped with its whole session on any exit

step() { printf '\n==> %s\n' "$*"; }
stop_server() {
    if [[ -n $SERVER_PID ]]; then
        kill -TERM -- "-$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
        SERVER_PID=""
    fi
}
trap 'echo "install.sh: FAILED at line $LINENO: $BASH_COMMAND" >&2' ERR
trap stop_server EXIT

install_system_packages() {
    step "system packages: ${CARLA_SYSTEM_PACKAGES:-(none)}"
    local missing=() package
    for package in $CARLA_SYSTEM_PACKAGES; do
        dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q 'install ok installed' || missing+=("$package")
    done
    if ((${#missing[@]} == 0)); then
        echo "all installed"
        return
    fi
    # A fresh instance is still booting: cloud-init and unattended upgrades hold apt's lock for a while.
    if command -v cloud-init > /dev/null; then cloud-init status --wait > /dev/null || true; fi
    local sudo=() apt=(apt-get -q -o DPkg::Lock::Timeout=600)
    ((EUID == 0)) || sudo=(sudo -n)
    "${sudo[@]}" "${apt[@]}" update
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y --no-install-recommends "${missing[@]}"
}

install_carla() {
    step "CARLA $CARLA_VERSION server in $CARLA_ROOT"
    if [[ -x $CARLA_ROOT/CarlaUE4.sh ]]; then
        echo "already installed"
        return
    fi
    # Unpacked next to the target and renamed at the end, so an interrupted run leaves no half install.
    local partial=$CARLA_ROOT.partial
    rm -rf "$partial" && mkdir -p "$partial"
    echo "downloading $CARLA_TARBALL_URL"
    curl --fail --location --retry 3 --show-error --silent "$CARLA_TARBALL_URL" | tar -xz -C "$partial"
    [[ -x $partial/CarlaUE4.sh ]] || { echo "install.sh: the tarball has no CarlaUE4.sh at its top level" >&2; return 1; }
    mv "$partial" "$CARLA_ROOT"
}

install_project() {
    step "project $PROJECT_DIR in $VENV"
    [[ -f $PROJECT_DIR/setup.py ]] || { echo "install.sh: no project in $PROJECT_DIR (setup.py missing)" >&2; return 1; }
    [[ -x $VENV/bin/python ]] || "$PYTHON" -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --editable "$PROJECT_DIR"
    local env_file=$STATE_DIR/env.sh
    cat > "$env_file.new" <<EOF
# Written by install.sh: the environment training runs use (run_aws.bash sources it on the instance).
export CARLA_ROOT=$(printf '%q' "$CARLA_ROOT")
. $(printf '%q' "$VENV/bin/activate")
EOF
    mv "$env_file.new" "$env_file"
}

free_port() {
    "$VENV/bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

check_server() {
    step "check: CARLA server starts headless and answers"
    local port log deadline version=""
    port=$(free_port)
    log=$STATE_DIR/server-check.log
    # Its own session (process group = its pid), so the server and all it spawned stop together.
    (
        # shellcheck source=/dev/null
        . "$STATE_DIR/env.sh"
        exec setsid "$CARLA_ROOT/CarlaUE4.sh" -RenderOffScreen -carla-rpc-port="$port" > "$log" 2>&1
    ) &
    SERVER_PID=$!
    deadline=$((SECONDS + SERVER_START_TIMEOUT_S))
    while ((SECONDS < deadline)); do
        if ! kill -0 "$SERVER_PID" 2>/dev/null; then
            echo "install.sh: the CARLA server exited while starting; its output:" >&2
            tail -n 20 "$log" >&2
            return 1
        fi
        version=$("$VENV/bin/python" - "$port" <<'EOF' 2>/dev/null || true
import sys
import carla
client = carla.Client("127.0.0.1", int(sys.argv[1]))
client.set_timeout(5.0)
print(client.get_server_version())
EOF
)
        [[ -n $version ]] && break
        sleep 2
    done
    if [[ $version != "$CARLA_VERSION" ]]; then
        echo "install.sh: the CARLA server did not answer as $CARLA_VERSION within ${SERVER_START_TIMEOUT_S} s (got '${version}')" >&2
        tail -n 20 "$log" >&2
        return 1
    fi
    echo "server $version answered on port $port"
    stop_server
}

check_project() {
    step "check: the project imports"
    "$VENV/bin/python" -c "import rllib_integration; print('rllib_integration from', rllib_integration.__file__)"
}

install_system_packages
install_carla
install_project
check_server
check_project
step "carla-rllib is installed"
