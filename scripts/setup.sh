#!/usr/bin/env bash
# Prepares a Debian or Ubuntu machine (with Rust installed) to build berth and
# run its tests. Idempotent: installs only what is missing, starts only what
# is not running.
#
#   scripts/setup.sh
#
# - Docker Engine: Debian's docker.io when `docker` is missing; started when
#   `docker info` fails (systemctl, or dockerd in the background with its log
#   in /tmp/berth-dockerd.log when there is no systemd).
# - busybox-static: /bin/busybox, from which scripts/test-image.sh builds the
#   test image (no registry is reachable from the test machines).
# - docker-registry: Debian's distribution registry binary; the e2e tests run
#   their own instances of it on loopback ports. When this script installs the
#   package it disables the system service the package may start on port
#   5000: the tests never use it.
# - postgresql: Debian's server binaries (/usr/lib/postgresql/*/bin); the
#   tests run throwaway clusters of their own on loopback ports
#   (tests/src/postgres.rs). When this script installs the package it stops
#   and disables the cluster the package may start on port 5432.
# - Python test virtualenv: target/test-venv (or $BERTH_TEST_VENV), made with
#   `python3 -m venv`, with pinned botocore, boto3 and awscli. The taskdef
#   tests read the ECS API model that botocore ships
#   (taskdef/tests/api_model.rs); scripts/test.sh exports its location as
#   BERTH_BOTOCORE_DATA. Made again only when a pin is missing.
#
# Runs as root, or through sudo when it must install or start something.
# Exits non-zero naming the step that failed.
set -euo pipefail

step() { echo "==> setup: $*"; }
fail() {
    echo "setup.sh: step '$1' failed${2:+: $2}" >&2
    exit 1
}

SUDO=()
if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO=(sudo)
    fi
fi
as_root() {
    if [ "$(id -u)" -ne 0 ] && [ ${#SUDO[@]} -eq 0 ]; then
        echo "setup.sh: need root (or sudo) to run: $*" >&2
        return 1
    fi
    "${SUDO[@]}" "$@"
}

APT_UPDATED=0
apt_install() {
    command -v apt-get >/dev/null 2>&1 || {
        echo "setup.sh: apt-get not found; install $* by hand" >&2
        return 1
    }
    if [ "$APT_UPDATED" -eq 0 ]; then
        step "apt-get update"
        as_root env DEBIAN_FRONTEND=noninteractive apt-get update -q || return 1
        APT_UPDATED=1
    fi
    step "apt-get install $*"
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"
}

package_installed() {
    command -v dpkg-query >/dev/null 2>&1 &&
        dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q 'ok installed'
}

have_systemd() { [ -d /run/systemd/system ]; }

# --- Rust -------------------------------------------------------------------
step "check the Rust toolchain"
command -v cargo >/dev/null 2>&1 || fail "rust" "cargo not found: install Rust (rustup) first"

# --- Docker Engine ----------------------------------------------------------
have_dockerd() { command -v dockerd >/dev/null 2>&1 || [ -x /usr/sbin/dockerd ] || [ -x /usr/bin/dockerd ]; }
dockerd_bin() { command -v dockerd 2>/dev/null || { [ -x /usr/sbin/dockerd ] && echo /usr/sbin/dockerd; } || echo /usr/bin/dockerd; }

step "check Docker Engine"
if ! command -v docker >/dev/null 2>&1; then
    apt_install docker.io || fail "install docker.io"
fi

if ! docker info >/dev/null 2>&1; then
    if docker info 2>&1 | grep -qi 'permission denied'; then
        fail "check docker" "permission denied on the Docker socket: run as root or join the docker group"
    fi
    have_dockerd || apt_install docker.io || fail "install docker.io"
    if have_systemd; then
        step "start Docker Engine (systemctl start docker)"
        as_root systemctl start docker || fail "start docker" "systemctl start docker failed"
    else
        step "start Docker Engine (dockerd in the background, log in /tmp/berth-dockerd.log)"
        # Detached, so that it outlives this script.
        as_root sh -c "nohup $(dockerd_bin) >>/tmp/berth-dockerd.log 2>&1 </dev/null &" ||
            fail "start docker" "cannot launch dockerd"
    fi
    step "wait for Docker Engine (up to 60 s)"
    deadline=$((SECONDS + 60))
    until docker info >/dev/null 2>&1; do
        if [ "$SECONDS" -ge "$deadline" ]; then
            err=$(docker info 2>&1 | tail -n 3 || true)
            if [ -f /tmp/berth-dockerd.log ]; then
                err="$err; dockerd log: $(tail -n 5 /tmp/berth-dockerd.log)"
            fi
            fail "wait for docker" "docker info still fails after 60 s: $err"
        fi
        sleep 1
    done
fi
step "Docker Engine is running (API $(docker version --format '{{.Server.APIVersion}}' 2>/dev/null || echo '?'))"

# --- busybox-static ---------------------------------------------------------
step "check busybox-static"
if ! package_installed busybox-static; then
    if command -v dpkg-query >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
        apt_install busybox-static || fail "install busybox-static"
    fi
fi
[ -x /bin/busybox ] || fail "install busybox-static" "/bin/busybox is missing"

# --- docker-registry --------------------------------------------------------
step "check docker-registry"
REGISTRY_BIN=/usr/bin/docker-registry
if [ ! -x "$REGISTRY_BIN" ]; then
    apt_install docker-registry || fail "install docker-registry"
    [ -x "$REGISTRY_BIN" ] || fail "install docker-registry" "$REGISTRY_BIN is missing after install"
    # The package may start a system registry on :5000; the tests run their
    # own, so the one we just installed stays off.
    if have_systemd; then
        as_root systemctl disable --now docker-registry >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/docker-registry ]; then
        as_root /etc/init.d/docker-registry stop >/dev/null 2>&1 || true
    fi
fi
"$REGISTRY_BIN" --version >/dev/null 2>&1 || fail "check docker-registry" "$REGISTRY_BIN --version failed"

# --- PostgreSQL -------------------------------------------------------------
step "check PostgreSQL"
have_initdb() { compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null; }
if ! have_initdb; then
    apt_install postgresql || fail "install postgresql"
    have_initdb || fail "install postgresql" "no /usr/lib/postgresql/*/bin/initdb after install"
    # The package may start a system cluster on :5432; the tests run their
    # own, so the one we just installed stays off.
    if have_systemd; then
        as_root systemctl disable --now postgresql >/dev/null 2>&1 || true
    elif [ -x /etc/init.d/postgresql ]; then
        as_root /etc/init.d/postgresql stop >/dev/null 2>&1 || true
    fi
fi
id postgres >/dev/null 2>&1 || fail "check PostgreSQL" "no postgres system user (the package creates it)"

# --- Python test virtualenv -------------------------------------------------
# Pinned: versions that `pip index versions` lists; awscli pins the botocore
# it was released with.
ROOT=$(cd "$(dirname "$0")/.." && pwd)
VENV=${BERTH_TEST_VENV:-$ROOT/target/test-venv}
PY_PINS=(botocore==1.44.8 boto3==1.44.8 awscli==1.46.3)
step "check the Python test virtualenv ($VENV)"
venv_has_pins() {
    local frozen pin
    frozen=$("$VENV/bin/python" -m pip freeze 2>/dev/null) || return 1
    for pin in "${PY_PINS[@]}"; do
        grep -qixF "$pin" <<<"$frozen" || return 1
    done
}
if ! venv_has_pins; then
    if ! command -v python3 >/dev/null 2>&1; then
        apt_install python3 python3-venv || fail "install python3"
    fi
    if [ ! -x "$VENV/bin/python" ]; then
        step "python3 -m venv $VENV"
        if ! python3 -m venv "$VENV"; then
            # Debian splits ensurepip into python3-venv.
            rm -rf "$VENV"
            apt_install python3-venv || fail "install python3-venv"
            python3 -m venv "$VENV" || fail "create the test virtualenv" "python3 -m venv $VENV failed"
        fi
    fi
    step "pip install ${PY_PINS[*]}"
    "$VENV/bin/python" -m pip install -q --disable-pip-version-check "${PY_PINS[@]}" ||
        fail "install the Python test packages" "pip install ${PY_PINS[*]} failed"
    venv_has_pins || fail "install the Python test packages" "$VENV lacks one of ${PY_PINS[*]} after pip install"
fi
"$VENV/bin/python" -c 'import os, botocore; p = os.path.join(os.path.dirname(botocore.__file__), "data", "ecs", "2014-11-13", "service-2.json.gz"); assert os.path.isfile(p), p' ||
    fail "check the Python test virtualenv" "botocore in $VENV has no ECS API model"

step "done"
