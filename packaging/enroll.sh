#!/usr/bin/env bash
# enroll.sh — enrolls this host into a berth fleet (like ECS Anywhere's
# ecs-anywhere-install.sh): installs a Docker Engine and the berth-agent
# package when missing, writes the agent's config, enrolls the host with a
# one-time activation, starts berth-agent.service and waits until the agent
# reports its instance id.
#
# Usage (as root):
#   enroll.sh --server URL --activation-id ID --activation-code CODE
#             --ca-hash sha256:HEX | --insecure-skip-ca-pin
#             [--package FILE|URL]
#             [--reserved-memory MIB] [--api-listen ADDR] [--timeout SECONDS]
#             [--no-docker-install] [--force] [--dry-run]
#   enroll.sh --uninstall [--purge] [--dry-run]
#   enroll.sh --help
#
# Options:
#   --server URL            fleet address of the control plane,
#                           https://HOST:7420 (from `berth token create`)
#   --activation-id ID      one-time activation id  (from `berth token create`)
#   --activation-code CODE  its secret code; never printed by this script
#   --ca-hash sha256:HEX    digest of the fleet CA (from `berth token
#                           create`): the agent checks the server against
#                           it before sending the code; required unless
#                           --insecure-skip-ca-pin
#   --insecure-skip-ca-pin  enroll without --ca-hash, trusting whatever CA
#                           the server presents (the code goes to whoever
#                           answers at --server)
#   --package FILE|URL      the berth-agent .deb or .rpm to install (a URL is
#                           downloaded with curl or wget); default: the
#                           installed package, else `berth-agent` from the
#                           distribution's configured repositories
#   --reserved-memory MIB   memory not offered to tasks (reserved_memory_mib)
#   --api-listen ADDR       the agent's local API, 127.0.0.1:PORT (api_listen;
#                           default 127.0.0.1:51678)
#   --timeout SECONDS       how long to wait for the agent (default 120)
#   --no-docker-install     fail instead of installing a Docker Engine
#   --force                 enroll again even if the host already is
#   --dry-run               print every step and the exact commands it would
#                           run, change nothing (the activation code is
#                           masked)
#   --uninstall             stop and disable the agent and remove the
#                           package; keeps /var/lib/berth (the identity) and
#                           the containers
#   --purge                 with --uninstall: also delete /var/lib/berth and
#                           /etc/berth/agent.toml
#   -h, --help              this help
#
# Supported: x86_64 and aarch64 hosts running systemd with Debian, Ubuntu,
# Fedora, RHEL/CentOS/Rocky/AlmaLinux, Amazon Linux, openSUSE or SLES.
#
# Idempotent: a second run on an enrolled host with the same server changes
# nothing and says so. Exit codes: 0 success, 1 a step failed (the message
# names the step and the fix), 2 bad usage.
set -Eeuo pipefail

readonly CONFIG=/etc/berth/agent.toml
readonly DATA_DIR=/var/lib/berth
readonly IDENTITY=$DATA_DIR/identity.json
readonly UNIT=berth-agent.service
readonly DEFAULT_API=127.0.0.1:51678

# --- output -----------------------------------------------------------------
current_step="parse arguments"
step() {
    current_step=$1
    shift
    echo "==> [$current_step] $*"
}
note() { echo "    $*"; }
fail() {
    # fail MESSAGE FIX
    echo "enroll.sh: step '$current_step' failed: $1" >&2
    if [ -n "${2:-}" ]; then
        echo "  fix: $2" >&2
    fi
    exit 1
}
usage_error() {
    echo "enroll.sh: $1" >&2
    echo "run 'enroll.sh --help' for the options" >&2
    exit 2
}
on_error() {
    echo "enroll.sh: step '$current_step' failed: command exited with status $1 (line $2)" >&2
    exit 1
}
trap 'on_error $? $LINENO' ERR

usage() { sed -n '2,/^set -Eeuo/{/^set -Eeuo/d;s/^# \{0,1\}//;p}' "$0"; }

# The command as it is shown: the value after --activation-code is masked.
show() {
    local out="" prev="" arg
    for arg in "$@"; do
        if [ "$prev" = --activation-code ]; then
            arg='********'
        fi
        case "$arg" in
            --activation-code=*) arg='--activation-code=********' ;;
        esac
        case "$arg" in
            *[[:space:]\"\'\$\`\\]* | "") arg="'${arg//\'/\'\\\'\'}'" ;;
        esac
        out="$out $arg"
        prev=$1
        shift
    done
    echo "${out# }"
}

# run CMD…: runs a command that changes the host; in --dry-run only prints it.
run() {
    if [ "$dry_run" -eq 1 ]; then
        echo "    would run: $(show "$@")"
        return 0
    fi
    echo "    \$ $(show "$@")"
    "$@"
}

# --- arguments --------------------------------------------------------------
server=
activation_id=
activation_code=
ca_hash=
skip_ca_pin=0
package=
reserved_memory=
api_listen=
timeout=120
docker_install=1
force=0
dry_run=0
uninstall=0
purge=0

need_value() {
    if [ $# -lt 2 ] || [ -z "$2" ] || [ "${2#--}" != "$2" ]; then
        usage_error "$1 needs a value"
    fi
}
while [ $# -gt 0 ]; do
    case "$1" in
        --server) need_value "$@"; server=$2; shift 2 ;;
        --server=*) server=${1#*=}; shift ;;
        --activation-id) need_value "$@"; activation_id=$2; shift 2 ;;
        --activation-id=*) activation_id=${1#*=}; shift ;;
        --activation-code) need_value "$@"; activation_code=$2; shift 2 ;;
        --activation-code=*) activation_code=${1#*=}; shift ;;
        --ca-hash) need_value "$@"; ca_hash=$2; shift 2 ;;
        --ca-hash=*) ca_hash=${1#*=}; shift ;;
        --insecure-skip-ca-pin) skip_ca_pin=1; shift ;;
        --package) need_value "$@"; package=$2; shift 2 ;;
        --package=*) package=${1#*=}; shift ;;
        --reserved-memory) need_value "$@"; reserved_memory=$2; shift 2 ;;
        --reserved-memory=*) reserved_memory=${1#*=}; shift ;;
        --api-listen) need_value "$@"; api_listen=$2; shift 2 ;;
        --api-listen=*) api_listen=${1#*=}; shift ;;
        --timeout) need_value "$@"; timeout=$2; shift 2 ;;
        --timeout=*) timeout=${1#*=}; shift ;;
        --no-docker-install) docker_install=0; shift ;;
        --force) force=1; shift ;;
        --dry-run) dry_run=1; shift ;;
        --uninstall) uninstall=1; shift ;;
        --purge) purge=1; shift ;;
        -h | --help) usage; exit 0 ;;
        *) usage_error "unknown option '$1'" ;;
    esac
done

case "$reserved_memory" in
    "" | *[!0-9]*) [ -z "$reserved_memory" ] || usage_error "--reserved-memory '$reserved_memory': expected a whole number of MiB" ;;
esac
case "$api_listen" in
    "" | *:[0-9]*) ;;
    *) usage_error "--api-listen '$api_listen': expected HOST:PORT, e.g. 127.0.0.1:51678" ;;
esac
case "${api_listen##*:}" in
    *[!0-9]*) usage_error "--api-listen '$api_listen': expected HOST:PORT, e.g. 127.0.0.1:51678" ;;
esac
case "$timeout" in
    *[!0-9]* | "" | 0) usage_error "--timeout '$timeout': expected a whole number of seconds > 0" ;;
esac
if [ "$purge" -eq 1 ] && [ "$uninstall" -eq 0 ]; then
    usage_error "--purge only goes with --uninstall"
fi

if [ "$dry_run" -eq 1 ]; then
    echo "enroll.sh: dry run: nothing will be changed; the commands are shown as they would run"
fi

# --- checks shared by enroll and uninstall -----------------------------------
check_root() {
    step "check root" "running as uid $(id -u)"
    if [ "$(id -u)" -ne 0 ]; then
        if [ "$dry_run" -eq 1 ]; then
            note "warning: not root: the real run must be started as root (sudo)"
        else
            fail "enroll.sh must run as root" "run it with sudo, or as root"
        fi
    fi
}

check_systemd() {
    step "check systemd" "systemd must be the init system (PID 1)"
    if [ ! -d /run/systemd/system ] || ! command -v systemctl >/dev/null 2>&1; then
        fail "systemd is not running on this host (no /run/systemd/system)" \
            "berth-agent runs as a systemd service; on a host without systemd, install the package by hand and run 'berth-agent run' under your own supervisor"
    fi
    note "systemd $(systemctl --version 2>/dev/null | awk 'NR == 1 { print $2 }')"
}

arch=
check_arch() {
    step "check architecture" "x86_64 or aarch64"
    arch=$(uname -m)
    case "$arch" in
        x86_64 | amd64) arch=x86_64 ;;
        aarch64 | arm64) arch=aarch64 ;;
        *) fail "unsupported architecture $arch" "berth-agent is built for x86_64 and aarch64 hosts" ;;
    esac
    note "$arch"
}

os_id=
os_version=
family=
pm=
detect_os() {
    step "detect distribution" "from /etc/os-release"
    [ -r /etc/os-release ] || fail "/etc/os-release is missing" "enroll.sh supports Debian, Ubuntu, Fedora, RHEL/CentOS/Rocky/AlmaLinux, Amazon Linux, openSUSE and SLES"
    local ID="" ID_LIKE="" VERSION_ID="" PRETTY_NAME=""
    # shellcheck disable=SC1091 # the host's file
    . /etc/os-release
    os_id=$ID
    os_version=${VERSION_ID:-}
    case " $ID $ID_LIKE " in
        *" debian "* | *" ubuntu "*) family=deb; pm=apt-get ;;
        *" fedora "*) family=rpm; pm=dnf ;;
        *" amzn "*)
            family=rpm
            if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi
            ;;
        *" rhel "* | *" centos "* | *" rocky "* | *" almalinux "*)
            family=rpm
            if command -v dnf >/dev/null 2>&1; then pm=dnf; else pm=yum; fi
            ;;
        *" opensuse"* | *" sles "* | *" suse "*) family=rpm; pm=zypper ;;
        *) fail "unsupported distribution '${PRETTY_NAME:-$ID}'" "enroll.sh supports Debian, Ubuntu, Fedora, RHEL/CentOS/Rocky/AlmaLinux, Amazon Linux, openSUSE and SLES; elsewhere install the package and run 'berth-agent enroll' by hand" ;;
    esac
    command -v "$pm" >/dev/null 2>&1 || fail "$pm not found on ${PRETTY_NAME:-$ID}" "install $pm, or install the berth-agent package by hand"
    note "${PRETTY_NAME:-$ID $os_version}: $family packages, $pm"
}

# pkg_install PACKAGE…: installs from the configured repositories (or local
# files given as ./path).
apt_updated=0
pkg_install() {
    case "$pm" in
        apt-get)
            # A local .deb whose dependencies are installed needs no package
            # lists; names from the repositories (or missing dependencies) do.
            if [ "$apt_updated" -eq 0 ] && [ "${1#/}" = "$1" ] && [ "${1#./}" = "$1" ]; then
                run env DEBIAN_FRONTEND=noninteractive apt-get update -q
                apt_updated=1
            fi
            if ! run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@"; then
                [ "$apt_updated" -eq 0 ] || fail "apt-get install $* failed (see above)" "fix the package sources (apt-get update), then run enroll.sh again"
                run env DEBIAN_FRONTEND=noninteractive apt-get update -q
                apt_updated=1
                run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q "$@" ||
                    fail "apt-get install $* failed (see above)" "fix the package sources (apt-get update), then run enroll.sh again"
            fi
            ;;
        dnf) run dnf install -y "$@" || fail "dnf install $* failed (see above)" "check the repositories (dnf repolist), then run enroll.sh again" ;;
        yum) run yum install -y "$@" || fail "yum install $* failed (see above)" "check the repositories (yum repolist), then run enroll.sh again" ;;
        zypper) run zypper --non-interactive install --allow-unsigned-rpm "$@" || fail "zypper install $* failed (see above)" "check the repositories (zypper repos), then run enroll.sh again" ;;
    esac
}

installed_version() {
    if [ "$family" = deb ]; then
        { dpkg-query -W -f='${db:Status-Status} ${Version}\n' berth-agent 2>/dev/null || true; } |
            awk '$1 == "installed" { print $2 }'
    elif rpm -q berth-agent >/dev/null 2>&1; then
        rpm -q --qf '%{VERSION}-%{RELEASE}\n' berth-agent
    fi
}

# json_field FILE KEY: the string value of "KEY" in a flat JSON file.
json_field() {
    { sed -n "s/.*\"$2\"[[:space:]]*:[[:space:]]*\"\\([^\"]*\\)\".*/\\1/p" "$1" 2>/dev/null || true; } | head -n 1
}

# --- uninstall --------------------------------------------------------------
do_uninstall() {
    check_root
    detect_os
    # Read before --purge deletes it: names this host's containers.
    local instance_id=""
    if [ -f "$IDENTITY" ]; then
        instance_id=$(json_field "$IDENTITY" instanceId)
    fi
    step "stop agent" "stop and disable $UNIT; containers keep running"
    if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
        if systemctl cat "$UNIT" >/dev/null 2>&1; then
            run systemctl disable --now "$UNIT"
        else
            note "$UNIT is not installed"
        fi
    else
        note "systemd is not running: nothing to stop"
    fi

    step "remove package" "berth-agent"
    local version
    version=$(installed_version)
    if [ -z "$version" ]; then
        note "berth-agent is not installed; nothing to remove"
    else
        note "installed: berth-agent $version"
        case "$pm" in
            apt-get)
                if [ "$purge" -eq 1 ]; then
                    run env DEBIAN_FRONTEND=noninteractive apt-get purge -y -q berth-agent
                else
                    run env DEBIAN_FRONTEND=noninteractive apt-get remove -y -q berth-agent
                fi
                ;;
            dnf) run dnf remove -y berth-agent ;;
            yum) run yum remove -y berth-agent ;;
            zypper) run zypper --non-interactive remove berth-agent ;;
        esac
    fi

    if [ "$purge" -eq 1 ]; then
        step "purge data" "identity, state and config of the agent"
        local path
        for path in "$DATA_DIR" "$CONFIG" "$CONFIG.rpmsave" "$CONFIG.dpkg-old"; do
            if [ -e "$path" ]; then
                run rm -rf "$path"
            fi
        done
        note "the host must be enrolled again (new activation) to rejoin the fleet"
    else
        note "kept $DATA_DIR (identity, state): reinstalling the package rejoins the fleet as the same instance; --uninstall --purge deletes it"
    fi

    local running="" filter=label=berth.instance-id
    if [ -n "$instance_id" ]; then
        filter="label=berth.instance-id=$instance_id"
    fi
    if command -v docker >/dev/null 2>&1; then
        running=$({ docker ps -q --filter "$filter" 2>/dev/null || true; } | wc -l | tr -d ' ')
    fi
    echo
    if [ "$purge" -eq 1 ]; then
        echo "berth-agent is uninstalled and its data purged."
    else
        echo "berth-agent is uninstalled."
    fi
    if [ -n "$running" ] && [ "$running" != 0 ]; then
        echo "$running container(s) started by berth keep running, with their data. Remove them, if you want, with:"
        echo "  docker rm -f \$(docker ps -aq --filter $filter)"
    fi
    if [ "$dry_run" -eq 1 ]; then
        echo "(dry run: nothing was changed)"
    fi
}

if [ "$uninstall" -eq 1 ]; then
    for v in server activation_id activation_code ca_hash package reserved_memory api_listen; do
        if [ -n "${!v}" ]; then
            usage_error "--uninstall takes no --${v//_/-}"
        fi
    done
    [ "$skip_ca_pin" -eq 0 ] || usage_error "--uninstall takes no --insecure-skip-ca-pin"
    do_uninstall
    exit 0
fi

# --- enroll -----------------------------------------------------------------
step "check arguments" "server, activation"
[ -n "$server" ] || fail "--server is missing" "pass --server https://HOST:7420 (the fleet address printed by 'berth token create')"
case "$server" in
    https://* | http://*) ;;
    *) fail "--server '$server' is not a URL" "pass --server https://HOST:7420" ;;
esac
[ -n "$activation_id" ] || fail "--activation-id is missing" "create an activation with 'berth token create' on the control plane and pass its id"
[ -n "$activation_code" ] || fail "--activation-code is missing" "pass the code printed by 'berth token create' with its id"
if [ -n "$ca_hash" ]; then
    [ "$skip_ca_pin" -eq 0 ] || fail "--ca-hash and --insecure-skip-ca-pin contradict each other" "give only --ca-hash"
    hex=${ca_hash#sha256:}
    if [ ${#hex} -ne 64 ] || [ -n "${hex//[0-9a-fA-F]/}" ]; then
        fail "--ca-hash '$ca_hash' is not sha256:<64 hex digits>" "copy the CA hash printed by 'berth token create'"
    fi
elif [ "$skip_ca_pin" -eq 1 ]; then
    note "warning: --insecure-skip-ca-pin: the agent trusts whatever CA $server presents and sends the code to it"
else
    fail "--ca-hash is missing" "pass the --ca-hash sha256:... of the line 'berth token create' printed, so that the code goes only to your control plane (or --insecure-skip-ca-pin to trust the server's CA on first use)"
fi
note "server $server, activation $activation_id, code ******** (masked)"

check_root
check_systemd
check_arch
detect_os

changed=0

# --- Docker Engine ---
step "docker" "a Docker Engine must be installed and running"
if ! command -v docker >/dev/null 2>&1; then
    if [ "$docker_install" -eq 0 ]; then
        fail "docker is not installed" "install a Docker Engine, or drop --no-docker-install"
    fi
    case "$os_id" in
        fedora) docker_pkg=moby-engine ;;
        rhel | centos | rocky | almalinux)
            fail "${os_id} has no Docker Engine in its own repositories" \
                "install Docker CE from Docker's repository for ${os_id} (docker-ce), start it, then run enroll.sh again"
            ;;
        *) if [ "$family" = deb ]; then docker_pkg=docker.io; else docker_pkg=docker; fi ;;
    esac
    note "docker not found: installing $docker_pkg from the distribution"
    pkg_install "$docker_pkg"
    changed=1
else
    note "docker CLI: $(command -v docker)"
fi
if command -v docker >/dev/null 2>&1 && docker info >/dev/null 2>&1; then
    note "Docker Engine is running ($(docker version --format '{{.Server.Version}}' 2>/dev/null || echo '?'))"
else
    if systemctl is-active --quiet docker.service 2>/dev/null; then
        note "docker.service is active"
    else
        run systemctl enable --now docker.service
    fi
    if [ "$dry_run" -eq 0 ]; then
        deadline=$((SECONDS + 60))
        until docker info >/dev/null 2>&1; do
            if [ "$SECONDS" -ge "$deadline" ]; then
                fail "the Docker Engine does not answer after 60 s: $(docker info 2>&1 | tail -n 1)" \
                    "check 'systemctl status docker' and 'journalctl -u docker', then run enroll.sh again"
            fi
            sleep 1
        done
        note "Docker Engine is running"
    fi
fi

# --- the berth-agent package ---
step "install berth-agent" "${package:-from the configured repositories}"
current=$(installed_version)
[ -z "$current" ] || note "installed: berth-agent $current"
if [ -n "$package" ]; then
    local_file=$package
    case "$package" in
        http://* | https://*)
            ext=${package##*.}
            case "$ext" in deb | rpm) ;; *) fail "--package URL '$package' does not end in .deb or .rpm" "pass the URL of the berth-agent .$family package" ;; esac
            [ "$ext" = "$family" ] || fail "--package is a .$ext but this host uses .$family packages" "pass the berth-agent .$family package"
            if [ "$dry_run" -eq 1 ]; then
                local_file=/tmp/berth-agent-download.$ext
                if command -v curl >/dev/null 2>&1; then
                    run curl -fsSL --retry 3 -o "$local_file" "$package"
                else
                    run wget -q -O "$local_file" "$package"
                fi
                note "(the version is known only after the download)"
            else
                download_dir=$(mktemp -d /tmp/berth-enroll.XXXXXX)
                trap 'rm -rf "$download_dir"' EXIT
                local_file=$download_dir/berth-agent.$ext
                if command -v curl >/dev/null 2>&1; then
                    run curl -fsSL --retry 3 -o "$local_file" "$package" ||
                        fail "cannot download $package" "check the URL and the network, or download it yourself and pass --package FILE"
                elif command -v wget >/dev/null 2>&1; then
                    run wget -q -O "$local_file" "$package" ||
                        fail "cannot download $package" "check the URL and the network, or download it yourself and pass --package FILE"
                else
                    fail "neither curl nor wget is installed" "install curl, or download the package yourself and pass --package FILE"
                fi
            fi
            ;;
        *)
            [ -f "$package" ] || fail "--package $package: no such file" "pass the path of the berth-agent .$family package (packaging/build-packages.sh writes them to target/packages/)"
            ext=${package##*.}
            [ "$ext" = "$family" ] || fail "--package $package is not a .$family package, which this host ($os_id) needs" "pass the berth-agent .$family package"
            ;;
    esac
    want=
    if [ -f "$local_file" ]; then
        if [ "$family" = deb ]; then
            pkg_name=$(dpkg-deb -f "$local_file" Package 2>/dev/null) || fail "$package is not a valid .deb" "pass the berth-agent .deb"
            want=$(dpkg-deb -f "$local_file" Version)
        else
            pkg_name=$(rpm -qp --qf '%{NAME}' "$local_file" 2>/dev/null) || fail "$package is not a valid .rpm" "pass the berth-agent .rpm"
            want=$(rpm -qp --qf '%{VERSION}-%{RELEASE}' "$local_file")
        fi
        [ "$pkg_name" = berth-agent ] || fail "$package is the package '$pkg_name', not berth-agent" "pass the berth-agent package (not berth-server)"
    fi
    if [ -n "$want" ] && [ "$want" = "$current" ]; then
        note "berth-agent $want is already installed; nothing to do"
    else
        case "$local_file" in /*) ;; *) local_file=./$local_file ;; esac
        pkg_install "$local_file"
        changed=1
    fi
elif [ -n "$current" ]; then
    note "no --package: keeping the installed berth-agent $current"
else
    note "no --package: installing berth-agent from the configured repositories"
    pkg_install berth-agent
    changed=1
fi
if [ "$dry_run" -eq 0 ]; then
    command -v berth-agent >/dev/null 2>&1 || fail "berth-agent is not installed after the install step" "install the berth-agent package by hand and run enroll.sh again"
fi

# --- config ---
# set_key KEY TOML_VALUE: sets `key = value` in the config, keeping every
# other line and comment: replaces an active `key =` line, else puts it
# after the commented default, else appends it.
set_key() {
    local key=$1 value=$2 line
    line="$key = $value"
    if [ -f "$CONFIG" ] && grep -Eq "^[[:space:]]*${key}[[:space:]]*=[[:space:]]*${value}[[:space:]]*(#.*)?$" "$CONFIG"; then
        note "$key is already $value"
        return 0
    fi
    if [ "$dry_run" -eq 1 ]; then
        echo "    would set in $CONFIG: $line"
        return 0
    fi
    local tmp
    tmp=$(mktemp "$CONFIG.XXXXXX")
    if [ -f "$CONFIG" ] && grep -Eq "^[[:space:]]*${key}[[:space:]]*=" "$CONFIG"; then
        awk -v k="$key" -v l="$line" '$0 ~ "^[[:space:]]*" k "[[:space:]]*=" && !done { print l; done = 1; next } { print }' "$CONFIG" >"$tmp"
    elif [ -f "$CONFIG" ] && grep -Eq "^#[[:space:]]*${key}[[:space:]]*=" "$CONFIG"; then
        awk -v k="$key" -v l="$line" '{ print } $0 ~ "^#[[:space:]]*" k "[[:space:]]*=" && !done { print l; done = 1 }' "$CONFIG" >"$tmp"
    else
        { [ ! -f "$CONFIG" ] || cat "$CONFIG"; echo "$line"; } >"$tmp"
    fi
    chmod 0644 "$tmp"
    mv -f "$tmp" "$CONFIG"
    echo "    set in $CONFIG: $line"
    changed=1
}

step "write config" "$CONFIG"
if [ "$dry_run" -eq 0 ]; then
    mkdir -p "$(dirname "$CONFIG")"
fi
if [ -n "$reserved_memory" ]; then
    set_key reserved_memory_mib "$reserved_memory"
fi
if [ -n "$api_listen" ]; then
    set_key api_listen "\"$api_listen\""
fi
if [ -z "$reserved_memory$api_listen" ]; then
    note "no option changes the config (the server is written by the enroll step)"
fi

# --- enroll ---
step "enroll" "one-time activation $activation_id with $server"
enrolled_id=
if [ -f "$IDENTITY" ]; then
    enrolled_id=$(json_field "$IDENTITY" instanceId)
    enrolled_server=$(json_field "$IDENTITY" server)
    if [ "$force" -eq 0 ]; then
        if [ "${enrolled_server%/}" != "${server%/}" ]; then
            fail "this host is already enrolled as $enrolled_id with $enrolled_server, not $server" \
                "to move it to $server, run enroll.sh again with --force (a new activation for $server)"
        fi
        note "already enrolled as $enrolled_id with $enrolled_server; the activation is not used"
    fi
fi
if [ -z "$enrolled_id" ] || [ "$force" -eq 1 ]; then
    enroll_cmd=(berth-agent enroll --server "$server" --activation-id "$activation_id" --activation-code "$activation_code" --config "$CONFIG")
    if [ -n "$ca_hash" ]; then
        enroll_cmd+=(--ca-hash "$ca_hash")
    else
        enroll_cmd+=(--insecure-skip-ca-pin)
    fi
    [ "$force" -eq 0 ] || enroll_cmd+=(--force)
    run "${enroll_cmd[@]}" ||
        fail "berth-agent enroll failed (see its message above)" \
            "an activation works once and expires: create a new one with 'berth token create'; check that $server is reachable from this host and that --ca-hash matches"
    changed=1
    if [ "$dry_run" -eq 0 ]; then
        enrolled_id=$(json_field "$IDENTITY" instanceId)
        [ -n "$enrolled_id" ] || fail "no instance id in $IDENTITY after enrolling" "see the message of berth-agent enroll above"
        note "enrolled as $enrolled_id"
    fi
fi

# --- service ---
step "start agent" "$UNIT"
if systemctl is-enabled --quiet "$UNIT" 2>/dev/null; then
    note "$UNIT is enabled"
else
    run systemctl enable "$UNIT"
fi
if systemctl is-active --quiet "$UNIT" 2>/dev/null; then
    if [ "$changed" -eq 1 ]; then
        note "something changed: restarting (containers keep running)"
        run systemctl restart "$UNIT"
    else
        note "$UNIT is running"
    fi
else
    run systemctl start "$UNIT" ||
        fail "systemctl start $UNIT failed" "see 'systemctl status $UNIT' and 'journalctl -u $UNIT -n 50'"
    changed=1
fi

# --- wait for the agent ---
api=${api_listen:-$DEFAULT_API}
if [ -z "$api_listen" ] && [ -f "$CONFIG" ]; then
    configured=$(sed -n 's/^[[:space:]]*api_listen[[:space:]]*=[[:space:]]*"\([^"]*\)".*/\1/p' "$CONFIG" | tail -n 1)
    api=${configured:-$api}
fi
api_host=${api%:*}
api_port=${api##*:}
case "$api_host" in 0.0.0.0 | "" | "[::]") api_host=127.0.0.1 ;; esac
api_host=${api_host#[}
api_host=${api_host%]}

# http_get PATH: the body of http://API/PATH, with bash's /dev/tcp (no curl
# needed).
http_get() {
    local response
    exec 3<>"/dev/tcp/$api_host/$api_port" || return 1
    printf 'GET %s HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n' "$1" "$api" >&3
    response=$(timeout 5 cat <&3) || true
    exec 3<&-
    case "$response" in
        "HTTP/1."?" 200"*) printf '%s\n' "${response#*$'\r\n\r\n'}" ;;
        *) return 1 ;;
    esac
}

step "wait for agent" "http://$api/v1/metadata shows the instance id (up to $timeout s)"
metadata=
if [ "$dry_run" -eq 1 ]; then
    echo "    would poll: GET http://$api/v1/metadata until instanceId is the enrolled one"
else
    deadline=$((SECONDS + timeout))
    while :; do
        if metadata=$(http_get /v1/metadata 2>/dev/null) && [[ "$metadata" == *"\"instanceId\":\"$enrolled_id\""* ]]; then
            break
        fi
        if ! systemctl is-active --quiet "$UNIT" && [ "$(systemctl show -p ActiveState --value "$UNIT")" = failed ]; then
            journalctl -u "$UNIT" -n 20 --no-pager >&2 2>/dev/null || true
            fail "$UNIT failed" "see 'journalctl -u $UNIT -n 50'; fix the cause, then run enroll.sh again"
        fi
        if [ "$SECONDS" -ge "$deadline" ]; then
            systemctl status "$UNIT" --no-pager -n 10 >&2 2>/dev/null || true
            fail "the agent did not report instance $enrolled_id on http://$api/v1/metadata within $timeout s" \
                "see 'journalctl -u $UNIT -n 50'; a longer --timeout helps on a slow host"
        fi
        sleep 1
    done
fi

# --- summary ---
connected=unknown
case "$metadata" in
    *'"connected":true'*) connected=yes ;;
    *'"connected":false'*) connected="not yet (the agent keeps trying; tasks run regardless)" ;;
esac
echo
if [ "$dry_run" -eq 1 ]; then
    echo "Dry run complete: nothing was changed. Run again without --dry-run to do the steps above."
    exit 0
fi
if [ "$changed" -eq 0 ]; then
    echo "Nothing changed: this host is already enrolled as $enrolled_id and berth-agent is running."
else
    echo "This host is enrolled into the berth fleet."
fi
echo "  instance   $enrolled_id"
echo "  server     $server"
echo "  connected  $connected"
echo "  service    $UNIT ($(systemctl is-active "$UNIT" 2>/dev/null || true), $(systemctl is-enabled "$UNIT" 2>/dev/null || true))"
echo "  config     $CONFIG"
echo "  data       $DATA_DIR"
echo "  local API  http://$api (/v1/metadata, /v1/tasks, /metrics)"
echo "Next: 'berth instance ls' on the control plane; 'berth-agent status' and 'journalctl -u berth-agent' here."
