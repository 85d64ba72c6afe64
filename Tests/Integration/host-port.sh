#!/usr/bin/env bash
# Host ports (TAP) on the embedded switch, against the real host stack in network namespaces
# this test creates:
#  1. a namespace behind host port A pings a dpdk-testpmd virtio-user front-end running
#     icmpecho on another port of the same switch (ARP and ICMP through the switch both ways);
#     the TAP's offloads follow what testpmd negotiated, and return to all when it leaves;
#  2. two namespaces behind host ports A and B move 100 MB of TCP each way with iperf3 (TSO
#     segments cross the switch whole), and the byte counts and switch counters agree.
. "$(dirname "$0")/lib.sh"
echo "host-port"
TAG=$(($$ % 100000))
NSA=vnA$TAG; NSB=vnB$TAG
TAPA=vnha$TAG; TAPB=vnhb$TAG
host_cleanup() {
  ip netns del "$NSA" 2>/dev/null
  ip netns del "$NSB" 2>/dev/null
}
trap 'cleanup; host_cleanup' EXIT

ip netns add "$NSA" && ip netns add "$NSB" || { fail "cannot create network namespaces"; finish; exit 1; }
start_daemon --port "vale0:pmd=$WORK/pmd.sock" --host-port "vale0:$TAPA" --host-port "vale0:$TAPB" || { finish; exit 1; }
# The daemon creates the taps in its namespace; each is moved into its own (the daemon's
# descriptors stay attached to them).
for pair in "$TAPA $NSA 10.77.0.1" "$TAPB $NSB 10.77.0.2"; do
  set -- $pair
  ip link set "$1" netns "$2" || fail "cannot move $1 into $2"
  ip -n "$2" link set lo up
  ip -n "$2" addr add "$3/24" dev "$1"
  ip -n "$2" link set "$1" up
done
expect_eq "offloads with no guest" "$(host_field $TAPA offloads)" "csum,tso4,tso6,tso-ecn"

# 1. ping testpmd's icmpecho (it answers ARP for any address, and echo requests).
start_testpmd pmd "$WORK/pmd.sock" 02:00:00:00:00:99 1
wait_for port_ready vale0:pmd || fail "testpmd's rings never got ready"
tp pmd "set fwd icmpecho"
tp pmd "start"
sleep 1
if ip netns exec "$NSA" ping -c 5 -i 0.2 -W 2 10.77.0.99 > "$WORK/ping-pmd.log" 2>&1; then
  pass "ns A pings testpmd icmpecho ($(grep -o '[0-9]* received' "$WORK/ping-pmd.log"))"
else
  fail "ping to testpmd icmpecho: $(tail -2 "$WORK/ping-pmd.log")"
fi
expect_eq "ns A learned testpmd's MAC by ARP" "$(ip -n "$NSA" neigh show 10.77.0.99 | awk '{print $5}')" "02:00:00:00:00:99"
pmd_out=$(port_field vale0:pmd counters.outPackets)
pmd_in=$(port_field vale0:pmd counters.inPackets)
[ "$pmd_in" -ge 6 ] && pass "testpmd sent $pmd_in frames into the switch (ARP + 5 echo replies)" || fail "testpmd in: $pmd_in"
[ "$pmd_out" -ge 6 ] && pass "testpmd got $pmd_out frames from the switch" || fail "testpmd out: $pmd_out"
offloads_pmd=$(host_field $TAPA offloads)
echo "  offloads with testpmd attached: $offloads_pmd"
tp_quit pmd
wait_for bash -c "[ \"\$($BIN stats --control $WORK/control.sock | grep -c '\"connected\" : true')\" = 0 ]"
expect_eq "offloads after testpmd left" "$(host_field $TAPA offloads)" "csum,tso4,tso6,tso-ecn"

# 2. ns A <-> ns B through the switch.
ip netns exec "$NSA" ping -c 3 -i 0.2 -W 2 10.77.0.2 > "$WORK/ping-ab.log" 2>&1 && pass "ns A pings ns B" || fail "ns A -> ns B ping"
ip netns exec "$NSB" ping -c 3 -i 0.2 -W 2 10.77.0.1 > "$WORK/ping-ba.log" 2>&1 && pass "ns B pings ns A" || fail "ns B -> ns A ping"
# tcp_transfer FROM-NS TO-NS TO-ADDR: 100 MB of TCP, count and SHA-256 compared.
tcp_transfer() {
  local from=$1 to=$2 addr=$3 port=$((5201 + RANDOM % 1000))
  ip netns exec "$to" python3 "$ROOT/Tests/Integration/tcp-count.py" recv "$addr" $port > "$WORK/recv-$from.txt" 2>&1 &
  local server=$!
  sleep 0.5
  ip netns exec "$from" python3 "$ROOT/Tests/Integration/tcp-count.py" send "$addr" $port 104857600 > "$WORK/send-$from.txt" 2>&1
  wait $server
  local sent got
  sent=$(cat "$WORK/send-$from.txt"); got=$(cat "$WORK/recv-$from.txt")
  if [ "$sent" = "$got" ] && [ "${got%% *}" = 104857600 ]; then
    pass "$from -> $to: 104857600 bytes of TCP, SHA-256 equal"
  else
    fail "$from -> $to: sent '$sent', received '$got'"
  fi
}
tcp_transfer "$NSA" "$NSB" 10.77.0.2
tcp_transfer "$NSB" "$NSA" 10.77.0.1
# Throughput for the log (not asserted: this is a test, bench/ measures).
ip netns exec "$NSB" iperf3 -s -1 -B 10.77.0.2 > /dev/null 2>&1 &
SERVER=$!
sleep 0.5
ip netns exec "$NSA" iperf3 -c 10.77.0.2 -t 2 -J > "$WORK/iperf.json" 2>&1
wait $SERVER
echo "  iperf3 A -> B: $(python3 -c 'import json,sys; print("%.2f Gbit/s" % (json.load(open(sys.argv[1]))["end"]["sum_received"]["bits_per_second"] / 1e9))' "$WORK/iperf.json" 2>/dev/null)"
in_bytes=$(host_field $TAPA counters.inBytes)
[ "$in_bytes" -ge 104857600 ] && pass "switch counted $in_bytes bytes in from host port A" || fail "host port A inBytes $in_bytes"
large=$(host_field $TAPA counters.inPackets)
[ "$large" -lt $((in_bytes / 3000)) ] && pass "TSO: $large frames carried $in_bytes bytes from A (segments crossed whole)" || fail "A sent $large frames for $in_bytes bytes: no TSO"
expect_eq "write errors on A" "$(host_field $TAPA writeErrors)" 0
expect_eq "write errors on B" "$(host_field $TAPB writeErrors)" 0
expect_eq "dropped for no room on B" "$(host_field $TAPB counters.dropNoRoom)" 0
finish
