# berth-agent %post (rpm): $1 = 1 on install, 2 on upgrade.
# Creates /var/lib/berth (0700). Install: enable berth-agent.service, start
# it only if the host is already enrolled (/var/lib/berth/identity.json).
# Upgrade: the restart happens in %postun, once the old package is gone.
# Without systemctl or a running systemd (containers, image builds) the
# systemd steps are skipped.
unit=berth-agent.service
say() { echo "berth-agent: $*"; }
# The data dir holds the private key: 0700, even if it existed with a looser
# mode. (Made here, not as a package file: a file list entry would make rpm
# want to remove it on erase.)
mkdir -p /var/lib/berth
chmod 0700 /var/lib/berth
if ! command -v systemctl >/dev/null 2>&1; then
    say "systemctl not found: skipping systemd setup (run \`berth-agent run\` under your own supervisor)"
    exit 0
fi
running=0
[ -d /run/systemd/system ] && running=1
if [ "$running" = 1 ]; then
    systemctl daemon-reload || say "warning: systemctl daemon-reload failed"
fi
if [ "${1:-1}" -eq 1 ]; then
    systemctl enable "$unit" >/dev/null 2>&1 || say "warning: systemctl enable $unit failed"
    if [ "$running" = 0 ]; then
        say "systemd is not running: not starting $unit"
    elif [ -f /var/lib/berth/identity.json ]; then
        say "this host is enrolled: starting $unit"
        systemctl start "$unit" || say "warning: systemctl start $unit failed; see journalctl -u $unit"
    else
        say "enabled $unit; it starts once this host is enrolled: berth-agent enroll --server URL --activation-id ID --activation-code CODE --ca-hash sha256:HEX (or enroll.sh), then systemctl start berth-agent"
    fi
fi
exit 0
