#!/usr/bin/env bash
# Throughput of vhost-netmap against DPDK's own vhost PMD, measured in the same run.
#
# Topology (both candidates): one dpdk-testpmd with two virtio-user ports in io forwarding,
# seeded with "start tx_first", loops frames through the back-end:
#   port0 -> back-end port A -> [switch] -> back-end port B -> port1 -> io fwd -> port1 -> ... -> port0
# Candidates, interleaved A/B/A/B on the same machine:
#   vhost-netmap  two ports of one embedded switch (busy-poll worker pinned to CPU 0), split rings
#   packed        the same with packed rings (virtio-user packed_vq=1; BENCH_PACKED=0 skips it), and
#                 dpdk-vhost under the same packed front-end (the front-end's packed path is
#                 part of what both measure)
#   dpdk-vhost    dpdk-testpmd with two net_vhost ports in io forwarding (forwarding lcore on CPU 0)
#   ovs-dpdk      OVS-DPDK (openvswitch-switch-dpdk, installed here if missing; BENCH_OVS=0 skips it):
#                 two dpdkvhostuser ports, flows 1->2 and 2->1, PMD on CPU 0, on 2 MiB hugepages
#                 that this script mounts and gives back at exit
#   baseline      with BENCH_BASELINE=/path/to/an/older/vhost-netmap: that binary, as vhost-netmap
#                 (a change's before and after, interleaved in one run)
# The front-end's forwarding lcore is on CPU 1. Prints per-round Mpps (sum of both ports' RX),
# Gbit/s, the medians with their spread (min-max) and the ratios vhost-netmap / dpdk-vhost (packed
# / dpdk-vhost, and vhost-netmap / baseline) for each frame size.
# BENCH_DEVARGS=",in_order=0" (for instance) is added to every front-end's virtio-user devargs.
# BENCH_LATENCY=1: then the round-trip latency through vhost-netmap and DPDK's vhost PMD
# (bench/latency-bench.sh: pkt-gen ping/pong, median and 99th percentile), ROUNDS rounds at 64 B.
# BENCH_WORKERS=N (scaling, for a machine with 2N spare CPUs): every port has N queue pairs and
# every forwarder N cores. vhost-netmap runs --workers N pinned to CPUs 0..N-1, DPDK's vhost PMD
# and OVS-DPDK forward on CPUs 0..N-1 too, the front-end on CPUs N..2N-1 with N queues per port.
# On a 2-CPU machine N=2 only checks that the script works (the forwarders share the CPUs).
# BENCH_PROFILE=SIZE: perf samples the daemon (call graphs) during its first split and packed
# rounds at SIZE and prints where its cycles go (self time per function, demangled) at the end.
# usage: bench/loop-bench.sh [SECONDS=15] [ROUNDS=3] [SIZES="64 1518"]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
SECS=${1:-15}; ROUNDS=${2:-3}; SIZES=${3:-64 1518}
BIN=$ROOT/.build/release/vhost-netmap
W=$(mktemp -d /tmp/vn-bench.XXXXXX)
OVS=${BENCH_OVS:-1}
PACKED=${BENCH_PACKED:-1}
WORKERS=${BENCH_WORKERS:-1}
NCPU=$(nproc)
# lcores FIRST-CPU: testpmd's main lcore and WORKERS forwarding lcores on CPUs FIRST.., the main
# one sharing the first forwarding CPU ("0@1,1@1" for one worker from CPU 1). CPU numbers wrap
# around on a machine with fewer CPUs.
lcores() {
  local l="0@$(($1 % NCPU))" k
  for k in $(seq 0 $((WORKERS - 1))); do l="$l,$((k + 1))@$((($1 + k) % NCPU))"; done
  echo "$l"
}
FRONT_CPU=$WORKERS
WORKER_CPUS=""; for k in $(seq 0 $((WORKERS - 1))); do WORKER_CPUS="$WORKER_CPUS --worker-cpu $((k % NCPU))"; done
CPU_MASK=$(printf '0x%x' $(((1 << WORKERS) - 1)))
[ $((2 * WORKERS)) -le "$NCPU" ] || echo "(BENCH_WORKERS=$WORKERS needs $((2 * WORKERS)) CPUs, this machine has $NCPU: the figures only show that it runs)"
HUGE_BEFORE=$(cat /proc/sys/vm/nr_hugepages)
cleanup() {
  pkill -INT -f "file-prefix=vnb" 2>/dev/null; [ -n "${DP:-}" ] && kill -INT $DP 2>/dev/null
  stop_ovs; sleep 1; rm -rf /var/run/dpdk/vnb* "$W"
  [ -n "${MOUNTED_HUGE:-}" ] && umount /dev/hugepages 2>/dev/null
  echo "$HUGE_BEFORE" > /proc/sys/vm/nr_hugepages
}
trap cleanup EXIT
"$ROOT/scripts/install-deps.sh" test >/dev/null || exit 1
if [ "$OVS" = 1 ] && [ ! -x /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq openvswitch-switch-dpdk >/dev/null 2>&1 || { echo "(OVS-DPDK not installable: skipped)"; OVS=0; }
fi
(cd "$ROOT" && swift build -c release >/dev/null 2>&1) || { echo "release build failed"; exit 1; }

wait_quiet() { # until the 2-vCPU machine is < 10% busy over 2 s (max 60 s)
  for _ in $(seq 30); do
    read -r _ u n s i w q sq st _ < /proc/stat; b1=$((u+n+s+q+sq+st)); a1=$((b1+i+w)); sleep 2
    read -r _ u n s i w q sq st _ < /proc/stat; b2=$((u+n+s+q+sq+st)); a2=$((b2+i+w))
    [ $((100 * (b2 - b1) / (a2 - a1 + 1))) -lt 10 ] && return 0
  done
  echo "  (machine still busy; measuring anyway)"
}

# frontend SOCK0 SOCK1 SIZE LABEL [DEVARGS]: runs the looping front-end; prints aggregate RX Mpps.
frontend() {
  local log=$W/$4.log extra=${BENCH_DEVARGS:-}${5:-}
  ( sleep 4; echo "start tx_first 32"; sleep 3; echo "clear port stats all"; sleep "$SECS"
    echo "show port stats all"; echo "stop"; sleep 1; echo "quit" ) | \
  stdbuf -oL dpdk-testpmd --file-prefix=vnbfe --no-pci --no-huge -m 1024 --lcores "$(lcores "$FRONT_CPU")" --log-level=lib.eal:error \
    --vdev "net_virtio_user0,path=$1,queues=$WORKERS,queue_size=1024,mac=02:00:00:00:00:01$extra" \
    --vdev "net_virtio_user1,path=$2,queues=$WORKERS,queue_size=1024,mac=02:00:00:00:00:02$extra" -- \
    -i --forward-mode=io --nb-cores="$WORKERS" --rxq="$WORKERS" --txq="$WORKERS" --txd=1024 --rxd=1024 --total-num-mbufs=65536 --txpkts="$3" > "$log" 2>&1
  awk -v s="$SECS" '/NIC statistics for port/{p=1} p && /RX-packets:/{t+=$2; p=0} END {printf "%.3f\n", t/s/1e6}' "$log"
}

BASELINE=${BENCH_BASELINE:-}
[ -z "$BASELINE" ] || [ -x "$BASELINE" ] || { echo "BENCH_BASELINE=$BASELINE is not an executable"; exit 1; }
run_vhost_netmap() { # SIZE [BINARY] [FRONT-END DEVARGS]
  rm -f "$W"/a.sock "$W"/b.sock
  local scaling=""; [ "$WORKERS" -gt 1 ] && scaling="--workers $WORKERS"
  # shellcheck disable=SC2086 # the option lists are word lists
  "${2:-$BIN}" serve --busy-poll $WORKER_CPUS $scaling --control "" --log-level warning \
    --port "vale0:a=$W/a.sock,queues=$WORKERS" --port "vale0:b=$W/b.sock,queues=$WORKERS" > "$W/daemon.log" 2>&1 &
  DP=$!
  for _ in $(seq 100); do [ -S "$W/b.sock" ] && break; sleep 0.05; done
  local prof="" tag=split; [ -n "${3:-}" ] && tag=packed
  if [ "${BENCH_PROFILE:-}" = "$1" ] && [ -z "${2:-}" ] && [ ! -f "$W/perf-$tag.data" ]; then
    # From the measured window's start (the front-end clears its counters 7 s in) to its end.
    ( sleep 8; perf record -F 1999 -g -p "$DP" -o "$W/perf-$tag.data" -- sleep $((SECS > 4 ? SECS - 2 : 2)) ) > /dev/null 2>&1 &
    prof=$!
  fi
  frontend "$W/a.sock" "$W/b.sock" "$1" "vn-$1${2:+-baseline}${3:+-packed}" "${3:-}"
  [ -n "$prof" ] && wait "$prof"
  kill -INT $DP; wait $DP 2>/dev/null; DP=
}

run_dpdk_vhost() { # SIZE [FRONT-END DEVARGS]
  rm -f "$W"/v0.sock "$W"/v1.sock
  # Non-interactive testpmd quits when stdin reaches EOF: give it one that stays open.
  ( sleep $((SECS * 4 + 60)) 2>/dev/null | stdbuf -oL dpdk-testpmd --file-prefix=vnbvh --no-pci --no-huge -m 1024 --lcores "$(lcores 0)" --log-level=lib.eal:error \
    --vdev "net_vhost0,iface=$W/v0.sock,queues=$WORKERS" --vdev "net_vhost1,iface=$W/v1.sock,queues=$WORKERS" -- \
    --forward-mode=io --nb-cores="$WORKERS" --rxq="$WORKERS" --txq="$WORKERS" --txd=1024 --rxd=1024 --total-num-mbufs=65536 --stats-period 0 > "$W/vhost-$1.log" 2>&1 ) &
  local vp=$!
  for _ in $(seq 100); do [ -S "$W/v1.sock" ] && break; sleep 0.05; done
  frontend "$W/v0.sock" "$W/v1.sock" "$1" "dv-$1${2:+-packed}" "${2:-}"
  pkill -INT -f "file-prefix=vnbvh"; pkill -f "^sleep $((SECS * 4 + 60))$"; wait $vp 2>/dev/null
}

OVSD=$W/ovs
stop_ovs() {
  [ -f "$OVSD/ovs-vswitchd.pid" ] && kill "$(cat "$OVSD/ovs-vswitchd.pid")" 2>/dev/null
  [ -f "$OVSD/ovsdb-server.pid" ] && kill "$(cat "$OVSD/ovsdb-server.pid")" 2>/dev/null
  sleep 0.5; rm -rf "$OVSD"
}
start_ovs() { # a private OVS-DPDK under $OVSD (no systemd, no kernel datapath)
  mkdir -p "$OVSD"
  export OVS_RUNDIR=$OVSD OVS_LOGDIR=$OVSD OVS_DBDIR=$OVSD
  local vs="ovs-vsctl --timeout=20 --db=unix:$OVSD/db.sock"
  ovsdb-tool create "$OVSD/conf.db" /usr/share/openvswitch/vswitch.ovsschema
  ovsdb-server "$OVSD/conf.db" --remote=punix:"$OVSD/db.sock" --pidfile="$OVSD/ovsdb-server.pid" --unixctl="$OVSD/ovsdb-server.ctl" --log-file="$OVSD/ovsdb-server.log" --detach || return 1
  $vs --no-wait init
  $vs --no-wait set Open_vSwitch . other_config:dpdk-init=true other_config:dpdk-socket-mem=256 \
     other_config:dpdk-lcore-mask=0x1 other_config:pmd-cpu-mask=$CPU_MASK other_config:dpdk-extra="--no-pci --file-prefix=vnbovs"
  /usr/lib/openvswitch-switch-dpdk/ovs-vswitchd-dpdk unix:"$OVSD/db.sock" --pidfile="$OVSD/ovs-vswitchd.pid" --unixctl="$OVSD/ovs-vswitchd.ctl" --log-file="$OVSD/ovs-vswitchd.log" --detach || return 1
  $vs add-br br0 -- set bridge br0 datapath_type=netdev
  $vs add-port br0 vhu0 -- set Interface vhu0 type=dpdkvhostuser ofport_request=1
  $vs add-port br0 vhu1 -- set Interface vhu1 type=dpdkvhostuser ofport_request=2
  ovs-ofctl del-flows br0 && ovs-ofctl add-flow br0 in_port=1,actions=output:2 && ovs-ofctl add-flow br0 in_port=2,actions=output:1
}
run_ovs() { # SIZE
  if ! start_ovs > "$W/ovs-start.log" 2>&1; then stop_ovs; echo 0; return; fi
  frontend "$OVSD/vhu0" "$OVSD/vhu1" "$1" "ovs-$1"
  stop_ovs
}
if [ "$OVS" = 1 ]; then
  [ "$HUGE_BEFORE" -lt 256 ] && echo 256 > /proc/sys/vm/nr_hugepages
  mkdir -p /dev/hugepages
  mountpoint -q /dev/hugepages || { mount -t hugetlbfs nodev /dev/hugepages && MOUNTED_HUGE=1; }
fi

spread() { sort -n | awk 'NR == 1 {lo = $1} {hi = $1} END {printf "%s-%s", lo, hi}'; }
median() { sort -n | awk '{a[NR]=$1} END {if (NR % 2) print a[(NR+1)/2]; else printf "%.3f\n", (a[NR/2]+a[NR/2+1])/2}'; }
gbps() { awk -v m="$1" -v s="$2" 'BEGIN {printf "%.2f", m * 1e6 * s * 8 / 1e9}'; } # frame bits (no preamble or gap)

echo "vhost-netmap loop benchmark: ${SECS}s rounds x $ROUNDS, sizes: $SIZES, $WORKERS forwarding core(s) and queue pair(s) per port ($(date -u +%FT%TZ), $(nproc) CPUs)"
for size in $SIZES; do
  : > "$W/vn-$size.r"; : > "$W/dv-$size.r"; : > "$W/ovs-$size.r"; : > "$W/base-$size.r"; : > "$W/pk-$size.r"; : > "$W/dpk-$size.r"
  for r in $(seq "$ROUNDS"); do
    wait_quiet
    a=$(run_vhost_netmap "$size"); echo "$a" >> "$W/vn-$size.r"
    wait_quiet
    b=$(run_dpdk_vhost "$size"); echo "$b" >> "$W/dv-$size.r"
    e=n/a
    f=n/a
    if [ "$PACKED" = 1 ]; then
      wait_quiet; e=$(run_vhost_netmap "$size" "" ",packed_vq=1"); echo "$e" >> "$W/pk-$size.r"
      wait_quiet; f=$(run_dpdk_vhost "$size" ",packed_vq=1"); echo "$f" >> "$W/dpk-$size.r"
    fi
    c=n/a
    if [ "$OVS" = 1 ]; then wait_quiet; c=$(run_ovs "$size"); echo "$c" >> "$W/ovs-$size.r"; fi
    d=n/a
    if [ -n "$BASELINE" ]; then wait_quiet; d=$(run_vhost_netmap "$size" "$BASELINE"); echo "$d" >> "$W/base-$size.r"; fi
    echo "  ${size}B round $r: vhost-netmap $a Mpps | packed $e Mpps | dpdk-vhost $b Mpps | dpdk-vhost packed $f Mpps | ovs-dpdk $c Mpps | baseline $d Mpps"
  done
  ma=$(median < "$W/vn-$size.r"); mb=$(median < "$W/dv-$size.r")
  ratio=$(awk -v a="$ma" -v b="$mb" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
  mc=n/a; [ "$OVS" = 1 ] && mc=$(median < "$W/ovs-$size.r")
  md=n/a; rd=n/a
  if [ -n "$BASELINE" ]; then
    md=$(median < "$W/base-$size.r"); rd=$(awk -v a="$ma" -v b="$md" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
  fi
  me=n/a; re=n/a; se=n/a; mf=n/a; sf=n/a
  if [ "$PACKED" = 1 ]; then
    me=$(median < "$W/pk-$size.r"); se=$(spread < "$W/pk-$size.r"); mf=$(median < "$W/dpk-$size.r"); sf=$(spread < "$W/dpk-$size.r")
    re=$(awk -v a="$me" -v b="$mf" 'BEGIN {if (b > 0) printf "%.2f", a / b; else print "n/a"}')
  fi
  sc=n/a; [ "$OVS" = 1 ] && sc=$(spread < "$W/ovs-$size.r")
  sd=n/a; [ -n "$BASELINE" ] && sd=$(spread < "$W/base-$size.r")
  echo "${size}B median (spread): vhost-netmap $ma Mpps ($(spread < "$W/vn-$size.r"); $(gbps "$ma" "$size") Gbit/s) | packed $me ($se) | dpdk-vhost $mb Mpps ($(spread < "$W/dv-$size.r"); $(gbps "$mb" "$size") Gbit/s) | dpdk-vhost packed $mf ($sf) | ovs-dpdk $mc ($sc)"
  echo "${size}B ratios: vhost-netmap/dpdk-vhost $ratio | packed: vhost-netmap/dpdk-vhost $re | baseline $md Mpps ($sd), vhost-netmap/baseline $rd"
done
if [ -n "${BENCH_PROFILE:-}" ]; then
  for tag in split packed; do
    [ -f "$W/perf-$tag.data" ] || continue
    echo "profile of vhost-netmap ($tag rings, ${BENCH_PROFILE}B): self time per function, above 1%"
    perf report -i "$W/perf-$tag.data" --stdio --no-children --sort symbol -g none --percent-limit 1 2>/dev/null \
      | grep -E "^ +[0-9]" | sed 's/\[[.k]\] //' | swift demangle --simplified | cut -c1-150 | head -30
  done
fi
if [ "${BENCH_LATENCY:-0}" = 1 ]; then
  wait_quiet
  "$ROOT/bench/latency-bench.sh" 20000 "$ROUNDS" 64
fi
