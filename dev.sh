#!/usr/bin/env bash
# Anvil's two commands, on a fresh Debian 12 machine:
#   ./dev.sh run    install everything, then start `anvil demo`: an emulated rack and the appliance
#   ./dev.sh test   install everything, then run the whole test suite (what CI runs)
#   ./dev.sh iso    build the appliance image (build/iso/anvil.iso and anvil.qcow2; iso/build.sh, cached)
# Everything it needs comes from Debian's packages and PyPI; nothing is installed by hand.
set -euo pipefail
cd "$(dirname "$0")"
ROOT=$(pwd)

APT_PACKAGES=(
  python3-venv ca-certificates curl     # curl: the README's /metrics example
  postgresql postgresql-contrib          # the store's tests run against PostgreSQL too
  iproute2 openvswitch-switch            # the emulated rack's OVS switch and its namespaces
  iputils-ping ethtool tcpdump           # checking and watching the lab's networks
  chromium fonts-liberation              # the web console's browser tests (Playwright drives it)
  ipxe dnsmasq-base                      # boot services: iPXE binaries for TFTP, dnsmasq for DHCP
  tgt libiscsi-bin open-iscsi            # iSCSI boot LUNs (tgtd), an initiator to check ACLs, iscsistart for the lab image
  qemu-system-x86 qemu-utils ovmf        # the VM lab's blades (TCG where /dev/kvm is not hardware KVM)
  busybox-static cpio                    # the lab's tiny boot image (initramfs built by pxe/initramfs/build.py)
  libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients  # VM hosts: a libvirtd the lab starts itself
  libvirt-dev pkg-config gcc python3-dev # libvirt-python (the [libvirt] extra) builds against them
  nginx-light wrk                        # the boot-serving benchmark's peer and load generator
  prometheus                             # a real Prometheus scrapes /metrics in a test
  mmdebstrap squashfs-tools xorriso mtools dosfstools  # the appliance image (iso/build.sh)
  grub-common grub-pc-bin grub-efi-amd64-bin           # both: grub-mkrescue quietly skips a platform it lacks
)

SUDO=""
if [ "$(id -u)" != 0 ]; then SUDO="sudo"; fi

log() { printf '== %s\n' "$*" >&2; }

install_apt() {
  local missing=()
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "apt-get install ${missing[*]}"
  # Packages such as postgresql start system daemons on install; we start our own, so forbid that.
  local guard=""
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' | $SUDO tee /usr/sbin/policy-rc.d >/dev/null
    $SUDO chmod 755 /usr/sbin/policy-rc.d
    guard=1
  fi
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  [ -n "$guard" ] && $SUDO rm -f /usr/sbin/policy-rc.d
  return 0
}

install_python() {
  # Debian's Python 3.11 is the floor; uv installs the locked-in dependency set in seconds.
  if [ ! -x .venv/bin/python ]; then
    log "creating .venv with /usr/bin/python3"
    /usr/bin/python3 -m venv .venv
  fi
  [ -x .venv/bin/uv ] || .venv/bin/pip install -q uv
  log "installing anvil and its test tools into .venv"
  .venv/bin/uv pip install -q -p .venv/bin/python -e '.[test]'
  # Byte-compile here: where PYTHONDONTWRITEBYTECODE=1 is set (as on the CI machine) no .pyc is ever
  # written, so every Python process (each `anvil` command, `anvil serve`, the lab's emulators, pytest's
  # workers) compiled all it imported from source again: `anvil config show` 1.3 -> 0.6 s, the README
  # test 176 -> 112 s. Python still reads .pyc files under that variable. Up-to-date files: ~1 s.
  log "byte-compiling .venv and the checkout"
  local purelib
  purelib=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_path("purelib"))')
  .venv/bin/python -m compileall -q -j 0 "$purelib" appliance bench tests scripts pxe >/dev/null \
    || log "some files could not be byte-compiled (they are compiled when imported, as before)"
}

cmd_run() {
  install_apt
  install_python
  ensure_nobody_can_traverse
  log "starting an emulated rack and the appliance (Ctrl-C stops both)"
  exec .venv/bin/anvil demo "$@"
}

ensure_nobody_can_traverse() {
  # The lab's snmpsim must drop root for `nobody`, who then imports from this checkout's .venv:
  # every directory above it needs o+x (search only, not read). Only done as root, and said.
  [ "$(id -u)" = 0 ] || return 0
  local d="$ROOT"
  while [ "$d" != "/" ]; do
    if [ -d "$d" ] && ! runuser -u nobody -- test -x "$d" 2>/dev/null; then
      log "chmod o+x $d (so the lab's snmpsim, running as nobody, can reach .venv)"
      chmod o+x "$d"
    fi
    d=$(dirname "$d")
  done
}

cmd_test() {
  install_apt
  install_python
  ensure_nobody_can_traverse
  log "ruff"
  .venv/bin/ruff check appliance tests bench scripts pxe
  log "mypy"
  .venv/bin/mypy appliance
  log "pytest"
  mkdir -p test-artifacts
  set +e
  # A skip fails the run unless tests/skips_allowed.txt lists it (tests/support/skip_gate.py);
  # ANVIL_CI=0 ./dev.sh test lets them pass as skips. -rs prints every skip with its reason.
  export ANVIL_CI="${ANVIL_CI:-1}"
  # --dist worksteal, with the longest modules first (tests/support/order.py, tests/durations.txt):
  # each worker starts on half the suite and a worker that runs dry takes the later half of the
  # other's queue, so the run ends on short tests. Plain --dist load hands out chunks of a quarter
  # of what is left and never takes them back: one worker sat idle ~190 s at the end of a 30-min run.
  # loadscope/loadfile/loadgroup key tests by node id and run only 1 of schemathesis's generated
  # tests (they share one). Modules move whole, so a VM lab or a built ISO is set up once per worker
  # that runs its module, as before (a steal can split only the module at its boundary).
  # test-artifacts/junit.xml: every test's duration, to find what makes the suite long (and to
  # regenerate tests/durations.txt).
  .venv/bin/python -m pytest -n 2 --dist worksteal -p no:cacheprovider -rs --durations=15 \
    --junitxml=test-artifacts/junit.xml "$@"
  rc=$?
  set -e
  if [ $rc -eq 5 ]; then echo "no tests ran" >&2; exit 1; fi
  exit $rc
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  install) install_apt; install_python ;;
  iso) shift; install_apt; install_python; exec $SUDO env ANVIL_ISO_CACHE="${ANVIL_ISO_CACHE:-}" iso/build.sh "$@" ;;
  *) echo "usage: ./dev.sh run|test|install|iso" >&2; exit 2 ;;
esac
