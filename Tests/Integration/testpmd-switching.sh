#!/usr/bin/env bash
# Three dpdk-testpmd virtio-user front-ends on three ports of one embedded switch:
# unicast after learning reaches exactly one port, broadcast reaches every other port,
# and the daemon's counters agree with what testpmd counted.
# With WORKERS > 1 the switch runs on that many worker threads: the ports (slots 0, 1, 2) and
# their queue pairs are spread over them, and several workers deliver into one port at once.
# usage: testpmd-switching.sh [DEVARGS for virtio-user, e.g. ",mrg_rxbuf=0,queue_size=1024"] [QUEUES] [WORKERS]
. "$(dirname "$0")/lib.sh"
DEVARGS=${1:-}
QUEUES=${2:-1}
WORKERS=${3:-1}
echo "testpmd-switching: devargs='$DEVARGS' queues=$QUEUES workers=$WORKERS"
Q="--rxq=$QUEUES --txq=$QUEUES"
start_daemon --workers "$WORKERS" --port "vale0:a=$WORK/a.sock,queues=$QUEUES" --port "vale0:b=$WORK/b.sock,queues=$QUEUES" --port "vale0:c=$WORK/c.sock,queues=$QUEUES" || exit 1
expect_eq "workers of vale0" "$(stats | python3 -c 'import json,sys; print(json.load(sys.stdin)["switches"][0]["workers"])')" "$WORKERS"
if [ "$WORKERS" -gt 1 ]; then
  threads=$(ls /proc/"$DAEMON_PID"/task | while read -r t; do cat /proc/"$DAEMON_PID"/task/"$t"/comm; done | grep -c '^vale-vale0/')
  expect_eq "worker threads named vale-vale0/N" "$threads" "$WORKERS"
fi
MA=02:00:00:00:00:0a; MB=02:00:00:00:00:0b; MC=02:00:00:00:00:0c
start_testpmd a "$WORK/a.sock" $MA 0 ",queues=$QUEUES$DEVARGS" "$Q"
start_testpmd b "$WORK/b.sock" $MB 1 ",queues=$QUEUES$DEVARGS" "$Q"
start_testpmd c "$WORK/c.sock" $MC 1 ",queues=$QUEUES$DEVARGS" "$Q"
for p in a b c; do
  wait_for port_ready "vale0:$p" "$QUEUES" || { fail "port $p never got ready rings"; finish; exit 1; }
  tp $p "set fwd rxonly"
done
# The ring layout and ordering the devargs ask for are the ones negotiated.
feature() { echo $(( ($(port_field vale0:a device.features) >> $1) & 1 )); }
case "$DEVARGS" in *packed_vq=1*) want=1;; *) want=0;; esac
expect_eq "VIRTIO_F_RING_PACKED negotiated" "$(feature 34)" $want
# (virtio-user asks for IN_ORDER unless in_order=0)
case "$DEVARGS" in *in_order=0*) want=0;; *) want=1;; esac
expect_eq "VIRTIO_F_IN_ORDER negotiated" "$(feature 35)" $want
# virtio-user posts its receive buffers when forwarding starts: start every receiver first.
tp a "start"; tp b "start"; tp c "start"
sleep 2
tp b "stop" 
# The learned addresses are checked below through "fdb".
# b speaks first (one burst per queue to a): the switch learns b; a and c see it flooded.
tp b "set eth-peer 0 $MA"
tp b "start tx_first 1"
BURST=$((32 * QUEUES))
wait_for counter_at_least vale0:c outPackets $BURST || fail "b's first burst was not flooded to c"
# a sends 10 bursts per queue to b: unicast, learned. One burst at a time, so that a
# receiver starved of CPU (three polling testpmds share two cores) never finds its ring full.
# testpmd ignores "set eth-peer" while forwarding: stop first.
tp a "stop"
tp a "set eth-peer 0 $MB"
for i in $(seq 10); do
  [ "$i" -gt 1 ] && tp a "stop"
  tp a "start tx_first 1"
  wait_for counter_at_least vale0:b outPackets $((BURST * i)) || { fail "b did not get burst $i"; break; }
done
N=$((320 * QUEUES))
sleep 0.5
expect_eq "a sent (testpmd)" "$(tp_stat a TX-packets)" $N
expect_eq "b received (testpmd)" "$(tp_stat b RX-packets)" $N
expect_eq "b out (switch)" "$(port_field vale0:b counters.outPackets)" $N
expect_eq "a in (switch)" "$(port_field vale0:a counters.inPackets)" $N
expect_eq "c out (switch): unicast did not leak" "$(port_field vale0:c counters.outPackets)" $BURST
expect_eq "learned b" "$("$BIN" fdb --control "$WORK/control.sock" | python3 -c 'import json,sys; print({e["mac"]: e["port"] for e in json.load(sys.stdin)["vale0"]}.get("02:00:00:00:00:0b"))')" "vale0:b"
# Broadcast from a reaches b and c, and not a.
tp a "stop"
tp a "set eth-peer 0 ff:ff:ff:ff:ff:ff"
tp a "start tx_first 1"
wait_for counter_at_least vale0:c outPackets $((2 * BURST)) || fail "broadcast did not reach c"
sleep 0.5
expect_eq "b received after broadcast" "$(tp_stat b RX-packets)" $((N + BURST))
expect_eq "c received (flood + broadcast)" "$(tp_stat c RX-packets)" $((2 * BURST))
expect_eq "a out (switch): never back to the sender" "$(port_field vale0:a counters.outPackets)" $BURST
for p in a b c; do
  for k in dropBadDescriptor dropShort; do expect_eq "$p $k" "$(port_field vale0:$p counters.$k)" 0; done
  tp_quit $p
done
finish
