# berth-server %post (rpm): $1 = 1 on install, 2 on upgrade.
# Creates /var/lib/berth-server (0700, owned by berth). Install: enable and
# start berth-server.service. Upgrade: the restart happens in %postun.
# Without systemctl or a running systemd the systemd steps are skipped.
unit=berth-server.service
say() { echo "berth-server: $*"; }
# The fleet CA and the store: 0700, owned by berth (created in %pre).
mkdir -p /var/lib/berth-server
chmod 0700 /var/lib/berth-server
chown berth:berth /var/lib/berth-server || say "warning: cannot chown /var/lib/berth-server to berth"
if ! command -v systemctl >/dev/null 2>&1; then
    say "systemctl not found: skipping systemd setup (run \`berth server --data-dir /var/lib/berth-server\` as berth under your own supervisor)"
    exit 0
fi
if [ -d /run/systemd/system ]; then
    systemctl daemon-reload || say "warning: systemctl daemon-reload failed"
fi
if [ "${1:-1}" -eq 1 ]; then
    systemctl enable "$unit" >/dev/null 2>&1 || say "warning: systemctl enable $unit failed"
    if [ -d /run/systemd/system ]; then
        say "starting $unit: fleet API on :7420, admin API on 127.0.0.1:7421; next: berth token create"
        systemctl start "$unit" || say "warning: systemctl start $unit failed; see journalctl -u $unit"
    else
        say "systemd is not running: not starting $unit"
    fi
fi
exit 0
