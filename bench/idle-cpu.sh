#!/usr/bin/env bash
# CPU used by an idle daemon: N vhost-user ports, each with a connected dpdk-testpmd
# virtio-user front-end whose rings are set up but which sends nothing, plus a host port.
# Prints the daemon's CPU time (utime + stime from /proc) over the measuring window, as a
# percentage of one CPU. The event-driven design should need ~0%: every thread sleeps in
# io_uring_enter until a kick, a message or a timer.
# usage: bench/idle-cpu.sh [PORTS=8] [SECONDS=10]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
N=${1:-8}; SECS=${2:-10}
BIN=$ROOT/.build/release/vhost-netmap
W=$(mktemp -d /tmp/vn-idle.XXXXXX)
cleanup() {
  [ -n "${TP:-}" ] && kill -INT "$TP" 2>/dev/null
  [ -n "${DP:-}" ] && kill -INT "$DP" 2>/dev/null
  sleep 1; [ -n "${KEEP:-}" ] || rm -rf /var/run/dpdk/vnidle "$W"
}
trap cleanup EXIT
"$ROOT/scripts/install-deps.sh" test >/dev/null || exit 1
(cd "$ROOT" && swift build -c release >/dev/null 2>&1) || { echo "release build failed"; exit 1; }

ports=(); vdevs=()
for i in $(seq 0 $((N - 1))); do
  ports+=(--port "vale0:p$i=$W/p$i.sock")
  vdevs+=(--vdev "net_virtio_user$i,path=$W/p$i.sock,mac=02:00:00:00:01:$(printf %02x "$i")")
done
"$BIN" serve --control "$W/control.sock" --log-level warning --host-port "vale0:vni$(($$ % 100000))" "${ports[@]}" > "$W/daemon.log" 2>&1 &
DP=$!
for _ in $(seq 100); do [ -S "$W/control.sock" ] && break; sleep 0.05; done
kill -0 $DP 2>/dev/null || { echo "daemon did not start:"; cat "$W/daemon.log"; exit 1; }
# testpmd is started (rings set up: the back-end sees every queue ready) and left at its
# prompt, where it does not poll.
( sleep 6; echo "start"; sleep 2; echo "stop"; sleep $((SECS + 30)) ) | \
  dpdk-testpmd --file-prefix=vnidle --no-pci --no-huge -m 1024 --lcores '0@1,1@1' --log-level=lib.eal:error "${vdevs[@]}" -- -i \
  --total-num-mbufs=65536 > "$W/testpmd.log" 2>&1 &
TP=$!
ready=0
for _ in $(seq 300); do
  ready=$("$BIN" stats --control "$W/control.sock" 2>/dev/null | grep -c '"readyRX" : 1')
  [ "$ready" -ge "$N" ] && break
  sleep 0.1
done
echo "ports with running rings: $ready of $N"
sleep 4
ticks() { awk '{print $14 + $15}' "/proc/$DP/stat"; }
hz=$(getconf CLK_TCK)
t0=$(ticks); sleep "$SECS"; t1=$(ticks)
echo "daemon CPU over ${SECS} s with $N connected idle front-ends and 1 host port: $((t1 - t0)) ticks = $(python3 -c "print('%.2f' % (100.0 * ($t1 - $t0) / $hz / $SECS))")% of one CPU"
