#!/usr/bin/env bash
# The back-end program conventions: --print-capabilities, clear non-zero exits on bad start-up,
# a clean stop on SIGTERM that removes the sockets; the socket-path convention, sockets never
# taken over, error messages and exit codes, qemu-args and libvirt-xml defaults.
. "$(dirname "$0")/lib.sh"
caps=$("$BIN" --print-capabilities)
expect_eq "capabilities type" "$(echo "$caps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["type"])')" net
expect_eq "descriptor 50-vhost-netmap.json has the same type" \
  "$(python3 -c 'import json,sys; print(json.load(open(sys.argv[1]))["type"])' "$ROOT/qemu-glue/qemu/50-vhost-netmap.json")" \
  "$(echo "$caps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["type"])')"
# qemu-args: reconnect option by QEMU version, vectors 2N+2, mq, queue sizes, socket by convention.
qa=$("$BIN" qemu-args --port vale0:vm1 --queues 3 --queue-size 512 --qemu-version 9.2)
echo "$qa" | grep -q "path=/run/vhost-netmap/vale0/vm1.sock,reconnect-ms=1000 " && pass "qemu-args: reconnect-ms for QEMU 9.2" || fail "qemu-args 9.2: $qa"
echo "$qa" | grep -q "vectors=8,mq=on,rx_queue_size=512,tx_queue_size=512" && pass "qemu-args: vectors=2N+2, mq, queue sizes" || fail "qemu-args device: $qa"
"$BIN" qemu-args --socket /x.sock --qemu-version 7.2 | grep -q "path=/x.sock,reconnect=1 " && pass "qemu-args: reconnect=1 before 9.2" || fail "qemu-args 7.2"
"$BIN" qemu-args --socket /x.sock --qemu-listens --no-msix | grep -q "server=on,wait=off .*vectors=0" && pass "qemu-args: QEMU as server, vectors=0" || fail "qemu-args server"
# Mistakes get messages that say what to do; usage errors exit 64 with the usage, run-time
# failures exit 1 without it.
"$BIN" serve --port "vale0:x=" > "$WORK/bad.log" 2>&1; rc=$?
[ $rc -eq 64 ] && grep -q "missing socket path after '='" "$WORK/bad.log" && pass "empty socket path refused (exit $rc)" || fail "empty path: exit $rc, $(cat "$WORK/bad.log")"
"$BIN" serve --port "vale0:vm-1" > "$WORK/bad5.log" 2>&1; rc=$?
[ $rc -eq 64 ] && grep -q "at character 9: '-' is not allowed in a VALE port name" "$WORK/bad5.log" && pass "vale0:vm-1: the bad character named (exit 64)" || fail "vale0:vm-1: exit $rc, $(cat "$WORK/bad5.log")"
"$BIN" serve --port "sw0:vm1" > "$WORK/bad6.log" 2>&1; rc=$?
[ $rc -eq 64 ] && grep -q "a switch name starts with 'vale'" "$WORK/bad6.log" && pass "sw0:vm1: says a switch name starts with vale" || fail "sw0:vm1: exit $rc, $(cat "$WORK/bad6.log")"
# --config: serve's options from a file (the systemd unit's); a bad line is named.
printf '# ports\nport vale0:k1 # one\nport vale0:k2,queues=2\nbusy-poll\n' > "$WORK/good.conf"
printf 'port vale0:k1\nmetrics 127.0.0.1\n' > "$WORK/bad.conf"
"$BIN" serve --config "$WORK/bad.conf" > "$WORK/bad7.log" 2>&1; rc=$?
[ $rc -eq 64 ] && grep -q "bad.conf: 'metrics 127.0.0.1'\|--metrics 127.0.0.1: expected HOST:PORT" "$WORK/bad7.log" && pass "a bad --config value refused (exit 64)" || fail "bad config: exit $rc, $(cat "$WORK/bad7.log")"
printf 'port vale0:k1\nports vale0:k2\n' > "$WORK/bad2.conf"
"$BIN" serve --config "$WORK/bad2.conf" > "$WORK/bad8.log" 2>&1; rc=$?
[ $rc -eq 64 ] && grep -q "bad2.conf:2: unknown setting 'ports'" "$WORK/bad8.log" && pass "an unknown --config setting named with its line" || fail "bad config 2: exit $rc, $(cat "$WORK/bad8.log")"
timeout 3 "$BIN" serve --config "$WORK/good.conf" --socket-dir "$WORK/cfg" > "$WORK/cfg.log" 2>&1
grep -q "listening on $WORK/cfg/vale0/k2.sock (2 queue pair(s))" "$WORK/cfg.log" && grep -q "busy-polling" "$WORK/cfg.log" \
  && pass "--config: ports, options and flags from the file" || fail "config: $(cat "$WORK/cfg.log")"
"$BIN" stats --control "$WORK/none.sock" > "$WORK/nostats.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "cannot reach the daemon at $WORK/none.sock" "$WORK/nostats.log" && grep -q "is the daemon running" "$WORK/nostats.log" \
  && ! grep -q "Usage" "$WORK/nostats.log" && pass "stats without a daemon: exit 1, the socket and a hint, no usage text" || fail "stats: exit $rc, $(cat "$WORK/nostats.log")"
"$ROOT/.build/release/pkt-gen" --help > "$WORK/pg-help.log" 2>&1; rc=$?
[ $rc -eq 0 ] && grep -q "^usage: pkt-gen -i IFACE" "$WORK/pg-help.log" && pass "pkt-gen --help: usage, exit 0" || fail "pkt-gen --help: exit $rc"
# qemu-args and libvirt-xml: -m, the same memory units, distinct stable MACs from port names,
# MSI-X off under TCG with QEMU 7.2.
m1=$("$BIN" qemu-args --port vale0:vm1 | grep -o "mac=[0-9a-f:]*"); m2=$("$BIN" qemu-args --port vale0:vm2 | grep -o "mac=[0-9a-f:]*")
[ -n "$m1" ] && [ "$m1" != "$m2" ] && [ "$m1" = "$("$BIN" qemu-args --port vale0:vm1 | grep -o "mac=[0-9a-f:]*")" ] \
  && pass "qemu-args: distinct, stable MACs per port ($m1, $m2)" || fail "MACs: '$m1' '$m2'"
[ "${m1#mac=}" = "$("$BIN" libvirt-xml --port vale0:vm1 --interface-only | sed -n "s/.*mac address='\([^']*\)'.*/\1/p")" ] \
  && pass "libvirt-xml derives the same MAC" || fail "libvirt-xml MAC differs from $m1"
"$BIN" qemu-args --port vale0:vm1 --memory 1G | grep -q "^-m 1G -object memory-backend-memfd,id=mem-net0,size=1G," && pass "qemu-args: -m with the backend size" || fail "qemu-args -m"
expect_eq "libvirt-xml --memory 1G" "$("$BIN" libvirt-xml --port vale0:vm1 --domain d --kernel k --initrd i --memory 1G | sed -n "s/.*<memory unit='MiB'>\([0-9]*\)<.*/\1/p")" 1024
expect_eq "libvirt-xml --memory 512 (MiB, as QEMU's -m)" "$("$BIN" libvirt-xml --port vale0:vm1 --domain d --kernel k --initrd i --memory 512 | sed -n "s/.*<memory unit='MiB'>\([0-9]*\)<.*/\1/p")" 512
"$BIN" qemu-args --port vale0:vm1 --qemu-version 7.2 --accel tcg | grep -q "vectors=0" && pass "qemu-args: MSI-X off under TCG with QEMU 7.2" || fail "msix auto tcg"
"$BIN" qemu-args --port vale0:vm1 --qemu-version 7.2 --accel kvm | grep -q "vectors=4" && pass "qemu-args: MSI-X on under KVM" || fail "msix auto kvm"
# One path convention: without a path, ports and the control socket live in VHOST_NETMAP_DIR,
# and stats finds the daemon there without flags.
RD=$WORK/rundir
VHOST_NETMAP_DIR=$RD "$BIN" serve --port vale0:c1 --port vale0:c2,queues=2 > "$WORK/conv.log" 2>&1 &
conv=$!; PIDS+=("$conv")
for _ in $(seq 100); do [ -S "$RD/control.sock" ] && break; sleep 0.05; done
[ -S "$RD/vale0/c1.sock" ] && [ -S "$RD/vale0/c2.sock" ] && pass "sockets at DIR/<switch>/<port>.sock" || fail "no sockets in $RD: $(ls -R "$RD")"
VHOST_NETMAP_DIR=$RD "$BIN" stats | grep -q '"socket" : "'"$RD"'/vale0/c2.sock"' && pass "stats finds the daemon through VHOST_NETMAP_DIR (and / is not escaped)" \
  || fail "stats via VHOST_NETMAP_DIR: $(VHOST_NETMAP_DIR=$RD "$BIN" stats 2>&1 | head -5)"
# The same ports again: refused, naming the owner; the first daemon keeps its sockets.
VHOST_NETMAP_DIR=$RD "$BIN" serve --port vale0:c1 > "$WORK/again.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "$RD/vale0/c1.sock is in use: process $conv (vhost-netmap)" "$WORK/again.log" && pass "a second daemon is refused, naming process $conv" \
  || fail "second daemon: exit $rc, $(cat "$WORK/again.log")"
[ -S "$RD/vale0/c1.sock" ] && VHOST_NETMAP_DIR=$RD "$BIN" stats > /dev/null && pass "the first daemon keeps its sockets and answers" || fail "first daemon lost its sockets"
# A failed start-up removes the sockets it created.
"$BIN" serve --control "$WORK/fc.sock" --port "vale0:f1=$WORK/f1.sock" --port "vale0:f2=/proc/vn/f2.sock" > "$WORK/fail.log" 2>&1; rc=$?
[ $rc -eq 1 ] && [ ! -e "$WORK/f1.sock" ] && [ ! -e "$WORK/fc.sock" ] && pass "a failed start-up leaves no socket behind" || fail "failed start: exit $rc, $(ls "$WORK")"
# The open-file limit: raised to the hard limit; a hard limit below what the ports need refuses the start.
expect_eq "soft open-file limit raised" "$(awk '/Max open files/{print ($4 >= 4096)}' /proc/$conv/limits)" 1
(ulimit -n 150; "$BIN" serve --control "" --port "vale0:q=$WORK/q.sock,queues=16" > "$WORK/nofile.log" 2>&1); rc=$?
[ $rc -eq 1 ] && grep -q "open files but the limit is 150" "$WORK/nofile.log" && pass "too low a hard limit: refused with the number" || fail "nofile: exit $rc, $(cat "$WORK/nofile.log")"
kill -TERM "$conv"; wait "$conv"
[ ! -e "$RD/vale0/c1.sock" ] && [ ! -e "$RD/control.sock" ] && pass "SIGTERM removed the conventional sockets" || fail "left: $(ls -R "$RD")"
"$BIN" serve --port "vale0:toolongname_x_0123=/tmp/x.sock" > "$WORK/bad2.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "longer than 15" "$WORK/bad2.log" && pass "over-long VALE name refused" || fail "long name: exit $rc"
"$BIN" serve --control "" --port "vale0:x=/proc/vn/x.sock" > "$WORK/bad3.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "cannot" "$WORK/bad3.log" && pass "unusable socket path: exit 1 with a message" || fail "socket path: exit $rc, $(cat "$WORK/bad3.log")"
"$BIN" serve --control "" --port "vale0:x=$WORK/x.sock" --port "vale0:x=$WORK/y.sock" > "$WORK/bad4.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "given twice" "$WORK/bad4.log" && pass "duplicate port refused" || fail "duplicate port: exit $rc"
# A tap another process holds, and an interface that is not a tap: the message says which.
BUSY=vnbusy$(($$ % 10000))
ip tuntap add dev "$BUSY" mode tap vnet_hdr
python3 -c '
import fcntl, os, struct, sys, time
fd = os.open("/dev/net/tun", os.O_RDWR)
fcntl.ioctl(fd, 0x400454ca, struct.pack("16sH", sys.argv[1].encode(), 0x0002 | 0x1000 | 0x4000))
print("held", flush=True); time.sleep(30)' "$BUSY" > "$WORK/holder.out" 2>&1 &
HOLDER=$!; PIDS+=("$HOLDER")
for _ in $(seq 50); do grep -q held "$WORK/holder.out" && break; sleep 0.1; done
"$BIN" serve --control "" --host-port "vale0:$BUSY" > "$WORK/busy.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "$BUSY is in use by process $HOLDER (python3)" "$WORK/busy.log" && pass "a tap in use: names the process holding it" || fail "busy tap: exit $rc, $(cat "$WORK/busy.log")"
kill "$HOLDER"; wait "$HOLDER" 2>/dev/null; ip link del "$BUSY"
ip link add "$BUSY" type veth peer name "${BUSY}p"
"$BIN" serve --control "" --host-port "vale0:$BUSY" > "$WORK/notap.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "$BUSY exists and is not a TAP interface" "$WORK/notap.log" && pass "a veth of that name: 'not a TAP interface'" || fail "veth: exit $rc, $(cat "$WORK/notap.log")"
ip link del "$BUSY" 2>/dev/null
# io_uring disabled by sysctl: a clear start-up refusal (the setting is restored at once).
if [ -w /proc/sys/kernel/io_uring_disabled ]; then
  before=$(cat /proc/sys/kernel/io_uring_disabled)
  echo 2 > /proc/sys/kernel/io_uring_disabled
  "$BIN" serve --control "" --port "vale0:u=$WORK/u.sock" > "$WORK/uring.log" 2>&1; rc=$?
  echo "$before" > /proc/sys/kernel/io_uring_disabled
  [ $rc -eq 1 ] && grep -q "io_uring is not available" "$WORK/uring.log" && pass "io_uring disabled: exit 1 with a message" \
    || fail "io_uring disabled: rc $rc $(cat "$WORK/uring.log")"
else
  echo "  (skipped the io_uring-disabled check: /proc/sys/kernel/io_uring_disabled is not writable here)"
fi
start_daemon --port "vale0:x=$WORK/x.sock" || exit 1
[ -S "$WORK/x.sock" ] && pass "socket created" || fail "no socket"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?
expect_eq "exit status after SIGTERM" $rc 0
[ ! -e "$WORK/x.sock" ] && [ ! -e "$WORK/control.sock" ] && pass "sockets removed" || fail "sockets left behind"
finish
