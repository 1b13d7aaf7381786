#!/bin/bash
# Build the appliance image: a hybrid BIOS+UEFI ISO (live-boot, read-only squashfs root) and a
# qcow2 disk of the same image, holding this checkout's Anvil in /opt/anvil/venv.
#   ./dev.sh iso          (runs this as root; the outputs land in build/iso/)
# Cached under ANVIL_ISO_CACHE (default /var/tmp/anvil-iso-cache):
#   base-KEY/    the Debian root (key: iso/packages.txt + iso/rootfs.sh), about 2 min to make
#   image-KEY/   the ISO and qcow2 (key: iso/, the package's sources, the lock file)
# so an unchanged checkout costs nothing, and a changed one only the last ~1.5 min.
set -euo pipefail
for v in $(compgen -e | grep -E '^(PIP_|PYTHON|VIRTUAL_ENV|UV_)'); do unset "$v"; done
export LC_ALL=C.UTF-8
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(dirname "$HERE")
CACHE=${ANVIL_ISO_CACHE:-/var/tmp/anvil-iso-cache}
OUT=${ANVIL_ISO_OUT:-$ROOT/build/iso}
PY=${ANVIL_ISO_PYTHON:-$ROOT/.venv/bin/python}
T0=$(date +%s)
log() { printf '== iso: %s\n' "$*" >&2; }
[ "$(id -u)" = 0 ] || { echo "iso/build.sh: run as root (mmdebstrap --mode=root, chroot)" >&2; exit 2; }

hash_files() {  # sha256 over the names and contents of the given files and folders (no caches)
  (cd "$ROOT" && find "$@" -type f ! -name '*.pyc' ! -path '*/__pycache__/*' -print0 | LC_ALL=C sort -z \
     | xargs -0 sha256sum | sha256sum | cut -c1-16)
}
BASE_KEY=$(hash_files iso/packages.txt iso/rootfs.sh)
IMAGE_KEY=$(hash_files iso appliance pxe profiles firmware systemd pyproject.toml)
BASE=$CACHE/base-$BASE_KEY
IMAGE=$CACHE/image-$IMAGE_KEY
mkdir -p "$CACHE" "$OUT"
# One build at a time per cache (two test workers may ask at once: the second finds it cached).
exec 9>"$CACHE/.lock"
flock -w 1800 9 || { echo "iso/build.sh: $CACHE is locked by another build for 30 min" >&2; exit 1; }

publish() {
  for f in anvil.iso anvil.qcow2 build-info.txt; do
    rm -f "$OUT/$f"; ln "$IMAGE/$f" "$OUT/$f" 2>/dev/null || cp "$IMAGE/$f" "$OUT/$f"
  done
  printf 'iso: %s (%s MiB)\nqcow2: %s (%s MiB)\n' "$OUT/anvil.iso" "$(( $(stat -c %s "$OUT/anvil.iso") >> 20 ))" \
    "$OUT/anvil.qcow2" "$(( $(stat -c %s "$OUT/anvil.qcow2") >> 20 ))"
}

if [ -f "$IMAGE/done" ]; then
  publish
  echo "build: cached (key $IMAGE_KEY, built in $(cat "$IMAGE/seconds") s), $(( $(date +%s) - T0 )) s now"
  exit 0
fi

# 1. The Debian root, cached by its own inputs.
if [ ! -f "$BASE/done" ]; then
  log "Debian root (mmdebstrap minbase; ~2 min)"
  mkdir -p "$BASE"      # mmdebstrap wants the target's parent to exist
  "$HERE/rootfs.sh" "$BASE/rootfs" "$CACHE/apt"
  touch "$BASE/done"
fi

WORK=$CACHE/work
rm -rf "$WORK"; mkdir -p "$WORK/wheels" "$WORK/stage/live" "$WORK/stage/boot/grub"
trap 'rm -rf "$WORK"' EXIT

# 2. Wheels: this checkout's, and the locked dependencies (from PyPI once; cached by the lock's hash).
log "wheels"
"$ROOT/.venv/bin/uv" build -q --wheel --out-dir "$WORK/wheels" "$ROOT"
DEPS=$CACHE/deps-$(sha256sum "$HERE/requirements.lock" | cut -c1-16)
if [ ! -f "$DEPS/done" ]; then
  mkdir -p "$DEPS"
  "$PY" -m pip wheel -q --no-deps --require-hashes -r "$HERE/requirements.lock" -w "$DEPS"
  touch "$DEPS/done"
fi
cp "$DEPS"/*.whl "$WORK/wheels/"

# 3. The image's root: the cached base, the overlay, the units, Anvil in a venv.
log "image root"
R=$WORK/rootfs
cp -a "$BASE/rootfs" "$R"
cp -a "$HERE/overlay/." "$R/"
install -m 0644 "$ROOT"/systemd/*.service "$R/etc/systemd/system/"
install -D -m 0644 "$ROOT/systemd/sysusers.d/anvil.conf" "$R/usr/lib/sysusers.d/anvil.conf"
install -D -m 0644 "$ROOT/systemd/tmpfiles.d/anvil.conf" "$R/usr/lib/tmpfiles.d/anvil.conf"
mkdir -p "$R/tmp/wheels"; cp "$WORK/wheels"/*.whl "$R/tmp/wheels/"
chroot "$R" python3 -m venv /opt/anvil/venv
chroot "$R" /opt/anvil/venv/bin/pip install -q --no-index --no-cache-dir --find-links /tmp/wheels anvil-appliance
chroot "$R" /opt/anvil/venv/bin/pip uninstall -q -y pip
rm -rf "$R/tmp/wheels"
chroot "$R" systemd-sysusers
chroot "$R" systemctl enable -q systemd-networkd.service systemd-timesyncd.service anvil-setup.service \
  anvil.service anvil-boot.service
chroot "$R" systemctl disable -q systemd-networkd-wait-online.service 2>/dev/null || true
# What the appliance must not hold (issue 17: no compilers).
for f in gcc cc c++ g++ clang; do
  if [ -e "$R/usr/bin/$f" ]; then echo "iso/build.sh: the image holds /usr/bin/$f" >&2; exit 1; fi
done
# Drivers a headless server appliance never loads (the initrd keeps its own copy).
for d in gpu media net/wireless infiniband bluetooth staging isdn; do rm -rf "$R"/usr/lib/modules/*/kernel/drivers/$d; done
rm -rf "$R"/usr/lib/modules/*/kernel/sound

# 4. squashfs + GRUB (BIOS and UEFI from one grub.cfg) = hybrid ISO; the qcow2 is the same image.
log "squashfs and ISO"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || echo 1767225600)}
S=$WORK/stage
KVER=$(basename "$(ls -1 "$R"/boot/vmlinuz-* | sort -V | tail -n1)" | sed 's/^vmlinuz-//')
cp "$R/boot/vmlinuz-$KVER" "$S/live/vmlinuz"
cp "$R/boot/initrd.img-$KVER" "$S/live/initrd.img"
mksquashfs "$R" "$S/live/filesystem.squashfs" -comp zstd -Xcompression-level 6 -noappend -no-progress -quiet \
  -e boot -wildcards -e 'var/cache/apt/archives/*.deb' -e 'var/lib/apt/lists/*' \
  -mkfs-time "$SOURCE_DATE_EPOCH" -all-time "$SOURCE_DATE_EPOCH" 2>&1 | grep -v 'Unrecognised xattr prefix' || true
sed "s|@KARGS@|${ANVIL_ISO_KARGS:-}|" "$HERE/grub.cfg.in" > "$S/boot/grub/grub.cfg"
mkdir -p "$IMAGE.tmp"
grub-mkrescue -o "$IMAGE.tmp/anvil.iso" "$S" -- -volid ANVIL 2>&1 \
  | grep -v -E '^(xorriso|Drive current|Media current|Media status|Media summary|Added to ISO|Writing to|ISO image produced|Written to medium|GNU xorriso)|^$' || true
xorriso -indev "$IMAGE.tmp/anvil.iso" -report_el_torito plain 2>/dev/null | grep -q 'El Torito boot img.*UEFI' \
  || { echo "iso/build.sh: the ISO has no UEFI boot image (grub-efi-amd64-bin missing?)" >&2; exit 1; }
qemu-img convert -f raw -O qcow2 "$IMAGE.tmp/anvil.iso" "$IMAGE.tmp/anvil.qcow2"
SECONDS_TOOK=$(( $(date +%s) - T0 ))
{
  echo "key $IMAGE_KEY (base $BASE_KEY)"
  echo "kernel $KVER"
  echo "anvil $(ls "$WORK/wheels" | grep '^anvil_appliance')"
  echo "packages $(chroot "$R" dpkg-query -W | wc -l) Debian, $(ls "$WORK/wheels" | wc -l) wheels"
} > "$IMAGE.tmp/build-info.txt"
echo "$SECONDS_TOOK" > "$IMAGE.tmp/seconds"
touch "$IMAGE.tmp/done"
rm -rf "$IMAGE"; mv "$IMAGE.tmp" "$IMAGE"
# Keep the newest two images only.
ls -1dt "$CACHE"/image-* 2>/dev/null | tail -n +3 | xargs -r rm -rf
publish
echo "build: ${SECONDS_TOOK} s (key $IMAGE_KEY)"
