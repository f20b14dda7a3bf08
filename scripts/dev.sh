#!/usr/bin/env bash
# First try: the control plane and one agent in one process (`berth dev`)
# against the local Docker Engine, running examples/hello.json.
#
#   scripts/dev.sh [MORE BERTH DEV ARGS…]
#
# State lives in $BERTH_DEV_DIR (default ~/.local/share/berth-dev). The
# example image berth-example/busybox:latest is built locally from Debian's
# busybox-static (no registry needed). Stop with Ctrl-C.
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/setup.sh

image=berth-example/busybox:latest
if ! docker image inspect "$image" >/dev/null 2>&1; then
    echo "==> dev: build the example image $image"
    scripts/test-image.sh "$image" >/dev/null
fi

data_dir=${BERTH_DEV_DIR:-${HOME:?HOME is not set; set BERTH_DEV_DIR}/.local/share/berth-dev}
echo "==> dev: berth dev --data-dir $data_dir --run examples/hello.json $*"
exec cargo run --release -p berth-control --bin berth -- \
    dev --data-dir "$data_dir" --run examples/hello.json "$@"
