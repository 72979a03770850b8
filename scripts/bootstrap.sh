#!/usr/bin/env bash
# Install everything kitfs needs on a Debian machine: system packages (FUSE, a registry, skopeo)
# and a Python virtual environment in .venv with kitfs installed in editable mode.
set -euo pipefail
cd "$(dirname "$0")/.."

SYSTEM_PACKAGES=(fuse3 libfuse3-dev pkg-config docker-registry skopeo)

missing=()
for pkg in "${SYSTEM_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" || missing+=("$pkg")
done
if ((${#missing[@]})); then
    SUDO=""
    [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    echo "bootstrap: installing ${missing[*]}"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi

PYTHON=${PYTHON:-python3}
if [[ ! -x .venv/bin/python ]]; then
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.kitfs-installed
if [[ ! -f $stamp || pyproject.toml -nt $stamp ]]; then
    .venv/bin/pip install -q --upgrade pip
    .venv/bin/pip install -q -e ".[dev,test]"
    touch "$stamp"
fi

# cosign for the signature interoperability tests (never fatal: those tests skip without it).
bash scripts/fetch-cosign.sh
