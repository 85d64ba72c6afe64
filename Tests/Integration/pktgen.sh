#!/usr/bin/env bash
# The Swift pkt-gen against real peers:
#  1. vhost-user front-end to vhost-netmap: tx on one port, rx on another; the receiver counts N,
#     or the exact loss, which the back-end's drop counter for that port explains;
#  2. vhost-user front-end to DPDK's vhost PMD (testpmd rxonly): testpmd counts N;
#  3. ping/pong through vhost-netmap: every ping answered;
#  4. TAP and AF_PACKET (PACKET_MMAP): tx into a TAP of its own, rx on the same interface;
#  5. the front-end with packed rings (vhost-user-packed:): tx/rx and ping/pong through vhost-netmap,
#     and tx into DPDK's vhost PMD.
. "$(dirname "$0")/lib.sh"
echo "pktgen"
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}
N=100000
TAG=$(($$ % 100000))

start_daemon --port "vale0:a=$WORK/a.sock" --port "vale0:b=$WORK/b.sock" || { finish; exit 1; }

# start_vhost_pmd NAME: DPDK's vhost PMD (testpmd, rxonly) listening on $WORK/v.sock, driven
# through a FIFO (its log is tp-NAME$TAG.log, as lib.sh's cleanup finds its run directory);
# vhost_pmd_received NAME: what it counted, after which it quits.
start_vhost_pmd() {
  rm -f "$WORK/v.sock"
  mkfifo "$WORK/tp$1.in"
  stdbuf -oL dpdk-testpmd --file-prefix="vnit-$1$TAG" --no-pci --no-huge -m 512 --lcores '0@1,1@1' --log-level=lib.eal:error \
    --vdev "net_vhost0,iface=$WORK/v.sock,queues=1" -- -i --total-num-mbufs=32768 < "$WORK/tp$1.in" > "$WORK/tp-$1$TAG.log" 2>&1 &
  PIDS+=("$!")
  exec {PMD_FD}> "$WORK/tp$1.in"
  for _ in $(seq 100); do [ -S "$WORK/v.sock" ] && break; sleep 0.1; done
  echo "set fwd rxonly" >&$PMD_FD; echo "start" >&$PMD_FD; sleep 1
}
vhost_pmd_received() {
  sleep 1; echo "show port stats 0" >&$PMD_FD; sleep 1
  grep -a 'RX-packets:' "$WORK/tp-$1$TAG.log" | tail -1 | awk '{print $2}'
  echo "quit" >&$PMD_FD
}
# Interval lines every 100 ms, and a sender held to 200 kpps (0.5 s): on a fast machine an
# unlimited run can end before the first interval, and then no interval line is printed.
"$PG" -i "vhost-user:$WORK/b.sock" -f rx -n $N -W -w 0 -T 100 > "$WORK/rx.out" 2> "$WORK/rx.err" & RX=$!
sleep 0.5
timeout 120 "$PG" -i "vhost-user:$WORK/a.sock" -f tx -n $N -R 200000 -w 1 -D 02:00:00:00:00:99 > "$WORK/tx.out" 2> "$WORK/tx.err" || fail "pkt-gen tx: $(tail -1 "$WORK/tx.err")"
wait $RX
sent=$(awk '/^Sent/{print $2}' "$WORK/tx.out"); received=$(awk '/^Received/{print $2}' "$WORK/rx.out")
dropped=$(port_field vale0:b counters.dropNoRoom)
expect_eq "pkt-gen tx summary" "$sent" $N
grep -q "^Speed: .*pps Bandwidth: .*bps (raw .*bps). Average batch: " "$WORK/tx.out" && pass "summary in pkt-gen's format" || fail "summary format: $(cat "$WORK/tx.out")"
grep -q "main_thread \[2781\] .*pps (.*pkts .*bps in [0-9]* usec) .* avg_batch [0-9]* min_space" "$WORK/rx.err" && pass "per-second lines in pkt-gen's format" || fail "interval lines: $(tail -2 "$WORK/rx.err")"
expect_eq "the switch took every frame from a (pkt-gen waits for its ring to drain)" "$(port_field vale0:a counters.inPackets)" $N
expect_eq "received + dropped for no room on b (loss explained)" "$((received + dropped))" $N
echo "  (received $received, dropped $dropped on a full ring)"

# 2. DPDK's vhost PMD as the back-end.
start_vhost_pmd pgv
timeout 120 "$PG" -i "vhost-user:$WORK/v.sock" -f tx -n 50000 -w 1 -R 200000 > "$WORK/txv.out" 2> "$WORK/txv.err" || fail "pkt-gen tx to DPDK: $(tail -1 "$WORK/txv.err")"
expect_eq "pkt-gen sent to DPDK's vhost PMD" "$(awk '/^Sent/{print $2}' "$WORK/txv.out")" 50000
expect_eq "testpmd (vhost PMD, rxonly) received" "$(vhost_pmd_received pgv)" 50000

# 3. ping/pong through the embedded switch.
"$PG" -i "vhost-user:$WORK/b.sock" -f pong -W -w 0 > "$WORK/pong.out" 2> "$WORK/pong.err" & PONG=$!
sleep 0.5
timeout 60 "$PG" -i "vhost-user:$WORK/a.sock" -f ping -n 20 -w 1 -D 02:00:00:00:00:98 > "$WORK/ping.out" 2> "$WORK/ping.err"
kill -INT $PONG 2>/dev/null; wait $PONG
grep -q "^RTT over 20 packets: min [0-9]* av [0-9]* ns" "$WORK/ping.out" && pass "ping: $(cat "$WORK/ping.out")" || fail "ping: $(cat "$WORK/ping.out") $(tail -2 "$WORK/ping.err")"

# 5. Packed rings.
in_before=$(port_field vale0:a counters.inPackets); out_before=$(port_field vale0:b counters.outPackets); drop_before=$(port_field vale0:b counters.dropNoRoom)
"$PG" -i "vhost-user-packed:$WORK/b.sock" -f rx -n $N -W -w 0 > "$WORK/prx.out" 2> "$WORK/prx.err" & PRX=$!
sleep 0.5
timeout 120 "$PG" -i "vhost-user-packed:$WORK/a.sock" -f tx -n $N -R 200000 -w 1 -D 02:00:00:00:00:97 > "$WORK/ptx.out" 2> "$WORK/ptx.err" || fail "packed tx: $(tail -1 "$WORK/ptx.err")"
wait $PRX
grep -q "features .*packed rings" "$WORK/daemon.log" && pass "the daemon negotiated packed rings with pkt-gen" || fail "no packed rings in the daemon's log"
expect_eq "packed: the switch took every frame from a" "$(( $(port_field vale0:a counters.inPackets) - in_before ))" $N
received=$(awk '/^Received/{print $2}' "$WORK/prx.out"); dropped=$(( $(port_field vale0:b counters.dropNoRoom) - drop_before ))
expect_eq "packed: received + dropped for no room on b" "$((received + dropped))" $N
expect_eq "packed: b delivered what pkt-gen received" "$(( $(port_field vale0:b counters.outPackets) - out_before ))" "$received"
"$PG" -i "vhost-user-packed:$WORK/b.sock" -f pong -W -w 0 > "$WORK/ppong.out" 2> "$WORK/ppong.err" & PONG=$!
sleep 0.5
timeout 60 "$PG" -i "vhost-user-packed:$WORK/a.sock" -f ping -n 20 -w 1 -D 02:00:00:00:00:96 > "$WORK/pping.out" 2> "$WORK/pping.err"
kill -INT $PONG 2>/dev/null; wait $PONG
grep -q "^RTT over 20 packets: min [0-9]* av [0-9]* ns" "$WORK/pping.out" && pass "packed ping: $(cat "$WORK/pping.out")" || fail "packed ping: $(cat "$WORK/pping.out") $(tail -2 "$WORK/pping.err")"
start_vhost_pmd pgp
timeout 120 "$PG" -i "vhost-user-packed:$WORK/v.sock" -f tx -n 50000 -w 1 -R 200000 > "$WORK/ptxv.out" 2> "$WORK/ptxv.err" || fail "packed tx to DPDK: $(tail -1 "$WORK/ptxv.err")"
expect_eq "testpmd (vhost PMD, rxonly) received from pkt-gen's packed rings" "$(vhost_pmd_received pgp)" 50000

# 4. TAP (pkt-gen's own) and AF_PACKET on that interface.
TAP=vnpg$TAG
# The TAP writer creates the interface, then waits 2 s (-w) while the AF_PACKET receiver opens it.
timeout 60 "$PG" -i "tap:$TAP" -f tx -n 2000 -w 2 -R 20000 > "$WORK/taptx.out" 2> "$WORK/taptx.err" &
TAPTX=$!
for _ in $(seq 50); do ip link show "$TAP" > /dev/null 2>&1 && break; sleep 0.1; done
"$PG" -i "$TAP" -f rx -n 2000 -W -w 0 > "$WORK/afrx.out" 2> "$WORK/afrx.err" & AFRX=$!
wait $TAPTX
wait $AFRX
expect_eq "pkt-gen wrote to its TAP" "$(awk '/^Sent/{print $2}' "$WORK/taptx.out")" 2000
expect_eq "pkt-gen AF_PACKET (PACKET_MMAP) received on it" "$(awk '/^Received/{print $2}' "$WORK/afrx.out")" 2000
finish
