#!/bin/bash
# Push benchmark (docs/benchmarks.md, "Push"): ROUNDS rounds of `kitfs push` of a packed ModelKit
# to a fresh repository, then curl's monolithic upload (POST, then PUT <location>&digest= with
# `curl -T`) of the ModelKit's largest blob, with the page cache dropped before each (run as root).
#   bench/push.sh KITOPS_HOME SOURCE_REF REGISTRY_HOST [ROUNDS]
# KITFS="cmd1 cmd2" compares several kitfs commands (default: this checkout's .venv/bin/kitfs).
set -euo pipefail
home=$1 source=$2 host=$3 rounds=${4:-3}
here=$(cd "$(dirname "$0")/.." && pwd)
read -r -a commands <<<"${KITFS:-$here/.venv/bin/kitfs}"
blob=$(find "$home/storage/blobs/sha256" -type f -printf '%s %p\n' | sort -n | tail -1 | cut -d' ' -f2)
digest=sha256:$(basename "$blob")

cold() { sync; echo 3 >/proc/sys/vm/drop_caches; }
seconds() { local s e; s=$(date +%s.%N); "$@" >/dev/null; e=$(date +%s.%N); echo "$e - $s" | bc; }
curl_upload() {
  local location
  location=$(curl -sf -D - -o /dev/null -X POST "http://$host/v2/$1/blobs/uploads/" |
    tr -d '\r' | awk -F': ' 'tolower($1)=="location"{print $2}')
  case $location in http*) ;; *) location=http://$host$location ;; esac
  case $location in *\?*) location="$location&" ;; *) location="$location?" ;; esac
  curl -sf -o /dev/null -X PUT -H 'Content-Type: application/octet-stream' -T "$blob" "${location}digest=$digest"
}

echo "blob: $(stat -c %s "$blob") bytes ($digest)"
for round in $(seq 1 "$rounds"); do
  for i in "${!commands[@]}"; do
    cold
    echo "round $round kitfs[$i] $(seconds "${commands[$i]}" push "$source" "$host/bench-push/k$i-$round-$RANDOM:t" --plain-http --config "$home")"
  done
  cold
  echo "round $round curl     $(seconds curl_upload "bench-push/c-$round-$RANDOM")"
done
