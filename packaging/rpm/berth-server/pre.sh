# berth-server %pre (rpm): creates the system user and group `berth` that the
# server runs as, before the files owned by it are installed.
if ! getent passwd berth >/dev/null 2>&1; then
    echo "berth-server: creating system user berth"
    useradd --system --user-group --home-dir /var/lib/berth-server --no-create-home \
        --shell /sbin/nologin --comment "berth control plane" berth ||
        { echo "berth-server: useradd berth failed" >&2; exit 1; }
fi
exit 0
