#!/bin/bash
# The appliance's base root (Debian packages only, no Anvil yet) with mmdebstrap, as root.
# Usage: iso/rootfs.sh OUTDIR APT_CACHE_DIR      (iso/build.sh caches the result by its inputs)
set -euo pipefail
# Hooks inherit this environment: host pip/python settings must not leak into the chroot.
for v in $(compgen -e | grep -E '^(PIP_|PYTHON|VIRTUAL_ENV|UV_)'); do unset "$v"; done
export LC_ALL=C.UTF-8
HERE=$(cd "$(dirname "$0")" && pwd)
OUT=$1
CACHE=$2
mkdir -p "$CACHE"
rm -rf "$OUT"
PKGS=$(grep -v -E '^\s*(#|$)' "$HERE/packages.txt" | paste -sd, -)
mmdebstrap --variant=minbase --mode=root --format=directory --quiet \
  --include="$PKGS" \
  --dpkgopt='path-exclude=/usr/share/man/*' \
  --dpkgopt='path-exclude=/usr/share/doc/*' \
  --dpkgopt='path-include=/usr/share/doc/*/copyright' \
  --dpkgopt='path-exclude=/usr/share/locale/*' \
  --dpkgopt='path-exclude=/usr/share/info/*' \
  --setup-hook='mkdir -p "$1"/var/cache/apt/archives/' \
  --setup-hook="sync-in $CACHE /var/cache/apt/archives/" \
  --customize-hook="sync-out /var/cache/apt/archives $CACHE" \
  --customize-hook='rm -f "$1"/var/cache/apt/archives/*.deb "$1"/var/lib/apt/lists/*_Packages' \
  bookworm "$OUT" \
  "deb http://deb.debian.org/debian bookworm main" \
  "deb http://deb.debian.org/debian bookworm-updates main" \
  "deb http://deb.debian.org/debian-security bookworm-security main"
