#!/usr/bin/env bash
# Host-port throughput: a dpdk-testpmd virtio-user front-end to the host stack through
# vhost-netmap's TAP host port, and back, beside the same through DPDK's own TAP PMD, measured
# interleaved in the same run.
#
#   to-host    vhost-netmap: testpmd virtio-user txonly (CPU 1) -> back-end (busy-poll worker,
#              CPU 0) -> TAP (io_uring writes) -> host stack
#              tap-pmd:      testpmd net_tap txonly (CPU 1) -> TAP -> host stack
#              counted by the kernel: the TAP's rx_packets over the window.
#   from-host  a generator (testpmd net_af_packet txonly on the TAP, CPU 1) -> host stack ->
#              TAP -> vhost-netmap (io_uring reads, event-driven worker on CPU 0) -> testpmd
#              virtio-user rxonly (CPU 0)
#              tap-pmd: the same generator -> TAP -> testpmd net_tap rxonly (CPU 0)
#              compared: frames read from the TAP per second (vhost-netmap: its host port's
#              counter; tap-pmd: the receiving testpmd). Also printed: the generator's rate and
#              what reached vhost-netmap's virtio-user receiver.
# With two CPUs, the generator needs one; in from-host the back-end and its virtio-user
# receiver share the other (the tap-pmd receiver has it alone): a handicap for vhost-netmap,
# stated here rather than hidden. Its worker sleeps when idle so the two can share.
# usage: bench/host-port-bench.sh [SECONDS=10] [ROUNDS=3] [SIZES="64 1500"]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-10}; ROUNDS=${2:-3}; SIZES=${3:-64 1500}
BIN=$ROOT/.build/release/vhost-netmap
W=$(mktemp -d /tmp/vn-hbench.XXXXXX)
TAG=$(($$ % 10000))
TAPV=vnbv$TAG; TAPP=vnbp$TAG
cleanup() {
  pkill -INT -f "file-prefix=vnh" 2>/dev/null; [ -n "${DP:-}" ] && kill -INT "$DP" 2>/dev/null
  sleep 1; rm -rf /var/run/dpdk/vnh*; [ -n "${KEEP:-}" ] || rm -rf "$W"
}
trap cleanup EXIT
"$ROOT/scripts/install-deps.sh" test >/dev/null || exit 1
(cd "$ROOT" && swift build -c release >/dev/null 2>&1) || { echo "release build failed"; exit 1; }

wait_quiet() { # until the machine is < 10% busy over 2 s (max 60 s)
  for _ in $(seq 30); do
    read -r _ u n s i w q sq st _ < /proc/stat; b1=$((u+n+s+q+sq+st)); a1=$((b1+i+w)); sleep 2
    read -r _ u n s i w q sq st _ < /proc/stat; b2=$((u+n+s+q+sq+st)); a2=$((b2+i+w))
    [ $((100 * (b2 - b1) / (a2 - a1 + 1))) -lt 10 ] && return 0
  done
}

# pmd LABEL CPUS MODE SIZE VDEV: a scripted testpmd: MODE forwarding for SECS after a warm-up;
# prints port 0's RX packets per second (Mpps).
pmd() {
  local label=$1 cpus=$2 mode=$3 size=$4 vdev=$5
  ( sleep 4; echo "set fwd $mode"; echo "set txpkts $size"; echo "start"; sleep 3; echo "clear port stats all"
    sleep "$SECS"; echo "show port stats all"; echo "stop"; sleep 1; echo "quit" ) | \
  stdbuf -oL dpdk-testpmd --file-prefix="vnh$label" --no-pci --no-huge -m 1024 --lcores "$cpus" --log-level=lib.eal:error \
    --vdev "$vdev" -- -i --nb-cores=1 --total-num-mbufs=65536 > "$W/$label.log" 2>&1
  awk -v s="$SECS" '/RX-packets:/{print $2 / s / 1e6; exit}' "$W/$label.log"
}

# tap_rate TAP: the TAP's rx_packets per second (Mpps) over the same window as pmd's.
tap_rate() {
  sleep 7
  local a b
  a=$(cat "/sys/class/net/$1/statistics/rx_packets"); sleep "$SECS"; b=$(cat "/sys/class/net/$1/statistics/rx_packets")
  awk -v d=$((b - a)) -v s="$SECS" 'BEGIN {printf "%.3f\n", d / s / 1e6}'
}

start_daemon() { # [--busy-poll]
  rm -f "$W/fe.sock" "$W/c.sock"
  "$BIN" serve ${1:-} --worker-cpu 0 --control "$W/c.sock" --log-level warning \
    --port "vale0:fe=$W/fe.sock" --host-port "vale0:$TAPV" > "$W/daemon.log" 2>&1 &
  DP=$!
  for _ in $(seq 100); do [ -S "$W/fe.sock" ] && break; sleep 0.05; done
}
stop_daemon() { kill -INT "$DP"; wait "$DP" 2>/dev/null; DP=; }

to_host_vn() { # SIZE
  start_daemon --busy-poll
  tap_rate "$TAPV" > "$W/rate" & local m=$!
  pmd fe '0@1,1@1' txonly "$1" "net_virtio_user0,path=$W/fe.sock,mac=02:00:00:00:00:01" > /dev/null
  wait $m; stop_daemon; cat "$W/rate"
}
to_host_pmd() { # SIZE
  tap_rate "$TAPP" > "$W/rate" & local m=$!
  pmd tp '0@1,1@1' txonly "$1" "net_tap0,iface=$TAPP" > /dev/null
  wait $m; cat "$W/rate"
}
# host_in: the host port's inPackets counter (frames the back-end read from the TAP).
host_in() { "$BIN" stats --control "$W/c.sock" | python3 -c 'import json,sys; print(json.load(sys.stdin)["switches"][0]["hostPorts"][0]["counters"]["inPackets"])'; }
from_host_vn() { # SIZE
  start_daemon
  pmd fe '0@0,1@0' rxonly "$1" "net_virtio_user0,path=$W/fe.sock,mac=02:00:00:00:00:01" > "$W/rate" & local m=$!
  sleep 2
  ( sleep 7; a=$(host_in); sleep "$SECS"; b=$(host_in); awk -v d=$((b - a)) -v s="$SECS" 'BEGIN {printf "%.3f\n", d / s / 1e6}' > "$W/read" ) &
  pmd gen '0@1,1@1' txonly "$1" "net_af_packet0,iface=$TAPV" > /dev/null
  awk -v s="$SECS" '/TX-packets:/{printf "%.3f\n", $2 / s / 1e6; exit}' "$W/gen.log" > "$W/generated"
  wait $m; stop_daemon; mv "$W/rate" "$W/delivered"; cat "$W/read"
}
from_host_pmd() { # SIZE
  pmd tp '0@0,1@0' rxonly "$1" "net_tap0,iface=$TAPP" > "$W/rate" & local m=$!
  sleep 2
  pmd gen '0@1,1@1' txonly "$1" "net_af_packet0,iface=$TAPP" > /dev/null
  wait $m; cat "$W/rate"
}

median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
gbps() { awk -v m="$1" -v s="$2" 'BEGIN {printf "%.2f", m * 1e6 * s * 8 / 1e9}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}'; }

echo "vhost-netmap host-port benchmark: ${SECS}s rounds x $ROUNDS, sizes: $SIZES ($(date -u +%FT%TZ), $(nproc) CPUs)"
for dir in ${DIRS:-to-host from-host}; do
  for size in $SIZES; do
    : > "$W/vn.r"; : > "$W/tp.r"
    for r in $(seq "$ROUNDS"); do
      wait_quiet
      if [ "$dir" = to-host ]; then a=$(to_host_vn "$size"); else a=$(from_host_vn "$size"); fi
      wait_quiet
      if [ "$dir" = to-host ]; then b=$(to_host_pmd "$size"); else b=$(from_host_pmd "$size"); fi
      echo "$a" >> "$W/vn.r"; echo "$b" >> "$W/tp.r"
      extra=""
      [ "$dir" = from-host ] && extra=" (generator $(cat "$W/generated") Mpps; delivered to the virtio-user receiver $(cat "$W/delivered") Mpps)"
      echo "  $dir ${size}B round $r: vhost-netmap $a Mpps | tap-pmd $b Mpps$extra"
    done
    ma=$(median < "$W/vn.r"); mb=$(median < "$W/tp.r")
    echo "$dir ${size}B median: vhost-netmap $ma Mpps ($(gbps "$ma" "$size") Gbit/s) | tap-pmd $mb Mpps ($(gbps "$mb" "$size") Gbit/s) | ratio $(ratio "$ma" "$mb")"
  done
done
