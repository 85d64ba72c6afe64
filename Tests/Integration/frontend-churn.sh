#!/usr/bin/env bash
# 1,000 front-end connections come and go on one port while two dpdk-testpmd virtio-user
# front-ends stream frames between two other ports: each churning front-end (the project's
# pkt-gen over vhost-user: negotiate, map memory, start rings, send a frame, leave) is served,
# and the stream is untouched: its ports never reconnect, no frame is lost to a not-ready or bad
# ring, and every frame the switch took from a is delivered to b or counted as b's ring full.
# (The churning front-ends send to a, which learned its address: b sees only the stream.)
# usage: frontend-churn.sh [CONNECTIONS=1000]
. "$(dirname "$0")/lib.sh"
CONNECTIONS=${1:-1000}
echo "frontend-churn: $CONNECTIONS connections beside a stream"
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}
MA=02:00:00:00:00:0a; MB=02:00:00:00:00:0b
start_daemon --port "vale0:a=$WORK/a.sock" --port "vale0:b=$WORK/b.sock" --port "vale0:c=$WORK/c.sock" || { finish; exit 1; }
start_testpmd a "$WORK/a.sock" $MA 0
start_testpmd b "$WORK/b.sock" $MB 1
for p in a b; do wait_for port_ready "vale0:$p" || { fail "port $p never got ready rings"; finish; exit 1; }; done
# b announces itself (a few frames to a), so that a's stream is switched to b alone.
tp b "set eth-peer 0 $MA"; tp b "set fwd txonly"; tp b "start"; sleep 0.5; tp b "stop"
tp b "set fwd rxonly"; tp b "start"
tp a "set eth-peer 0 $MB"; tp a "set fwd txonly"; tp a "start"
wait_for counter_at_least vale0:b outPackets 10000 || { fail "no stream from a to b"; finish; exit 1; }
B_BEFORE=$(port_field vale0:b counters.outPackets)
served=0
for i in $(seq "$CONNECTIONS"); do
  "$PG" -i "vhost-user:$WORK/c.sock" -f tx -n 1 -w 0 -D "$MA" > /dev/null 2>> "$WORK/churn.err" && served=$((served + 1))
done
B_DURING=$(( $(port_field vale0:b counters.outPackets) - B_BEFORE ))
tp a "stop"; sleep 1; tp b "stop"; sleep 0.5
expect_eq "churning front-ends served" "$served" "$CONNECTIONS"
expect_eq "connections the daemon counted on c" "$(port_field vale0:c frontEnds.connections)" "$CONNECTIONS"
expect_eq "frames c sent into the switch" "$(port_field vale0:c counters.inPackets)" "$CONNECTIONS"
[ "$B_DURING" -gt 0 ] && pass "the stream went on during the churn: $B_DURING frames to b" || fail "b received nothing during the churn"
for p in a b; do
  expect_eq "$p's front-end connected once (never dropped)" "$(port_field vale0:$p frontEnds.connections)" 1
  expect_eq "$p: frames lost to a not-ready ring" "$(port_field vale0:$p counters.dropNotReady)" 0
  expect_eq "$p: bad descriptors" "$(port_field vale0:$p counters.dropBadDescriptor)" 0
done
A_IN=$(port_field vale0:a counters.inPackets); B_OUT=$(port_field vale0:b counters.outPackets); B_FULL=$(port_field vale0:b counters.dropNoRoom)
B_RX=$(tp_stat b RX-packets)
echo "    a -> switch $A_IN; switch -> b $B_OUT (+ $B_FULL with b's ring full); b's testpmd received $B_RX"
expect_eq "every frame from a delivered to b or counted as b's ring full" "$((B_OUT + B_FULL))" "$A_IN"
expect_eq "b's testpmd received what the switch delivered" "$B_RX" "$B_OUT"
tp_quit a; tp_quit b
finish
