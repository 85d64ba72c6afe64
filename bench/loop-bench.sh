#!/usr/bin/env bash
# Throughput of vhost-netmap against DPDK's own vhost PMD, measured in the same run.
#
# Topology (both candidates): one dpdk-testpmd with two virtio-user ports in io forwarding,
# seeded with "start tx_first", loops frames through the back-end:
#   port0 -> back-end port A -> [switch] -> back-end port B -> port1 -> io fwd -> port1 -> ... -> port0
# Candidates, interleaved A/B/A/B on the same machine:
#   vhost-netmap  two ports of one embedded switch (busy-poll worker pinned to CPU 0)
#   dpdk-vhost    dpdk-testpmd with two net_vhost ports in io forwarding (forwarding lcore on CPU 0)
#   ovs-dpdk      (with BENCH_OVS=1, where openvswitch-switch-dpdk is installed) two dpdkvhostuser ports
# The front-end's forwarding lcore is on CPU 1. Prints per-round Mpps (sum of both ports' RX),
# Gbit/s, the medians and the ratio vhost-netmap / dpdk-vhost for each frame size.
# usage: bench/loop-bench.sh [SECONDS=15] [ROUNDS=3] [SIZES="64 1518"]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-15}; ROUNDS=${2:-3}; SIZES=${3:-64 1518}
BIN=$ROOT/.build/release/vhost-netmap
W=$(mktemp -d /tmp/vn-bench.XXXXXX)
trap 'pkill -INT -f "file-prefix=vnb" 2>/dev/null; [ -n "${DP:-}" ] && kill -INT $DP 2>/dev/null; sleep 1; rm -rf /var/run/dpdk/vnb* "$W"' EXIT
"$ROOT/scripts/install-deps.sh" test >/dev/null || exit 1
(cd "$ROOT" && swift build -c release >/dev/null 2>&1) || { echo "release build failed"; exit 1; }

wait_quiet() { # until the 2-vCPU machine is < 10% busy over 2 s (max 60 s)
  for _ in $(seq 30); do
    read -r _ u n s i w q sq st _ < /proc/stat; b1=$((u+n+s+q+sq+st)); a1=$((b1+i+w)); sleep 2
    read -r _ u n s i w q sq st _ < /proc/stat; b2=$((u+n+s+q+sq+st)); a2=$((b2+i+w))
    [ $((100 * (b2 - b1) / (a2 - a1 + 1))) -lt 10 ] && return 0
  done
  echo "  (machine still busy; measuring anyway)"
}

# frontend SOCK0 SOCK1 SIZE LABEL: runs the looping front-end; prints aggregate RX Mpps.
frontend() {
  local log=$W/$4.log
  ( sleep 4; echo "start tx_first 32"; sleep 3; echo "clear port stats all"; sleep "$SECS"
    echo "show port stats all"; echo "stop"; sleep 1; echo "quit" ) | \
  stdbuf -oL dpdk-testpmd --file-prefix=vnbfe --no-pci --no-huge -m 1024 --lcores '0@1,1@1' --log-level=lib.eal:error \
    --vdev "net_virtio_user0,path=$1,queues=1,queue_size=1024,mac=02:00:00:00:00:01" \
    --vdev "net_virtio_user1,path=$2,queues=1,queue_size=1024,mac=02:00:00:00:00:02" -- \
    -i --forward-mode=io --nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=65536 --txpkts="$3" > "$log" 2>&1
  awk -v s="$SECS" '/NIC statistics for port/{p=1} p && /RX-packets:/{t+=$2; p=0} END {printf "%.3f\n", t/s/1e6}' "$log"
}

run_vhost_netmap() { # SIZE
  rm -f "$W"/a.sock "$W"/b.sock
  "$BIN" serve --busy-poll --worker-cpu 0 --control "" --log-level warning \
    --port "vale0:a=$W/a.sock" --port "vale0:b=$W/b.sock" > "$W/daemon.log" 2>&1 &
  DP=$!
  for _ in $(seq 100); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
  frontend "$W/a.sock" "$W/b.sock" "$1" "vn-$1"
  kill -INT $DP; wait $DP 2>/dev/null; DP=
}

run_dpdk_vhost() { # SIZE
  rm -f "$W"/v0.sock "$W"/v1.sock
  # Non-interactive testpmd quits when stdin reaches EOF: give it one that stays open.
  sleep $((SECS * 4 + 60)) 2>/dev/null | stdbuf -oL dpdk-testpmd --file-prefix=vnbvh --no-pci --no-huge -m 1024 --lcores '0@0,1@0' --log-level=lib.eal:error \
    --vdev "net_vhost0,iface=$W/v0.sock,queues=1" --vdev "net_vhost1,iface=$W/v1.sock,queues=1" -- \
    --forward-mode=io --nb-cores=1 --txd=1024 --rxd=1024 --total-num-mbufs=65536 --stats-period 0 > "$W/vhost-$1.log" 2>&1 &
  local vp=$!
  for _ in $(seq 100); do [ -S "$W/v1.sock" ] && break; sleep 0.05; done
  frontend "$W/v0.sock" "$W/v1.sock" "$1" "dv-$1"
  pkill -INT -f "file-prefix=vnbvh"; wait $vp 2>/dev/null
  pkill -f "^sleep $((SECS * 4 + 60))$" 2>/dev/null
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
gbps() { awk -v m="$1" -v s="$2" 'BEGIN {printf "%.2f", m * 1e6 * (s + 24) * 8 / 1e9}'; } # wire bits incl. preamble+IFG+FCS... approx

echo "vhost-netmap loop benchmark: ${SECS}s rounds x $ROUNDS, sizes: $SIZES ($(date -u +%FT%TZ), $(nproc) CPUs)"
for size in $SIZES; do
  : > "$W/vn-$size.r"; : > "$W/dv-$size.r"
  for r in $(seq "$ROUNDS"); do
    wait_quiet
    a=$(run_vhost_netmap "$size"); echo "$a" >> "$W/vn-$size.r"
    wait_quiet
    b=$(run_dpdk_vhost "$size"); echo "$b" >> "$W/dv-$size.r"
    echo "  ${size}B round $r: vhost-netmap $a Mpps | dpdk-vhost $b Mpps"
  done
  ma=$(median < "$W/vn-$size.r"); mb=$(median < "$W/dv-$size.r")
  ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
  echo "${size}B median: vhost-netmap $ma Mpps ($(gbps "$ma" "$size") Gbit/s) | dpdk-vhost $mb Mpps ($(gbps "$mb" "$size") Gbit/s) | ratio $ratio"
done
