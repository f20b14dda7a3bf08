#!/usr/bin/env bash
# A throwaway copy of this host's root file system, for installing the
# packages for real (dpkg -i, rpm -i, enroll.sh) without touching the host.
#
#   packaging/test/sandbox.sh DIR [--systemd] [--docker] [--bind PATH]… -- CMD [ARG…]
#
# DIR (created if missing; put it on a tmpfs such as /dev/shm) keeps the
# sandbox's changes between calls: an overlay of / whose upper layer is
# DIR/upper. Each call runs CMD chrooted into the overlay, in a private mount
# namespace (unshare), with /proc, /dev and /sys from the host, a fresh tmpfs
# on /run, and a clean environment (PATH, HOME, TERM=dumb). Processes CMD
# leaves in the background keep the namespace alive.
#   --systemd   create /run/systemd/system: scripts then believe systemd runs
#               (pair it with a systemctl stub, see systemctl-stub)
#   --docker    bind the host's Docker socket to /run/docker.sock
#   --bind P    bind the host path P at the same path (read-write)
# Removing the sandbox: rm -rf DIR (nothing stays mounted outside).
#
# Needs root, util-linux's unshare and overlayfs. Exit status: CMD's; 1 when
# the sandbox cannot be set up; 2 on bad usage.
set -euo pipefail

if [ $# -lt 1 ]; then
    echo "usage: sandbox.sh DIR [--systemd] [--docker] [--bind PATH]... -- CMD [ARG...]" >&2
    exit 2
fi
dir=$1
shift
systemd=0
docker=0
binds=()
while [ $# -gt 0 ]; do
    case "$1" in
        --systemd) systemd=1; shift ;;
        --docker) docker=1; shift ;;
        --bind) binds+=("$2"); shift 2 ;;
        --) shift; break ;;
        *) echo "sandbox.sh: unknown option '$1'" >&2; exit 2 ;;
    esac
done
[ $# -gt 0 ] || { echo "sandbox.sh: no command given" >&2; exit 2; }
[ "$(id -u)" -eq 0 ] || { echo "sandbox.sh: needs root (mounts)" >&2; exit 1; }

mkdir -p "$dir/upper" "$dir/work" "$dir/merged"
docker_sock=
if [ "$docker" -eq 1 ]; then
    for s in /run/docker.sock /var/run/docker.sock; do
        if [ -S "$s" ]; then docker_sock=$(readlink -f "$s"); break; fi
    done
    [ -n "$docker_sock" ] || { echo "sandbox.sh: no Docker socket on this host" >&2; exit 1; }
fi

# shellcheck disable=SC2016 # expanded by the inner shell
exec unshare --mount --propagation private -- bash -euo pipefail -c '
    dir=$1 systemd=$2 docker_sock=$3 nbinds=$4
    shift 4
    binds=("${@:1:$nbinds}")
    shift "$nbinds"
    m=$dir/merged
    mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper,workdir=$dir/work" "$m" ||
        { echo "sandbox.sh: cannot mount the overlay (overlayfs missing?)" >&2; exit 1; }
    mount --rbind /dev "$m/dev"
    mount -t proc proc "$m/proc"
    mount --rbind /sys "$m/sys"
    mount -t tmpfs -o mode=0755 tmpfs "$m/run"
    mkdir -p "$m/run/lock"
    if [ "$systemd" = 1 ]; then mkdir -p "$m/run/systemd/system"; fi
    if [ -n "$docker_sock" ]; then
        touch "$m/run/docker.sock"
        mount --bind "$docker_sock" "$m/run/docker.sock"
    fi
    for b in "${binds[@]}"; do
        if [ -d "$b" ]; then mkdir -p "$m$b"; else mkdir -p "$(dirname "$m$b")"; touch "$m$b"; fi
        mount --bind "$b" "$m$b"
    done
    exec chroot "$m" /usr/bin/env -i \
        PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
        HOME=/root TERM=dumb LANG=C.UTF-8 "$@"
' sandbox "$dir" "$systemd" "$docker_sock" "${#binds[@]}" "${binds[@]}" "$@"
