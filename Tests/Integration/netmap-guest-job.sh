#!/bin/sh
# Runs inside the test guest that netmap-kernel.sh boots (Debian's kernel, the real netmap.ko):
# every check of the kernel path against the real module. It prints what it saw on the serial
# console as lines the host asserts on:
#   VN: ok WHAT / VN: FAIL WHAT          checks decided here
#   VN-OUT LABEL: LINE                   a tool's output (pkt-gen summaries, vale-ctl lists)
#   VN-STATS LABEL JSON                  the daemon's counters, for the host's accounting
# Variables (set by the host in front of this file): N frames per run, RATE frames/s,
# NETMAP_PARAMS for insmod, KLOOP_MODES (the daemon's netmap sync modes to run).
N=${N:-20000}; RATE=${RATE:-10000}
VN=/opt/vn; NM=/opt/netmap
export PATH=/bin:/sbin:$VN/bin
ok() { echo "VN: ok $*"; }
bad() { echo "VN: FAIL $*"; }
out() { sed "s/^/VN-OUT $1: /" "$2"; }
check() { what=$1; shift; if "$@"; then ok "$what"; else bad "$what"; fi; }

echo 1 > /proc/sys/net/ipv6/conf/all/disable_ipv6
echo 1 > /proc/sys/net/ipv6/conf/default/disable_ipv6
mkdir -p /tmp /run
mount -t tmpfs tmp /tmp

# The module, as an operator loads it (smaller pools than the 320 MiB default: a 1 GiB guest).
if insmod $NM/netmap.ko $NETMAP_PARAMS; then ok "insmod netmap.ko $NETMAP_PARAMS"; else bad "insmod netmap.ko"; exit 1; fi
# NICs for the host-ring and polling checks: veth pairs (the generic adapter serves any
# interface). busybox's ip names the peer vethN itself.
insmod /lib/modules/veth.ko && ip link add nmv0 type veth && ip link add nmp0 type veth \
  && for i in $(ls /sys/class/net); do ip link set "$i" up; done || bad "veth set-up"
# tun for netmap's ctrl-api-test (it makes a tap).
insmod /lib/modules/tun.ko || bad "insmod tun"
ls -l /dev/netmap > /tmp/dev.out; out dev /tmp/dev.out

# 1. kernel-check
vhost-netmap kernel-check > /tmp/kc.out 2>&1; rc=$?
out kernel-check /tmp/kc.out
check "kernel-check exits 0 with the module loaded" [ $rc -eq 0 ]

# 2. vhost-netmap vale against netmap's vale-ctl, each seeing what the other did.
vale() { vhost-netmap vale --switch kernel "$@"; }
vale -n vnif0 > /tmp/v.out 2>&1; check "vale -n creates a persistent interface" ip link show vnif0
$NM/vale-ctl -n vnif1 > /dev/null 2>&1; check "vale-ctl -n creates another" ip link show vnif1
vale -a vale1:vnif0 >> /tmp/v.out 2>&1
$NM/vale-ctl > /tmp/l1.out 2>&1; out vale-ctl-l /tmp/l1.out
check "vale-ctl -l lists the port vale -a attached" grep -q "vale1:vnif0" /tmp/l1.out
$NM/vale-ctl -a vale1:vnif1 > /dev/null 2>&1
vale -l > /tmp/l2.out 2>&1; out vale-l /tmp/l2.out
check "vale -l lists the port vale-ctl -a attached" grep -q "^vale1:vnif1 bridge" /tmp/l2.out
check "vale -l lists both" [ "$(grep -c '^vale1:vnif' /tmp/l2.out)" -eq 2 ]
# Polling threads serve a NIC attached to a switch (the module refuses other ports).
vale -a vale1:nmp0 >> /tmp/v.out 2>&1
vale -p vale1:nmp0 >> /tmp/v.out 2>&1; prc=$?
vale -P vale1:nmp0 >> /tmp/v.out 2>&1; Prc=$?
check "vale -p / -P (polling on, off) on an attached NIC" [ $prc -eq 0 ] && [ $Prc -eq 0 ]
vale -p vale1:vnif0 >> /tmp/v.out 2>&1; prc=$?
check "vale -p on a virtual port is refused (EOPNOTSUPP from the module)" [ $prc -ne 0 ]
$NM/vale-ctl -d vale1:nmp0 > /dev/null 2>&1
vale -d vale1:vnif1 >> /tmp/v.out 2>&1
$NM/vale-ctl -d vale1:vnif0 > /dev/null 2>&1
$NM/vale-ctl > /tmp/l3.out 2>&1
check "both detached (vale -d, vale-ctl -d)" sh -c "! grep -q vale1: /tmp/l3.out"
vale -r vnif1 >> /tmp/v.out 2>&1; $NM/vale-ctl -r vnif0 > /dev/null 2>&1
check "both interfaces removed (vale -r, vale-ctl -r)" sh -c "! ip link show vnif0 2>/dev/null && ! ip link show vnif1 2>/dev/null"
out vale /tmp/v.out

# 3. The daemon in kernel mode, a vhost-user front-end (our pkt-gen) on each port, netmap's own
#    pkt-gen (or AF_PACKET for host rings) on the other side; both directions.
daemon_start() { # MODE (ioctl or kloop; "default": no --netmap-sync option)
  rm -f /tmp/c.sock /tmp/*.sock
  syncopt=""; [ "$1" = default ] || syncopt="--netmap-sync $1"
  vhost-netmap serve --switch kernel --control /tmp/c.sock $syncopt \
    --port "vale0:vu=/tmp/vale.sock" --port "netmap:pp{1=/tmp/pipe.sock" --port "netmap:nmv0^=/tmp/host.sock" \
    > /tmp/daemon-$1.log 2>&1 &
  DAEMON=$!
  i=0; while [ ! -S /tmp/c.sock ] && [ $i -lt 200 ]; do sleep 0.1; i=$((i+1)); done
  [ -S /tmp/c.sock ]
}
stats() { echo "VN-STATS $1 $(vhost-netmap stats --control /tmp/c.sock | tr -d '\n')"; }
# to_netmap LABEL SOCKET PEER-RX-COMMAND...: our pkt-gen sends N through the daemon.
to_netmap() {
  label=$1; sock=$2; shift 2
  timeout -s INT 60 "$@" > /tmp/$label.rx 2>&1 & rx=$!
  sleep 1
  pkt-gen -i vhost-user:$sock -f tx -n $N -R $RATE -w 1 > /tmp/$label.tx 2>/tmp/$label.txerr
  sleep 2; kill -INT $rx 2>/dev/null; wait $rx
  out $label-tx /tmp/$label.tx; out $label-rx /tmp/$label.rx
  stats $label
}
# from_netmap LABEL SOCKET PEER-TX-COMMAND...: the peer sends N, our pkt-gen receives.
from_netmap() {
  label=$1; sock=$2; shift 2
  timeout -s INT 60 pkt-gen -i vhost-user:$sock -f rx -n $N -w 0 > /tmp/$label.rx 2>/tmp/$label.rxerr & rx=$!
  sleep 1
  timeout -s INT 60 "$@" > /tmp/$label.tx 2>&1
  sleep 2; kill -INT $rx 2>/dev/null; wait $rx
  out $label-tx /tmp/$label.tx; out $label-rx /tmp/$label.rx
  stats $label
}
kloops() { grep -l '^kloop$' /proc/$DAEMON/task/*/comm 2>/dev/null | wc -l; }
control() { vhost-netmap vale --switch embedded --control /tmp/c.sock "$@"; }
for mode in ${KLOOP_MODES:-default}; do
  if daemon_start $mode; then ok "daemon ($mode) started in kernel mode"; else bad "daemon ($mode) did not start"; out daemon /tmp/daemon-$mode.log; continue; fi
  [ $mode = kloop ] && check "kloop: one kernel loop per netmap port ($(kloops))" [ "$(kloops)" -eq 3 ]
  to_netmap $mode-vale-out /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f rx -n $N
  from_netmap $mode-vale-in /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f tx -n $N -R $RATE
  to_netmap $mode-pipe-out /tmp/pipe.sock $NM/pkt-gen -i "netmap:pp}1" -f rx -n $N
  from_netmap $mode-pipe-in /tmp/pipe.sock $NM/pkt-gen -i "netmap:pp}1" -f tx -n $N -R $RATE
  # Host rings: frames the daemon puts in nmv0's host TX ring enter the stack as received on
  # nmv0 (AF_PACKET sees them); what the stack sends on nmv0 comes out of its host RX ring,
  # but only while nmv0's NIC rings are in netmap mode too (netmap hands the stack's frames to
  # the driver otherwise), as they are when an application owns them: netmap's pkt-gen here.
  to_netmap $mode-host-out /tmp/host.sock pkt-gen -i nmv0 -f rx -n $N -w 0
  $NM/pkt-gen -i netmap:nmv0 -f rx > /tmp/nic-holder.out 2>&1 & holder=$!
  sleep 1
  from_netmap $mode-host-in /tmp/host.sock pkt-gen -i nmv0 -f tx -n $N -R $RATE -w 0
  kill -INT $holder; wait $holder
  if [ $mode = kloop ]; then
    # The kernel loop stopped and started again at run time: detach and re-attach a port.
    control -d vale0:vu > /tmp/ctl.out 2>&1
    check "kloop: detach stops that port's kernel loop ($(kloops) left)" [ "$(kloops)" -eq 2 ]
    control -a vale0:vu=/tmp/vale.sock,sync=kloop >> /tmp/ctl.out 2>&1
    check "kloop: attach starts it again ($(kloops))" [ "$(kloops)" -eq 3 ]
    out control /tmp/ctl.out
    to_netmap kloop_reattach-vale-out /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f rx -n $N
    from_netmap kloop_reattach-vale-in /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f tx -n $N -R $RATE
  fi
  kill -TERM $DAEMON; wait $DAEMON
  out daemon-$mode /tmp/daemon-$mode.log
  if [ $mode = kloop ]; then
    check "kloop: the daemon's exit leaves no kernel loop behind" [ "$(kloops)" -eq 0 ]
    # A restarted daemon binds the same ports and starts their loops again.
    daemon_start kloop || bad "daemon (kloop) did not restart"
    to_netmap kloop_restart-vale-out /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f rx -n $N
    from_netmap kloop_restart-vale-in /tmp/vale.sock $NM/pkt-gen -i vale0:peer -f tx -n $N -R $RATE
    kill -TERM $DAEMON; wait $DAEMON
    out daemon-kloop-restart /tmp/daemon-kloop.log
  fi
done

# 4. The Swift suite that needs /dev/netmap.
$VN/tests/vhost-netmapPackageTests.xctest --testing-library swift-testing --filter NetmapKernelDevice > /tmp/xc.out 2>&1; rc=$?
out swift-test /tmp/xc.out
check "NetmapKernelDevice suite passes (rc $rc)" sh -c "[ $rc -eq 0 ] && grep -q 'Test run with 3 tests' /tmp/xc.out && ! grep -q skipped /tmp/xc.out"

# 5. Our pkt-gen's netmap interface against netmap's pkt-gen, both ways.
timeout -s INT 60 $NM/pkt-gen -i vale2:b -f rx -n $N > /tmp/pg1.rx 2>&1 & rx=$!
sleep 1; pkt-gen -i vale2:a -f tx -n $N -R $RATE -w 1 > /tmp/pg1.tx 2>&1; sleep 2; kill -INT $rx 2>/dev/null; wait $rx
out pg-out-tx /tmp/pg1.tx; out pg-out-rx /tmp/pg1.rx
timeout -s INT 60 pkt-gen -i vale2:a -f rx -n $N -w 0 > /tmp/pg2.rx 2>&1 & rx=$!
sleep 1; $NM/pkt-gen -i vale2:b -f tx -n $N -R $RATE > /tmp/pg2.tx 2>&1; sleep 2; kill -INT $rx 2>/dev/null; wait $rx
out pg-in-tx /tmp/pg2.tx; out pg-in-rx /tmp/pg2.rx

# 6. netmap's own control API test, for the record.
PATH=/opt/iproute2:$PATH timeout 300 $NM/ctrl-api-test > /tmp/cat.out 2>&1
out ctrl-api-test /tmp/cat.out
exit 0
