# berth-server %preun (rpm): $1 = 0 on erase, 1 on upgrade.
# Erase: stop and disable berth-server.service. Upgrade: nothing.
unit=berth-server.service
say() { echo "berth-server: $*"; }
if [ "${1:-0}" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        say "stopping and disabling $unit"
        systemctl --no-reload disable --now "$unit" >/dev/null 2>&1 || say "warning: cannot stop/disable $unit"
    else
        systemctl --no-reload disable "$unit" >/dev/null 2>&1 || true
    fi
fi
exit 0
