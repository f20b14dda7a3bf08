# berth-server %postun (rpm): $1 = 0 on erase, 1 on upgrade.
# Upgrade: restart berth-server.service if it was running. Erase: rpm has no
# purge — /var/lib/berth-server (the fleet CA and store) and the user berth
# are kept.
unit=berth-server.service
say() { echo "berth-server: $*"; }
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || say "warning: systemctl daemon-reload failed"
    if [ "${1:-0}" -ge 1 ]; then
        systemctl try-restart "$unit" || say "warning: systemctl try-restart $unit failed; see journalctl -u $unit"
    fi
fi
if [ "${1:-0}" -eq 0 ]; then
    say "kept /var/lib/berth-server (fleet CA, store); remove it with: rm -rf /var/lib/berth-server"
fi
exit 0
