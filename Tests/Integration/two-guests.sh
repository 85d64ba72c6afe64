#!/usr/bin/env bash
# Two QEMU guests (TCG) on two ports of the embedded switch, booted by qemu-glue/run-guests:
# guest 0 pings guest 1 through the back-end; the switch counters agree.
. "$(dirname "$0")/lib.sh"
echo "two-guests"
start_daemon --port "vale0:g0=$WORK/g0.sock" --port "vale0:g1=$WORK/g1.sock" || { finish; exit 1; }
cat > "$WORK/script.sh" <<'SCRIPT'
#!/bin/sh
# Guest 0 pings guest 1 (which stays up long enough), guest 1 waits.
if [ "$VN_INDEX" = 0 ]; then
  sleep 2
  ping -c 5 -i 0.3 -W 3 10.0.0.3
else
  sleep 15
fi
SCRIPT
if "$ROOT/qemu-glue/run-guests" --script "$WORK/script.sh" --out "$WORK/guests" "$WORK/g0.sock" "$WORK/g1.sock" > "$WORK/run.log" 2>&1; then
  pass "run-guests: both guests ran their script (rc 0)"
else
  fail "run-guests: $(tail -3 "$WORK/run.log")"
fi
sed 's/^/    /' "$WORK/run.log" | grep -a "VN:"
expect_eq "guest 0's ping replies" "$(grep -a 'packets transmitted' "$WORK/guests/guest-0.log" | tr -d '\r' | awk '{print $4}')" 5
g1_out=$(port_field vale0:g1 counters.outPackets); g1_in=$(port_field vale0:g1 counters.inPackets)
[ "$g1_out" -ge 6 ] && [ "$g1_in" -ge 6 ] && pass "switch: g1 got $g1_out frames and sent $g1_in" || fail "g1 counters out=$g1_out in=$g1_in"
finish
