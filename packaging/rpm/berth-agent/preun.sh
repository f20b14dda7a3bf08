# berth-agent %preun (rpm): $1 = 0 on erase, 1 on upgrade.
# Erase: stop and disable berth-agent.service; the containers keep running
# (they are dockerd's; the unit has KillMode=process). Upgrade: nothing.
unit=berth-agent.service
say() { echo "berth-agent: $*"; }
if [ "${1:-0}" -eq 0 ] && command -v systemctl >/dev/null 2>&1; then
    if [ -d /run/systemd/system ]; then
        say "stopping and disabling $unit (containers keep running)"
        systemctl --no-reload disable --now "$unit" >/dev/null 2>&1 || say "warning: cannot stop/disable $unit"
    else
        systemctl --no-reload disable "$unit" >/dev/null 2>&1 || true
    fi
fi
exit 0
