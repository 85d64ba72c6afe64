#!/usr/bin/env bash
# vhost-netmap capture against tcpdump:
#  1. a capture of a port's tx and of another port's rx while pkt-gen sends N frames through the
#     switch: tcpdump reads both files, each holds the N frames, and they are byte for byte the
#     same frames (what the switch took from a is what it gave b), as pkt-gen built them;
#  2. to standard output, into tcpdump -r -;
#  3. a reader that does not read for 3 s while 200,000 frames pass: copies are dropped and
#     counted, the switched frames are not (every frame explained at the receiver);
#  4. refusals: an unknown port, a second capture of the same port.
. "$(dirname "$0")/lib.sh"
echo "capture"
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}
N=2000
start_daemon --socket-dir "$WORK" --port "vale0:a=$WORK/a.sock" --port "vale0:b=$WORK/b.sock" --metrics 127.0.0.1:0 || { finish; exit 1; }
METRICS=$(sed -n 's|.*metrics on \(http://[^ ]*\)$|\1|p' "$WORK/daemon.log")
cap() { "$BIN" capture --control "$WORK/control.sock" "$@"; }
send() { # send COUNT [RATE]: pkt-gen rx on b, tx on a
  "$PG" -i "vhost-user:$WORK/b.sock" -f rx -n "$1" -W -w 0 > "$WORK/rx.out" 2> "$WORK/rx.err" & RX=$!
  sleep 0.5
  timeout 120 "$PG" -i "vhost-user:$WORK/a.sock" -f tx -n "$1" ${2:+-R $2} -w 1 -l 128 -D 02:00:00:00:00:99 > "$WORK/tx.out" 2> "$WORK/tx.err" || fail "pkt-gen tx: $(tail -1 "$WORK/tx.err")"
  wait $RX
}

# 1. Two files, the same frames.
cap vale0:a --direction tx -c $N -w "$WORK/a.pcap" 2> "$WORK/cap-a.err" & CA=$!
cap vale0:b --direction rx -c $N -w "$WORK/b.pcap" 2> "$WORK/cap-b.err" & CB=$!
sleep 0.5
send $N 20000
wait $CA; wait $CB
expect_eq "tcpdump reads the tx capture of a" "$(tcpdump -n -r "$WORK/a.pcap" 2> /dev/null | wc -l)" $N
expect_eq "tcpdump reads the rx capture of b" "$(tcpdump -n -r "$WORK/b.pcap" 2> /dev/null | wc -l)" $N
tcpdump -n -e -r "$WORK/a.pcap" 2> /dev/null | head -1 | grep -q "> 02:00:00:00:00:99, ethertype IPv4 .* length 128: 10.0.0.1.1234 > 10.1.0.1.1234: UDP" \
  && pass "frames as pkt-gen built them: $(tcpdump -n -e -r "$WORK/a.pcap" 2> /dev/null | head -1 | cut -c17-)" || fail "frame: $(tcpdump -n -e -r "$WORK/a.pcap" 2>&1 | head -2)"
python3 - "$WORK/a.pcap" "$WORK/b.pcap" <<'PY' && pass "the two captures hold the same frames, byte for byte" || fail "the captures differ"
import struct, sys
def frames(path):
    data = open(path, "rb").read()
    assert struct.unpack_from("<I", data)[0] == 0xa1b2c3d4
    out, at = [], 24
    while at < len(data):
        incl, orig = struct.unpack_from("<II", data, at + 8)
        assert incl == orig, "a frame cut short"
        out.append(data[at + 16:at + 16 + incl]); at += 16 + incl
    return out
a, b = frames(sys.argv[1]), frames(sys.argv[2])
sys.exit(0 if a == b and len(a) > 0 else 1)
PY

# 2. Standard output into tcpdump.
cap vale0:a --direction tx -c 50 --snaplen 64 2> /dev/null | tcpdump -n -r - > "$WORK/stdout.txt" 2> /dev/null & PIPE=$!
sleep 0.5
send 50
wait $PIPE
expect_eq "frames through a pipe into tcpdump -r -" "$(wc -l < "$WORK/stdout.txt")" 50

# 3. A reader that stalls: copies dropped, frames not.
M=200000
in_before=$(port_field vale0:a counters.inPackets); noroom_before=$(port_field vale0:b counters.dropNoRoom)
cap vale0:a --direction tx -w - 2> /dev/null | (sleep 3; cat > "$WORK/slow.pcap") & SLOW=$!
sleep 0.5
send $M
sleep 3
pkill -INT -f "capture --control $WORK/control.sock vale0:a"; wait $SLOW
received=$(awk '/^Received/{print $2}' "$WORK/rx.out")
noroom=$(( $(port_field vale0:b counters.dropNoRoom) - noroom_before ))
expect_eq "frames the switch took from a while the capture stalled" "$(( $(port_field vale0:a counters.inPackets) - in_before ))" $M
expect_eq "at b: received + dropped for no room (nothing lost to the capture)" "$((received + noroom))" $M
dropped=$(sed -n 's/.*capture of vale0:a ended: .*, \([0-9]*\) copies dropped.*/\1/p' "$WORK/daemon.log" | tail -1)
kept=$(tcpdump -n -r "$WORK/slow.pcap" 2> /dev/null | wc -l)
[ "${dropped:-0}" -gt 0 ] && pass "the stalled capture dropped $dropped copies and kept $kept (sum $((dropped + kept)) of $M)" \
  || fail "no copies dropped (kept $kept): $(grep 'capture of vale0:a ended' "$WORK/daemon.log" | tail -1)"
expect_eq "copies kept + dropped = frames" "$((dropped + kept))" $M
# /metrics adds up every capture of the port, as the daemon logged them when they ended.
sample() { curl -sS "$METRICS" | grep "^$1{" | grep -F 'port="vale0:a"' | awk '{print $NF}'; }
logged() { sed -n "s/.*capture of vale0:a ended: .*; \([0-9]*\) frames sent, \([0-9]*\) copies dropped.*/\\$1/p" "$WORK/daemon.log" | awk "{s += \$1} END {print s + 0}"; }
expect_eq "/metrics: copies the captures of vale0:a dropped" "$(sample vhost_netmap_capture_dropped_total)" "$(logged 2)"
expect_eq "/metrics: copies they sent" "$(sample vhost_netmap_capture_frames_total)" "$(logged 1)"
expect_eq "/metrics: no capture of vale0:a runs" "$(sample vhost_netmap_capture_active)" 0
PROMTOOL=$(command -v promtool || echo /usr/local/lib/vhost-netmap-test/promtool)
curl -sS "$METRICS" | "$PROMTOOL" check metrics > "$WORK/promtool.log" 2>&1 && pass "promtool check metrics (with the capture families)" || fail "promtool: $(head -3 "$WORK/promtool.log")"

# 4. Refusals.
cap vale0:nope -w "$WORK/x.pcap" > "$WORK/nope.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "no port vale0:nope" "$WORK/nope.log" && pass "an unknown port: exit 1, named" || fail "unknown port: exit $rc, $(cat "$WORK/nope.log")"
"$BIN" capture --control "$WORK/control.sock" vale0:b -w "$WORK/one.pcap" 2> /dev/null & ONE=$!
sleep 0.5
cap vale0:b -w "$WORK/two.pcap" > "$WORK/two.log" 2>&1; rc=$?
[ $rc -eq 1 ] && grep -q "being captured already" "$WORK/two.log" && pass "a second capture of a port refused" || fail "second capture: exit $rc, $(cat "$WORK/two.log")"
kill -INT $ONE; wait $ONE; rc=$?
expect_eq "Ctrl-C ends a capture cleanly (exit status)" $rc 0
grep -q "capture of vale0:b ended: the client closed the connection" "$WORK/daemon.log" && pass "the daemon saw the reader go" || fail "capture not ended in the daemon"
finish
