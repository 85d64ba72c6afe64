#!/usr/bin/env bash
# An embedded switch on WORKERS worker threads under sustained traffic: one dpdk-testpmd with
# two virtio-user ports (a and b, QUEUES queue pairs each) in io forwarding, seeded with
# tx_first, so frames loop a -> switch -> b -> testpmd -> a (and the other way) as fast as they
# can. The queue pairs of each port are spread over the workers, so every worker reads both
# ports and delivers into both at once. Checked after the traffic stops and the switch drains:
#   - every frame testpmd transmitted was taken by the switch (its "in" counters);
#   - every frame the switch took was delivered or dropped with a reason (the ledger balances);
#   - testpmd received what the switch delivered, less at most what the receive rings hold;
#   - no ring went broken and no descriptor was bad; every worker thread ran;
#   - a second round starts from the rings as the first left them, and flows again.
# usage: multi-worker.sh [WORKERS=2] [QUEUES=2] [SECONDS=8] [DEVARGS]
. "$(dirname "$0")/lib.sh"
WORKERS=${1:-2}
QUEUES=${2:-2}
SECS=${3:-8}
DEVARGS=${4:-}
QSIZE=256
echo "multi-worker: workers=$WORKERS queues=$QUEUES ${SECS}s devargs='$DEVARGS'"
start_daemon --workers "$WORKERS" --port "vale0:a=$WORK/a.sock,queues=$QUEUES" --port "vale0:b=$WORK/b.sock,queues=$QUEUES" || exit 1

mkfifo "$WORK/tp.in"
stdbuf -oL dpdk-testpmd --file-prefix=vnit-mw --no-pci --no-huge -m 1024 --lcores '0@1,1@1' --log-level=lib.eal:error \
  --vdev "net_virtio_user0,path=$WORK/a.sock,queues=$QUEUES,queue_size=$QSIZE,mac=02:00:00:00:00:0a$DEVARGS" \
  --vdev "net_virtio_user1,path=$WORK/b.sock,queues=$QUEUES,queue_size=$QSIZE,mac=02:00:00:00:00:0b$DEVARGS" -- \
  -i --forward-mode=io --nb-cores=1 --rxq="$QUEUES" --txq="$QUEUES" --rxd=$QSIZE --txd=$QSIZE --total-num-mbufs=65536 \
  < "$WORK/tp.in" > "$WORK/tp-mw.log" 2>&1 &
TP=$!
PIDS+=("$TP")
exec {TPFD}> "$WORK/tp.in"
cmd() { echo "$1" >&"$TPFD"; }
for p in a b; do wait_for port_ready "vale0:$p" "$QUEUES" || { fail "port $p never got ready rings"; exit 1; }; done

# testpmd's totals over both ports: "show port stats all", the last block printed for each.
tp_totals() { # RX-packets|TX-packets
  cmd "show port stats all"; sleep 1
  awk -v k="$1:" '/NIC statistics for port/ {match($0, /port [0-9]+/); port = substr($0, RSTART + 5, RLENGTH - 5); next}
                  /statistics/ {port = ""}
                  port != "" {for (i = 1; i <= NF; i++) if ($i == k) v[port] = $(i + 1)}
                  END {s = 0; for (p in v) s += v[p]; print s}' "$WORK/tp-mw.log"
}
counter() { port_field "vale0:$1" "counters.$2"; }
ledger() { # in, out and drops of both ports, summed: prints "IN OUT DROPS"
  stats | python3 -c '
import json, sys
ins = outs = drops = 0
for p in json.load(sys.stdin)["switches"][0]["ports"]:
    c = p["counters"]
    ins += c["inPackets"]; outs += c["outPackets"]
    drops += sum(c[k] for k in ("dropShort", "dropBadDescriptor", "dropNoRoom", "dropNotReady", "dropOffload", "dropSamePort"))
print(ins, outs, drops)'
}

round() { # N: one round of traffic; checks the ledger after it
  cmd "start tx_first 4"
  sleep "$SECS"
  cmd "stop"
  sleep 2 # the switch drains what was queued
  local tx rx in out drops
  tx=$(tp_totals TX-packets)
  rx=$(tp_totals RX-packets)
  read -r in out drops <<< "$(ledger)"
  echo "  after round $1 (counts since the start): testpmd sent $tx, received $rx; switch in $in, out $out, drops $drops ($(awk -v n="$((in - PREVIOUS_IN))" -v s="$SECS" 'BEGIN {printf "%.2f", n / s / 1e6}') Mpps in this round)"
  [ $((in - PREVIOUS_IN)) -gt 100000 ] || fail "round $1: only $((in - PREVIOUS_IN)) frames went through"
  PREVIOUS_IN=$in
  expect_eq "round $1: every frame testpmd sent was taken" "$in" "$tx"
  expect_eq "round $1: the switch's ledger balances (in = out + drops)" "$in" "$((out + drops))"
  local ringed=$((2 * QUEUES * QSIZE))
  if [ "$rx" -le "$out" ] && [ "$rx" -ge $((out - ringed)) ]; then
    pass "round $1: testpmd received what was delivered ($rx of $out; at most $ringed left in the rings)"
  else
    fail "round $1: testpmd received $rx, the switch delivered $out"
  fi
}

PREVIOUS_IN=0
round 1
round 2
for p in a b; do expect_eq "$p dropBadDescriptor" "$(counter $p dropBadDescriptor)" 0; done
if grep -q "broken" "$WORK/daemon.log"; then fail "a ring went broken: $(grep -m1 broken "$WORK/daemon.log")"; else pass "no ring broken"; fi
# Every worker thread ran: CPU time (utime + stime, in ticks) above zero for each vale-vale0 thread.
ran=0
for t in /proc/"$DAEMON_PID"/task/*; do
  case "$(cat "$t/comm")" in
    vale-vale0*) ticks=$(awk '{print $14 + $15}' "$t/stat"); [ "$ticks" -gt 0 ] && ran=$((ran + 1));;
  esac
done
expect_eq "worker threads that ran" "$ran" "$WORKERS"
cmd "quit"
finish
