#!/usr/bin/env bash
# pkt-gen inside guests (QEMU TCG, booted by qemu-glue/run-guests with the static pkt-gen in the
# initramfs): guest 0 sends N frames with `pkt-gen -i eth0 -f tx` (AF_PACKET, PACKET_MMAP),
# guest 1 counts them with `-f rx`. Every frame is accounted for: guest 0's pkt-gen sent N and
# the switch took N from guest 0; the switch delivered to guest 1 or counted a drop for its full
# ring; guest 1's pkt-gen received them or its kernel counted a drop on the full packet ring.
. "$(dirname "$0")/lib.sh"
echo "guest-pktgen"
N=${N:-5000}
STATIC=${PKTGEN_STATIC:-$ROOT/.build-static/release/pkt-gen}
[ -x "$STATIC" ] || { fail "no static pkt-gen at $STATIC (swift build -c release --static-swift-stdlib --product pkt-gen --build-path .build-static)"; finish; exit 1; }
start_daemon --port "vale0:g0=$WORK/g0.sock" --port "vale0:g1=$WORK/g1.sock" || { finish; exit 1; }
cat > "$WORK/script.sh" <<SCRIPT
#!/bin/sh
if [ "\$VN_INDEX" = 0 ]; then
  sleep 6
  pkt-gen -i eth0 -f tx -n $N -l 60 -R 10000 -w 1
else
  # Ends at N frames, or (loss) when timeout sends SIGTERM: pkt-gen then prints its summary.
  timeout 40 pkt-gen -i eth0 -f rx -n $N -w 0
fi
SCRIPT
"$ROOT/qemu-glue/run-guests" --pkt-gen "$STATIC" --script "$WORK/script.sh" --out "$WORK/guests" "$WORK/g0.sock" "$WORK/g1.sock" > "$WORK/run.log" 2>&1 \
  && pass "both guests ran pkt-gen (rc 0)" || fail "run-guests: $(tail -3 "$WORK/run.log")"
grep -a "^Sent\|^Received\|^Speed\|cannot\|error" "$WORK"/guests/guest-*.log | tr -d '\r' | sed 's/^/    /'
sent=$(grep -a '^Sent' "$WORK/guests/guest-0.log" | tr -d '\r' | awk '{print $2}')
received=$(grep -a '^Received' "$WORK/guests/guest-1.log" | tr -d '\r' | awk '{print $2}')
dropped=$(port_field vale0:g1 counters.dropNoRoom)
g0_in=$(port_field vale0:g0 counters.inPackets); g1_out=$(port_field vale0:g1 counters.outPackets)
echo "  (switch: g0 in $g0_in, g1 out $g1_out)"
ring_drops=$(grep -a 'dropped by the kernel (receive ring full)' "$WORK/guests/guest-1.log" | tr -d '\r' | awk '{print $4}')
expect_eq "guest 0 pkt-gen sent" "$sent" "$N"
expect_eq "the switch took from guest 0" "$g0_in" "$N"
expect_eq "the switch delivered to guest 1 + its drops for g1's full ring" "$(( g1_out + dropped ))" "$N"
expect_eq "guest 1 pkt-gen received + its kernel's packet-ring drops" "$(( ${received:-0} + ${ring_drops:-0} ))" "$g1_out"
echo "  (guest 1 received ${received:-0} of $N; back-end drops on g1's ring: $dropped; guest kernel packet-ring drops: ${ring_drops:-0})"
finish
