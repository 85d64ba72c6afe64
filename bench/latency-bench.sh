#!/usr/bin/env bash
# Round-trip latency through vhost-netmap and through DPDK's vhost PMD, in the same run:
# pkt-gen ping on one port, pkt-gen pong on the other (both vhost-user front-ends of our own
# pkt-gen, on CPU 1), one frame in flight at a time.
#   vhost-netmap  two ports of one embedded switch, busy-poll worker pinned to CPU 0
#   dpdk-vhost    dpdk-testpmd with two net_vhost ports in io forwarding (lcore on CPU 0)
# Rounds interleaved; prints each round's median and 99th percentile RTT, then the medians of
# those over the rounds and the ratio (below 1: vhost-netmap answers faster).
# usage: bench/latency-bench.sh [PINGS=20000] [ROUNDS=5] [SIZE=64]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PINGS=${1:-20000}; ROUNDS=${2:-5}; SIZE=${3:-64}
BIN=$ROOT/.build/release/vhost-netmap
PG=$ROOT/.build/release/pkt-gen
W=$(mktemp -d /tmp/vn-lat.XXXXXX)
cleanup() { pkill -INT -f "file-prefix=vnlat" 2>/dev/null; [ -n "${DP:-}" ] && kill -INT $DP 2>/dev/null; sleep 1; rm -rf /var/run/dpdk/vnlat* "$W"; }
trap cleanup EXIT
"$ROOT/scripts/install-deps.sh" test >/dev/null || exit 1
(cd "$ROOT" && swift build -c release >/dev/null 2>&1) || { echo "release build failed"; exit 1; }

# pingpong SOCK-A SOCK-B LABEL: prints "median p99" in microseconds.
pingpong() {
  taskset -c 1 "$PG" -i "vhost-user:$2" -f pong -W -w 0 > "$W/$3-pong.out" 2>&1 & local pong=$!
  sleep 1
  taskset -c 1 timeout 300 "$PG" -i "vhost-user:$1" -f ping -n "$PINGS" -l "$SIZE" -w 1 -D 02:00:00:00:00:98 > "$W/$3-ping.out" 2> "$W/$3-ping.err"
  kill -INT $pong 2>/dev/null; wait $pong 2>/dev/null
  sed -n 's/^RTT over .* median \([0-9]*\) p99 \([0-9]*\) .*/\1 \2/p' "$W/$3-ping.out" | awk '{printf "%.1f %.1f\n", $1 / 1000, $2 / 1000}'
}
run_vhost_netmap() { # ROUND
  rm -f "$W"/a.sock "$W"/b.sock
  "$BIN" serve --busy-poll --worker-cpu 0 --control "" --log-level warning --port "vale0:a=$W/a.sock" --port "vale0:b=$W/b.sock" > "$W/daemon.log" 2>&1 &
  DP=$!
  for _ in $(seq 100); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
  pingpong "$W/a.sock" "$W/b.sock" "vn-$1"
  kill -INT $DP; wait $DP 2>/dev/null; DP=
}
run_dpdk_vhost() { # ROUND
  rm -f "$W"/v0.sock "$W"/v1.sock
  ( sleep 600 2>/dev/null | stdbuf -oL dpdk-testpmd --file-prefix=vnlat --no-pci --no-huge -m 1024 --lcores '0@0,1@0' --log-level=lib.eal:error \
    --vdev "net_vhost0,iface=$W/v0.sock,queues=1" --vdev "net_vhost1,iface=$W/v1.sock,queues=1" -- \
    --forward-mode=io --nb-cores=1 --total-num-mbufs=65536 --stats-period 0 > "$W/vhost-$1.log" 2>&1 ) &
  local vp=$!
  for _ in $(seq 100); do [ -S "$W/v1.sock" ] && break; sleep 0.05; done
  pingpong "$W/v0.sock" "$W/v1.sock" "dv-$1"
  pkill -INT -f "file-prefix=vnlat"; pkill -f "^sleep 600$"; wait $vp 2>/dev/null
}
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.1f\n", (a[NR/2]+a[NR/2+1])/2}'; }

echo "vhost-netmap latency benchmark: $PINGS pings of $SIZE bytes x $ROUNDS rounds ($(date -u +%FT%TZ), $(nproc) CPUs)"
: > "$W/vn.r"; : > "$W/dv.r"
for r in $(seq "$ROUNDS"); do
  a=$(run_vhost_netmap "$r"); echo "$a" >> "$W/vn.r"
  b=$(run_dpdk_vhost "$r"); echo "$b" >> "$W/dv.r"
  echo "  round $r: vhost-netmap median/p99 ${a:-? ?} us | dpdk-vhost ${b:-? ?} us"
done
m1=$(cut -d' ' -f1 "$W/vn.r" | median); p1=$(cut -d' ' -f2 "$W/vn.r" | median)
m2=$(cut -d' ' -f1 "$W/dv.r" | median); p2=$(cut -d' ' -f2 "$W/dv.r" | median)
echo "RTT medians over rounds: vhost-netmap median $m1 us, p99 $p1 us | dpdk-vhost median $m2 us, p99 $p2 us | ratio vhost-netmap/dpdk-vhost median $(awk -v a="$m1" -v b="$m2" 'BEGIN{printf "%.2f", a/b}'), p99 $(awk -v a="$p1" -v b="$p2" 'BEGIN{printf "%.2f", a/b}')"
