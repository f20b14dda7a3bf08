#!/bin/sh
# Builds a tiny test image from Debian's busybox-static, without a registry.
#
#   scripts/test-image.sh TAG
#
# The image holds /bin/busybox, one symlink per busybox applet (sh, sleep,
# echo, cat, true, false, wget, nc, httpd, ls, kill, ...), /etc/passwd and
# /etc/group with root and nobody, and a world-writable /tmp. Its default
# command is `sh`.
#
# Idempotent: when TAG already exists it is left alone. Prints TAG on stdout
# on success; on failure prints a message on stderr and exits non-zero.
# Installs busybox-static with apt-get when /bin/busybox is missing and the
# script runs as root (serialised with a lock, since tests run in parallel).
set -eu

die() {
    echo "test-image.sh: $*" >&2
    exit 1
}

if [ $# -ne 1 ] || [ -z "$1" ]; then
    echo "usage: $0 TAG" >&2
    exit 2
fi
tag=$1
busybox=/bin/busybox

command -v docker >/dev/null 2>&1 || die "docker CLI not found in PATH"

if docker image inspect "$tag" >/dev/null 2>&1; then
    echo "$tag"
    exit 0
fi

install_busybox() {
    [ "$(id -u)" -eq 0 ] || die "$busybox is missing; install Debian's busybox-static (apt-get install busybox-static) or run as root"
    command -v apt-get >/dev/null 2>&1 || die "$busybox is missing and apt-get is not available to install busybox-static"
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-get install -y -q busybox-static >/dev/null 2>&1; then
        apt-get update -q >/dev/null 2>&1 || die "apt-get update failed while installing busybox-static"
        apt-get install -y -q busybox-static >/dev/null 2>&1 || die "apt-get install busybox-static failed"
    fi
}

if [ ! -x "$busybox" ]; then
    if command -v flock >/dev/null 2>&1; then
        # Parallel test processes must not run apt-get at the same time.
        exec 9>/tmp/berth-test-image.lock
        flock 9
        [ -x "$busybox" ] || install_busybox
        flock -u 9
    else
        install_busybox
    fi
fi
[ -x "$busybox" ] || die "$busybox is still missing after installing busybox-static"

work=$(mktemp -d "${TMPDIR:-/tmp}/berth-test-image.XXXXXX") || die "cannot create a temporary directory"
trap 'rm -rf "$work"' EXIT INT TERM
root=$work/rootfs

mkdir -p "$root/bin" "$root/etc" "$root/tmp" "$root/root" "$root/proc" "$root/sys" "$root/dev" "$root/var/www"
chmod 1777 "$root/tmp"
cp "$busybox" "$root/bin/busybox"
chmod 0755 "$root/bin/busybox"

# One symlink per applet this busybox has, plus the ones the tests rely on.
applets=$("$busybox" --list 2>/dev/null || true)
for applet in $applets sh sleep echo cat true false wget nc httpd ls kill env; do
    [ "$applet" = busybox ] && continue
    [ -e "$root/bin/$applet" ] || ln -s busybox "$root/bin/$applet"
done
for applet in sh sleep echo cat true false wget nc httpd ls kill; do
    "$busybox" --list 2>/dev/null | grep -qx "$applet" || die "$busybox has no '$applet' applet"
done

cat >"$root/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/bin/sh
nobody:x:65534:65534:nobody:/nonexistent:/bin/false
EOF
cat >"$root/etc/group" <<'EOF'
root:x:0:
nogroup:x:65534:
nobody:x:65534:
EOF

tar -C "$root" -c . | docker import \
    --change 'ENV PATH=/bin' \
    --change 'CMD ["sh"]' \
    - "$tag" >/dev/null || die "docker import of $tag failed"

docker image inspect "$tag" >/dev/null 2>&1 || die "image $tag not found after import"
echo "$tag"
