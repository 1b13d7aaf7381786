#!/bin/sh
# /init of the VM lab's boot image (busybox ash, PID 1): the lab image's AGENT.
#
# Kernel command line (all optional except anvil.callback for a callback to happen):
#   anvil.callback=URL      POST the boot callback here (DESIGN §7)
#   anvil.token=T           the one-time boot token sent with it
#   anvil.mode=agent|oneshot  agent (default): heartbeats until powered off; oneshot: power off after the callback
#   anvil.profile=TENANT/NAME  reported back; NAME also becomes the hostname
#   anvil.uuid=U            reported back
#   anvil.nic=NAME,MAC[,IP] repeatable; the NIC whose MAC matches one of these is the one used
#                           (else the first NIC); IP (CIDR, /24 if bare) is set statically instead of DHCP
#   anvil.disk_write=TEXT   after reading the disk marker, write TEXT there (sector 2 of /dev/sda)
# Values are single words (no spaces): the kernel command line is split on blanks here.
#
# Steps: load modules -> bring the NIC up (DHCP with udhcpc) -> if iPXE published an iBFT
# (sanhook), iscsistart -b and wait (bounded) for /dev/sda -> read (then maybe write) the
# disk marker -> POST the callback (bounded retries) -> heartbeats or power off.
# Every line meant for a reader starts with "anvil-agent:" on the console (ttyS0 in the lab).
#
# Callback body (application/x-www-form-urlencoded): token mac ip uptime hostname kernel mode
# profile uuid sysuuid disk. sysuuid = the machine's SMBIOS system UUID as the kernel reads it
# (a VM's is its domain's UUID: a profile's, where the VM host applied it). disk = the marker read before writing; "" when the disk has none;
# "none" when there is no disk. Answer: lines heartbeat_secret=S, heartbeat_url=URL,
# heartbeat_interval=N (seconds; default 10, at least 1); heartbeats POST secret=S.
#
# busybox-static 1.35 (Debian 12): `wget -T` segfaults with --post-data, so every wget
# runs under `timeout` instead (lab/boot-vm.md §2.4).

export PATH=/usr/sbin:/usr/bin:/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev 2>/dev/null
mkdir -p /tmp /run/anvil

DISK_DEV=/dev/sda
MARKER_SECTOR=2
MARKER_MAX=200
CALLBACK_TRIES=10
WGET_TIMEOUT=10

# Echo to ttyS0 as well when the console is elsewhere, so a test reading the serial log
# still sees progress.
SERIAL=
if [ -c /dev/ttyS0 ] && ! grep -qw ttyS0 /sys/class/tty/console/active 2>/dev/null; then
    SERIAL=/dev/ttyS0
fi
log() {
    echo "anvil-agent: $*"
    if [ -n "$SERIAL" ]; then echo "anvil-agent: $*" >"$SERIAL" 2>/dev/null; fi
    return 0
}

idle_forever() {
    while :; do sleep 3600; done
}

power_off() {
    log "powering off"
    sync
    poweroff -f
    idle_forever   # PID 1 must never exit (kernel panic)
}

# ---- command line -------------------------------------------------------------------
CALLBACK= TOKEN= MODE=agent PROFILE= UUID= NICS= DISK_WRITE=
set -f
for arg in $(cat /proc/cmdline); do
    case "$arg" in
        anvil.callback=*) CALLBACK=${arg#*=} ;;
        anvil.token=*) TOKEN=${arg#*=} ;;
        anvil.mode=*) MODE=${arg#*=} ;;
        anvil.profile=*) PROFILE=${arg#*=} ;;
        anvil.uuid=*) UUID=${arg#*=} ;;
        anvil.nic=*) NICS="$NICS ${arg#*=}" ;;
        anvil.disk_write=*) DISK_WRITE=${arg#*=} ;;
    esac
done
set +f
case "$MODE" in
    agent|oneshot) ;;
    *) log "unknown anvil.mode=$MODE, using agent"; MODE=agent ;;
esac
log "start: mode=$MODE profile=${PROFILE:-none} kernel=$(uname -r)"

# ---- modules --------------------------------------------------------------------------
while read -r mod; do
    [ -n "$mod" ] || continue
    if ! insmod "/lib/modules/$mod.ko" 2>/tmp/insmod.err; then
        # iscsi_ibft refuses to load without an iBFT: expected on every non-iSCSI boot
        [ "$mod" = iscsi_ibft ] || log "insmod $mod: $(cat /tmp/insmod.err)"
    fi
done < /etc/anvil/modules
# The ACPI power button (IPMI soft off) powers the image off, as an OS with acpid would.
acpid -c /etc/acpi -l /tmp/acpid.log 2>/dev/null || log "acpid did not start"

# ---- network ----------------------------------------------------------------------------
ifaces() {
    for d in /sys/class/net/*; do
        n=${d##*/}
        [ "$n" = lo ] || [ ! -e "$d" ] || echo "$n"
    done
}
i=0
while [ -z "$(ifaces)" ] && [ $i -lt 50 ]; do usleep 100000; i=$((i + 1)); done

NIC= NIC_IP=
for spec in $NICS; do
    rest=${spec#*,}
    [ "$rest" != "$spec" ] || continue
    want=$(echo "${rest%%,*}" | tr A-F a-f)
    ip=
    case "$rest" in *,*) ip=${rest#*,} ;; esac
    for n in $(ifaces); do
        if [ "$(cat /sys/class/net/$n/address)" = "$want" ]; then
            NIC=$n NIC_IP=$ip
            break 2
        fi
    done
done
if [ -z "$NIC" ]; then
    NIC=$(ifaces | head -n 1)
    [ -z "$NICS" ] || log "no NIC has a MAC named by anvil.nic; using $NIC"
fi
MAC=
IP=
if [ -z "$NIC" ]; then
    log "no network interface found"
else
    MAC=$(cat /sys/class/net/$NIC/address)
    ip link set lo up
    ip link set "$NIC" up
    if [ -n "$NIC_IP" ]; then
        case "$NIC_IP" in */*) ;; *) NIC_IP="$NIC_IP/24" ;; esac
        ip addr add "$NIC_IP" dev "$NIC" && IP=${NIC_IP%/*}
        log "$NIC ($MAC): static $NIC_IP"
    else
        tries=0
        while [ $tries -lt 3 ] && [ -z "$IP" ]; do
            tries=$((tries + 1))
            udhcpc -i "$NIC" -s /etc/anvil/udhcpc.sh -t 10 -T 1 -A 1 -n -q -f >/tmp/udhcpc.log 2>&1
            [ -f /run/anvil/dhcp.env ] && IP=$(sed -n 's/^ip=//p' /run/anvil/dhcp.env)
        done
        if [ -n "$IP" ]; then
            log "$NIC ($MAC): DHCP lease $IP"
        else
            log "$NIC ($MAC): no DHCP lease: $(tail -n 3 /tmp/udhcpc.log | tr '\n' ' ')"
        fi
    fi
fi
HOST=${PROFILE##*/}
[ -n "$HOST" ] || HOST="lab-$(echo "$MAC" | tr -d :)"
hostname "$HOST"

# ---- iSCSI (iPXE sanhook published an iBFT) -----------------------------------------------
if ls -d /sys/firmware/ibft/target* >/dev/null 2>&1; then
    if [ -x /usr/sbin/iscsistart ]; then
        log "iBFT found: iscsistart -b"
        # In the background: whether it stays to serve the session or exits, /dev/sda is what counts.
        iscsistart -b >/tmp/iscsistart.log 2>&1 &
        i=0
        while [ ! -b "$DISK_DEV" ] && [ $i -lt 200 ]; do usleep 100000; i=$((i + 1)); done
        if [ -b "$DISK_DEV" ]; then
            log "iSCSI disk $DISK_DEV attached"
        else
            log "iSCSI disk did not appear within 20s: $(grep -v 'Could not read attr' /tmp/iscsistart.log | tail -n 3 | tr '\n' ' ')"
        fi
    else
        log "iBFT found but this image has no iscsistart"
    fi
fi

# ---- disk marker --------------------------------------------------------------------------
# [ -b ] and not [ -e ]: on devtmpfs, dd to a missing /dev/sda creates a regular file that
# would then "read back" the marker (lab/boot-vm.md §3c).
if [ -b "$DISK_DEV" ]; then
    DISK=$(dd if="$DISK_DEV" bs=512 skip=$MARKER_SECTOR count=1 2>/dev/null | tr '\000' '\n' | head -n 1 \
        | tr -cd ' -~' | head -c $MARKER_MAX)
    log "disk marker: '${DISK}'"
    if [ -n "$DISK_WRITE" ]; then
        if printf '%s' "$DISK_WRITE" | dd of="$DISK_DEV" bs=512 seek=$MARKER_SECTOR count=1 conv=sync,notrunc \
            2>/tmp/dd.err; then
            sync
            blockdev --flushbufs "$DISK_DEV" 2>/dev/null
            log "disk marker written: '$DISK_WRITE'"
        else
            log "disk marker write failed: $(cat /tmp/dd.err)"
        fi
    fi
else
    DISK=none
fi

# ---- callback ----------------------------------------------------------------------------
urlencode() {
    s=$1 out=
    while [ -n "$s" ]; do
        c=${s%"${s#?}"}
        s=${s#?}
        case "$c" in
            [a-zA-Z0-9._~-]) out="$out$c" ;;
            *) out="$out$(printf '%%%02X' "'$c")" ;;
        esac
    done
    printf '%s' "$out"
}

post() {  # URL BODY OUTFILE
    timeout $WGET_TIMEOUT wget -q -O "$3" --post-data "$2" "$1" 2>/tmp/wget.err
}

if [ -z "$CALLBACK" ]; then
    log "no anvil.callback on the command line: nothing to report"
    [ "$MODE" = oneshot ] && power_off
    idle_forever
fi

UPTIME=$(cut -d ' ' -f 1 /proc/uptime)
BODY="token=$(urlencode "$TOKEN")&mac=$(urlencode "$MAC")&ip=$(urlencode "$IP")&uptime=$UPTIME"
BODY="$BODY&hostname=$(urlencode "$HOST")&kernel=$(urlencode "$(uname -r)")&mode=$MODE"
BODY="$BODY&profile=$(urlencode "$PROFILE")&uuid=$(urlencode "$UUID")&disk=$(urlencode "$DISK")"
SYSUUID=$(cat /sys/class/dmi/id/product_uuid 2>/dev/null | tr A-F a-f)
BODY="$BODY&sysuuid=$(urlencode "$SYSUUID")"

ok=
n=0
while [ $n -lt $CALLBACK_TRIES ]; do
    n=$((n + 1))
    if post "$CALLBACK" "$BODY" /tmp/callback.out; then
        ok=1
        break
    fi
    err=$(tail -c 200 /tmp/wget.err | tr '\n' ' ')
    case "$err" in
        *" 40"[0-9]*)
            log "callback refused: $err"
            break ;;
    esac
    log "callback attempt $n failed: ${err:-timeout}"
    sleep 1
done

HB_SECRET= HB_URL= HB_INTERVAL=
if [ -n "$ok" ]; then
    tr -d '\r' < /tmp/callback.out > /tmp/callback.txt
    while IFS='=' read -r key value; do
        case "$key" in
            heartbeat_secret) HB_SECRET=$value ;;
            heartbeat_url) HB_URL=$value ;;
            heartbeat_interval) HB_INTERVAL=$value ;;
        esac
    done < /tmp/callback.txt
    log "callback ok (attempt $n, uptime ${UPTIME}s)"
else
    log "callback failed after $n attempts"
fi

if [ "$MODE" = oneshot ]; then
    power_off
fi

if [ -z "$HB_SECRET" ]; then
    log "no heartbeat secret: idle until powered off"
    idle_forever
fi
[ -n "$HB_URL" ] || HB_URL="${CALLBACK%/callback*}/heartbeat"
case "$HB_INTERVAL" in ''|*[!0-9]*) HB_INTERVAL=10 ;; esac
[ "$HB_INTERVAL" -ge 1 ] || HB_INTERVAL=1
log "heartbeats to $HB_URL every ${HB_INTERVAL}s"
HB_BODY="secret=$(urlencode "$HB_SECRET")"
beats=0
last=
while :; do
    if post "$HB_URL" "$HB_BODY" /dev/null; then
        beats=$((beats + 1))
        [ "$last" = ok ] || log "heartbeat ok (#$beats)"
        last=ok
    else
        log "heartbeat failed: $(tail -c 200 /tmp/wget.err | tr '\n' ' ')"
        last=fail
    fi
    sleep "$HB_INTERVAL"
done
