# Sourced by scripts/run-appliance and scripts/bench-discovery: the lab network they share.
#
# lab_network ID LAN MGMT WORK creates namespaces ID-lan (bridge br0 at LAN.1/24, dnsmasq on it
# as the site DHCP server handing out LAN.100-199 only, logging to WORK/dnsmasq.log) and ID-app
# (veth at LAN.2/24 on the bridge, where the appliance runs), plus a management veth pair from
# this host (ID-mgmt, MGMT.1/30) to the app namespace (mgmt, MGMT.2/30), so that kubectl here
# reaches the embedded API server at MGMT.2. Nothing touches the host's own interfaces.
# dnsmasq's PID is appended to the caller's `pids` array; lab_network_remove ID undoes it all.

lab_network() {
  local id=$1 lan=$2 mgmt=$3 work=$4
  ip netns add "$id-lan"
  ip netns add "$id-app"
  ip -n "$id-lan" link set lo up
  ip -n "$id-app" link set lo up
  ip -n "$id-lan" link add br0 type bridge
  ip -n "$id-lan" addr add "$lan.1/24" dev br0
  ip -n "$id-lan" link set br0 up
  ip -n "$id-lan" link add vethbr type veth peer name veth
  ip -n "$id-lan" link set veth netns "$id-app"
  ip -n "$id-lan" link set vethbr master br0 up
  ip -n "$id-app" addr add "$lan.2/24" dev veth
  ip -n "$id-app" link set veth up
  ip link add "$id-mgmt" type veth peer name mgmt netns "$id-app"
  ip addr add "$mgmt.1/30" dev "$id-mgmt"
  ip link set "$id-mgmt" up
  ip -n "$id-app" addr add "$mgmt.2/30" dev mgmt
  ip -n "$id-app" link set mgmt up

  ip netns exec "$id-lan" dnsmasq --keep-in-foreground --no-daemon --conf-file=/dev/null \
    --port=0 --interface=br0 --bind-interfaces --dhcp-authoritative \
    --log-facility="$work/dnsmasq.log" --dhcp-range="$lan.100,$lan.199,255.255.255.0,1h" \
    --dhcp-leasefile="$work/leases" --pid-file="$work/dnsmasq.pid" >>"$work/dnsmasq.log" 2>&1 &
  pids+=($!)
}

lab_network_remove() {
  local id=$1
  ip netns del "$id-lan" 2>/dev/null || true
  ip netns del "$id-app" 2>/dev/null || true
  ip link del "$id-mgmt" 2>/dev/null || true
}
