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

# The same ModelKit through a registry: a throw-away docker-registry on a free loopback port.
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
cat > "$DEMO/registry.yml" <<YML
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $DEMO/registry}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$PORT}
YML
docker-registry serve "$DEMO/registry.yml" >"$DEMO/registry.log" 2>&1 &
REGISTRY_PID=$!
cleanup() { fusermount3 -u "$MNT" 2>/dev/null || true; kill "$REGISTRY_PID" 2>/dev/null || true; }
trap cleanup EXIT
for _ in $(seq 50); do curl -sf "http://127.0.0.1:$PORT/v2/" >/dev/null 2>&1 && break; sleep 0.1; done
REMOTE="127.0.0.1:$PORT/demo/tiny-model:1.0.0"
run "$KITFS" push tiny-model:1.0.0 "$REMOTE" --plain-http
run "$KITFS" list "127.0.0.1:$PORT/demo/tiny-model" --plain-http
# Mount from the registry with an empty kit home, so every byte comes over the network, lazily.
rm -rf "$KITFS_CACHE"
# kitfs packs layers with span indexes: the mount fetches and verifies only the spans reads cover.
fetched() {
    local spans bytes
    spans=$(find "$KITFS_CACHE/spans" -type f 2>/dev/null | wc -l)
    bytes=$(find "$KITFS_CACHE/spans" -type f -printf '%s\n' 2>/dev/null | awk '{s+=$1} END {print s+0}')
    step "fetched from the registry so far: $spans verified spans, $bytes bytes (the layers hold $LAYER_BYTES)"
}
LAYER_BYTES=$("$KITFS" inspect tiny-model:1.0.0 | python3 -c 'import json,sys; print(sum(l["size"] for l in json.load(sys.stdin)["manifest"]["layers"]))')
run "$KITFS" --config "$DEMO/empty-home" mount "$REMOTE" "$MNT" --plain-http
run cat "$MNT/Kitfile"
fetched
run md5sum "$MNT/model/model/weights.bin" examples/tiny-model/model/weights.bin
fetched
run "$KITFS" umount "$MNT"

run "$KITFS" unpack tiny-model:1.0.0 --filter datasets:iris-sample -d "$DEMO/unpacked"
run find "$DEMO/unpacked" -type f
printf '\nDemo finished: the ModelKit lives in %s\n' "$KITOPS_HOME"
