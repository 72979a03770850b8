#!/usr/bin/env bash
# Fetch Debian trixie's cosign (a static Go binary that runs on bookworm) into .tools/cosign/ for the
# interoperability tests. apt runs with a private sources list and private state and cache dirs, so
# nothing on the system changes: no trixie package is installed, /etc/apt is only read.
# Idempotent: does nothing when .tools/cosign/usr/bin/cosign exists. Never fatal: without it the
# interop tests skip with a reason.
set -uo pipefail
cd "$(dirname "$0")/.."

DEST=.tools/cosign
BIN=$DEST/usr/bin/cosign
[[ -x $BIN ]] && exit 0

SYSTEM_SOURCES=/etc/apt/sources.list.d/debian.sources
URI=$(awk '/^URIs:/ && $2 ~ /\/debian\/?$/ {print $2; exit}' "$SYSTEM_SOURCES" 2>/dev/null)
KEYRING=$(awk '/^Signed-By:/ {print $2; exit}' "$SYSTEM_SOURCES" 2>/dev/null)
URI=${URI:-http://deb.debian.org/debian}
KEYRING=${KEYRING:-/usr/share/keyrings/debian-archive-keyring.gpg}

APT=$(mktemp -d "${TMPDIR:-/tmp}/kitfs-cosign-apt.XXXXXX")
trap 'rm -rf "$APT"' EXIT
mkdir -p "$APT/state/lists/partial" "$APT/cache/archives/partial" "$APT/etc/preferences.d"
cat >"$APT/trixie.sources" <<SOURCES
Types: deb
URIs: $URI
Suites: trixie
Components: main
Signed-By: $KEYRING
SOURCES
APT_OPTS=(
    -o "Dir::Etc::SourceList=$APT/trixie.sources"
    -o "Dir::Etc::SourceParts=/nonexistent"
    -o "Dir::Etc::Preferences=$APT/etc/preferences"
    -o "Dir::Etc::PreferencesParts=$APT/etc/preferences.d"
    -o "Dir::State=$APT/state"
    -o "Dir::State::status=/var/lib/dpkg/status"
    -o "Dir::Cache=$APT/cache"
    -o "Debug::NoLocking=1"
    -o "APT::Sandbox::User=$(id -un)"
)
echo "fetch-cosign: downloading cosign from trixie ($URI) into $DEST"
if ! apt-get "${APT_OPTS[@]}" -qq update >"$APT/log" 2>&1; then
    echo "fetch-cosign: apt-get update failed; cosign interop tests will skip" >&2
    tail -3 "$APT/log" >&2
    exit 0
fi
if ! (cd "$APT" && apt-get "${APT_OPTS[@]}" -qq download cosign >>"$APT/log" 2>&1); then
    echo "fetch-cosign: apt-get download cosign failed; cosign interop tests will skip" >&2
    tail -3 "$APT/log" >&2
    exit 0
fi
mkdir -p "$DEST"
dpkg -x "$APT"/cosign_*.deb "$DEST"
echo "fetch-cosign: cosign $(dpkg-deb -f "$APT"/cosign_*.deb Version) is $BIN"
