#!/bin/sh
# udhcpc's event script in the lab image: configure the lease, and leave it in
# /run/anvil/dhcp.env for the agent (/init) to report.
mkdir -p /run/anvil
case "$1" in
    deconfig)
        ip -4 addr flush dev "$interface" 2>/dev/null
        ip link set "$interface" up
        ;;
    bound|renew)
        ip -4 addr flush dev "$interface" 2>/dev/null
        ifconfig "$interface" "$ip" netmask "${subnet:-255.255.255.0}" up
        if [ -n "$router" ]; then
            route del default 2>/dev/null
            # several routers may be offered; the first is enough for the lab
            route add default gw "${router%% *}" dev "$interface"
        fi
        {
            echo "ip=$ip"
            echo "subnet=$subnet"
            echo "router=${router%% *}"
            echo "serverid=$serverid"
            echo "lease=$lease"
        } > /run/anvil/dhcp.env
        ;;
esac
exit 0
