#!/usr/bin/env bash
# The back-end program conventions: --print-capabilities, clear non-zero exits on bad start-up,
# a clean stop on SIGTERM that removes the sockets.
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
"$BIN" serve --port "vale0:x" > "$WORK/bad.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "expected SWITCH:PORT=SOCKET" "$WORK/bad.log" && pass "bad --port refused (exit $rc)" || fail "bad --port: exit $rc, $(cat "$WORK/bad.log")"
"$BIN" serve --port "vale0:toolongname_x_0123=/tmp/x.sock" > "$WORK/bad2.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "longer than 15" "$WORK/bad2.log" && pass "over-long VALE name refused" || fail "long name: exit $rc"
"$BIN" serve --control "" --port "vale0:x=/proc/vn/x.sock" > "$WORK/bad3.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "cannot" "$WORK/bad3.log" && pass "unusable socket path: exit 1 with a message" || fail "socket path: exit $rc, $(cat "$WORK/bad3.log")"
"$BIN" serve --control "" --port "vale0:x=$WORK/x.sock" --port "vale0:x=$WORK/y.sock" > "$WORK/bad4.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "given twice" "$WORK/bad4.log" && pass "duplicate port refused" || fail "duplicate port: exit $rc"
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
