#!/usr/bin/env bash
# The kitfs demo: pack the example ModelKit into a throw-away kit home, list it, show its Kitfile,
# mount it read-only, read from the mount, unmount, and unpack one dataset with a filter.
set -euo pipefail
cd "$(dirname "$0")/.."

KITFS=${KITFS:-.venv/bin/kitfs}
DEMO=${DEMO_DIR:-$PWD/.demo}
export KITOPS_HOME="$DEMO/kitops"
export KITFS_CACHE="$DEMO/cache"
MNT="$DEMO/mnt"

rm -rf "$DEMO"
mkdir -p "$MNT"
step() { printf '\n\033[1m$ %s\033[0m\n' "$*"; }
run() { step "$*"; "$@"; }

run "$KITFS" pack examples/tiny-model -t tiny-model:1.0.0
run "$KITFS" list
run "$KITFS" info tiny-model:1.0.0

cleanup() { fusermount3 -u "$MNT" 2>/dev/null || true; }
trap cleanup EXIT
run "$KITFS" mount tiny-model:1.0.0 "$MNT"
run ls -l "$MNT" "$MNT/model/model" "$MNT/datasets/data"
run head -3 "$MNT/datasets/data/iris-sample.csv"
run python3 "$MNT/code/src/predict.py" "$MNT/model"
run "$KITFS" umount "$MNT"
trap - EXIT

run "$KITFS" unpack tiny-model:1.0.0 --filter datasets:iris-sample -d "$DEMO/unpacked"
run find "$DEMO/unpacked" -type f
printf '\nDemo finished: the ModelKit lives in %s\n' "$KITOPS_HOME"
