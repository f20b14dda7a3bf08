#!/usr/bin/env bash
# Builds a Debian root file system with systemd as PID 1, as a tarball for
# `docker import`, for the real-install test (tests/tests/install.rs): a
# minimal Debian host on which enroll.sh installs the berth-agent package and
# systemd runs it.
#
#   packaging/test/systemd-rootfs.sh OUT.tar
#
# The root file system is Debian bookworm (debootstrap --variant=minbase)
# with systemd, dbus, curl, procps and Debian's docker.io. The Docker Engine
# of the image is masked (docker.service, docker.socket, containerd.service):
# the test mounts the host's Docker socket, so the docker CLI and the agent
# use the host's engine, and the package's dependency on a Docker Engine is
# met the way it is on a real host.
#
# Idempotent: an existing OUT.tar is left alone (delete it to rebuild).
# Parallel callers are serialised with a lock next to OUT.tar. Installs
# debootstrap (and Debian's archive keyring) with apt-get when missing.
# Mirror: $BERTH_DEBIAN_MIRROR, default http://deb.debian.org/debian.
# Needs root. Prints OUT.tar on success; exits 1 naming the failed step.
set -euo pipefail

fail() {
    echo "systemd-rootfs.sh: $1 failed${2:+: $2}" >&2
    exit 1
}

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 OUT.tar" >&2
    exit 2
fi
out=$1
mirror=${BERTH_DEBIAN_MIRROR:-http://deb.debian.org/debian}
suite=bookworm

[ "$(id -u)" -eq 0 ] || fail "check root" "debootstrap needs root"
mkdir -p "$(dirname "$out")" || fail "create $(dirname "$out")"

exec 9>"$out.lock"
flock 9

if [ -s "$out" ]; then
    echo "$out"
    exit 0
fi

if ! command -v debootstrap >/dev/null 2>&1 || [ ! -e /usr/share/keyrings/debian-archive-keyring.gpg ]; then
    command -v apt-get >/dev/null 2>&1 || fail "install debootstrap" "apt-get not found"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q debootstrap debian-archive-keyring >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || fail "apt-get update"
        apt-get install -y -q debootstrap debian-archive-keyring >/dev/null 2>&1 ||
            fail "apt-get install debootstrap debian-archive-keyring"
    fi
fi

work=$(mktemp -d "${out%/*}/rootfs.XXXXXX")
trap 'rm -rf "$work"' EXIT
root=$work/root

echo "systemd-rootfs.sh: debootstrap $suite from $mirror (a few minutes)" >&2
if ! debootstrap --variant=minbase \
    --keyring=/usr/share/keyrings/debian-archive-keyring.gpg \
    --include=systemd,systemd-sysv,dbus,ca-certificates,curl,procps,docker.io \
    "$suite" "$root" "$mirror" >"$work/debootstrap.log" 2>&1; then
    fail "debootstrap" "$(tail -n 5 "$work/debootstrap.log")"
fi

# The host's engine is used through its socket; the image's own stays off.
for unit in docker.service docker.socket containerd.service; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# Units that have nothing to do in a container and only slow its boot.
for unit in getty@tty1.service console-getty.service systemd-logind.service \
    apt-daily.timer apt-daily-upgrade.timer e2scrub_all.timer fstrim.timer; do
    ln -sf /dev/null "$root/etc/systemd/system/$unit"
done
# No downloaded package lists or caches in the image.
rm -rf "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
echo berth-test-host >"$root/etc/hostname"

tar -C "$root" --numeric-owner -cf "$work/rootfs.tar" . || fail "tar"
mv "$work/rootfs.tar" "$out" || fail "move to $out"
echo "$out"
