#!/usr/bin/env bash
# Installs everything armswarm's lab and test suite need on Debian 12 (as root):
# Debian packages, then a venv (.venv) with armswarm and its test/docs extras.
# Sourced by scripts/lab and scripts/test; safe to run again (it only does what is missing).
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
VENV=${ARMSWARM_VENV:-$REPO/.venv}
DEB_PACKAGES=(
    docker.io docker-registry debootstrap mmdebstrap busybox-static qemu-user-static u-boot-tools
    u-boot-menu rsync fdisk e2fsprogs
    iproute2 iptables ca-certificates python3 python3-venv git
)

if [ "$(id -u)" != 0 ]; then
    echo "armswarm: run as root (the lab starts dockerd, debootstrap and containers)" >&2
    exit 1
fi

# What apt and pip print (warnings about the machine's own pip configuration among it) goes to
# a log; it is shown when a step fails.
SETUP_LOG=${ARMSWARM_SETUP_LOG:-/var/log/armswarm-setup.log}
quietly() {
    if ! "$@" >>"$SETUP_LOG" 2>&1; then
        echo "armswarm: failed: $*" >&2
        tail -n 40 "$SETUP_LOG" >&2
        echo "armswarm: the whole output is in $SETUP_LOG" >&2
        return 1
    fi
}

missing=()
for pkg in "${DEB_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed" \
        || missing+=("$pkg")
done
if [ ${#missing[@]} -gt 0 ]; then
    echo "armswarm: installing Debian packages: ${missing[*]} (output in $SETUP_LOG)"
    quietly apt-get update -qq
    quietly env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        "${missing[@]}"
fi

# Re-install the venv only when the package metadata changed.
stamp="$VENV/.armswarm-setup-stamp"
want=$(sha256sum "$REPO/setup.cfg" "$REPO/pyproject.toml" | sha256sum | cut -c1-16)
if [ ! -x "$VENV/bin/python" ]; then
    python3 -m venv "$VENV"
fi
if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
    echo "armswarm: installing the Python venv at $VENV (salt is built from its sdist: ~1 min cold)"
    "$VENV/bin/pip" install --quiet --upgrade pip >>"$SETUP_LOG" 2>&1 || true
    quietly "$VENV/bin/pip" install --quiet -e "$REPO[tests,docs]"
    echo "$want" > "$stamp"
fi
export PATH="$VENV/bin:$PATH"
