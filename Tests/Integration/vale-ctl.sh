#!/usr/bin/env bash
# vale-ctl on the embedded switch, through the running daemon's control socket: list, attach a
# vhost-user port and a host port at run time, traffic through both (a namespace behind the host
# port pings a dpdk-testpmd icmpecho on the new port), detach; the kernel-only operations and
# the kernel path are refused with clear messages where /dev/netmap is absent.
. "$(dirname "$0")/lib.sh"
echo "vale-ctl"
TAG=$(($$ % 100000))
NS=vnV$TAG; TAP=vnv$TAG
trap 'cleanup; ip netns del "$NS" 2>/dev/null' EXIT
vale() { "$BIN" vale --switch embedded --control "$WORK/control.sock" "$@"; }

start_daemon --port "vale0:vm1=$WORK/vm1.sock" || { finish; exit 1; }
expect_eq "list" "$(vale -l)" "vale0:vm1 bridge 0 port 0"
out=$(vale -a "vale0:vm2=$WORK/vm2.sock"); expect_eq "attach a vhost-user port" "$out" "ok attached vale0:vm2 port 1"
[ -S "$WORK/vm2.sock" ] && pass "its socket listens" || fail "no socket for vm2"
out=$(vale --host "vale0:$TAP"); expect_eq "attach a host port" "$out" "ok attached vale0:$TAP"
ip link show "$TAP" > /dev/null 2>&1 && pass "tap $TAP exists" || fail "no tap $TAP"
expect_eq "list after attach" "$(vale -l | wc -l)" 3
vale -a "vale0:vm2=$WORK/other.sock" > "$WORK/dup.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "exists" "$WORK/dup.log" && pass "a second vale0:vm2 is refused" || fail "duplicate attach: rc $rc"

# Traffic through the ports attached at run time.
ip netns add "$NS" && ip link set "$TAP" netns "$NS" && ip -n "$NS" addr add 10.78.0.1/24 dev "$TAP" && ip -n "$NS" link set "$TAP" up \
  || fail "namespace set-up"
start_testpmd vm2 "$WORK/vm2.sock" 02:00:00:00:00:77 1
wait_for port_ready vale0:vm2 || fail "vm2's rings never got ready"
tp vm2 "set fwd icmpecho"; tp vm2 "start"; sleep 1
ip netns exec "$NS" ping -c 3 -i 0.2 -W 2 10.78.0.9 > "$WORK/ping.log" 2>&1 && pass "host port pings testpmd on the new port" || fail "ping: $(tail -1 "$WORK/ping.log")"
tp_quit vm2

out=$(vale -d vale0:vm2); expect_eq "detach" "$out" "ok detached vale0:vm2"
[ ! -e "$WORK/vm2.sock" ] && pass "its socket is removed" || fail "vm2.sock still there"
expect_eq "list after detach" "$(vale -l | cut -d' ' -f1 | LC_ALL=C sort | tr '\n' ' ')" "vale0:vm1 vale0:$TAP "
vale -d vale0:nothere > "$WORK/d.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "no port vale0:nothere" "$WORK/d.log" && pass "detaching an unknown port fails clearly" || fail "unknown detach: rc $rc"
vale -n vi0 > "$WORK/n.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "need the netmap kernel module" "$WORK/n.log" && pass "-n refused on the embedded switch" || fail "-n: rc $rc"

# The kernel path, where /dev/netmap is absent.
if [ ! -e /dev/netmap ]; then
  "$BIN" kernel-check > "$WORK/kc.log" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "module:      not loaded" "$WORK/kc.log" && grep -q "embedded switch" "$WORK/kc.log" \
    && pass "kernel-check says the module is not loaded (exit 1)" || fail "kernel-check: rc $rc $(cat "$WORK/kc.log")"
  "$BIN" serve --switch kernel --control "" --port "vale0:k=$WORK/k.sock" > "$WORK/k.log" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "does not exist" "$WORK/k.log" && pass "--switch kernel refused without /dev/netmap" || fail "--switch kernel: rc $rc"
  "$BIN" serve --control "" --port "netmap:eth0=$WORK/e.sock" > "$WORK/e.log" 2>&1; rc=$?
  [ $rc -eq 1 ] && grep -q "need the netmap kernel module" "$WORK/e.log" && pass "netmap:eth0 refused by the embedded switch" || fail "netmap:eth0: rc $rc $(cat "$WORK/e.log")"
  grep -q "switch: embedded" "$WORK/daemon.log" && pass "the log says which switch and why" || fail "no switch line in the log"
else
  echo "  (skipped the no-module checks: /dev/netmap exists)"
fi
finish
