#!/usr/bin/env bash
# The back-end program conventions: --print-capabilities, clear non-zero exits on bad start-up,
# a clean stop on SIGTERM that removes the sockets.
. "$(dirname "$0")/lib.sh"
caps=$("$BIN" --print-capabilities)
expect_eq "capabilities type" "$(echo "$caps" | python3 -c 'import json,sys; print(json.load(sys.stdin)["type"])')" net
"$BIN" serve --port "vale0:x" > "$WORK/bad.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "expected SWITCH:PORT=SOCKET" "$WORK/bad.log" && pass "bad --port refused (exit $rc)" || fail "bad --port: exit $rc, $(cat "$WORK/bad.log")"
"$BIN" serve --port "vale0:toolongname_x_0123=/tmp/x.sock" > "$WORK/bad2.log" 2>&1; rc=$?
[ $rc -ne 0 ] && grep -q "longer than 15" "$WORK/bad2.log" && pass "over-long VALE name refused" || fail "long name: exit $rc"
"$BIN" serve --control "" --port "vale0:x=/proc/vn/x.sock" > "$WORK/bad3.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "cannot" "$WORK/bad3.log" && pass "unusable socket path: exit 1 with a message" || fail "socket path: exit $rc, $(cat "$WORK/bad3.log")"
"$BIN" serve --control "" --port "vale0:x=$WORK/x.sock" --port "vale0:x=$WORK/y.sock" > "$WORK/bad4.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "given twice" "$WORK/bad4.log" && pass "duplicate port refused" || fail "duplicate port: exit $rc"
start_daemon --port "vale0:x=$WORK/x.sock" || exit 1
[ -S "$WORK/x.sock" ] && pass "socket created" || fail "no socket"
kill -TERM "$DAEMON_PID"; wait "$DAEMON_PID"; rc=$?
expect_eq "exit status after SIGTERM" $rc 0
[ ! -e "$WORK/x.sock" ] && [ ! -e "$WORK/control.sock" ] && pass "sockets removed" || fail "sockets left behind"
finish
