# berth-agent %postun (rpm): $1 = 0 on erase, 1 on upgrade.
# Upgrade: restart berth-agent.service if it was running (containers keep
# running). Erase: rpm has no purge — /var/lib/berth (identity, state) and a
# changed /etc/berth/agent.toml are kept; delete them by hand
# (`rm -rf /var/lib/berth`) or with `enroll.sh --uninstall --purge`.
unit=berth-agent.service
say() { echo "berth-agent: $*"; }
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null 2>&1; then
    systemctl daemon-reload || say "warning: systemctl daemon-reload failed"
    if [ "${1:-0}" -ge 1 ]; then
        systemctl try-restart "$unit" || say "warning: systemctl try-restart $unit failed; see journalctl -u $unit"
    fi
fi
if [ "${1:-0}" -eq 0 ]; then
    say "kept /var/lib/berth (identity, state); remove it with: rm -rf /var/lib/berth"
fi
exit 0
