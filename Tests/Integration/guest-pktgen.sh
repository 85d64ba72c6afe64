#!/usr/bin/env bash
# pkt-gen inside guests (QEMU TCG, booted by qemu-glue/run-guests with the static pkt-gen in the
# initramfs): guest 0 sends N frames with `pkt-gen -i eth0 -f tx` (AF_PACKET, PACKET_MMAP),
# guest 1 counts them with `-f rx`; the receiver counts N, or the loss is what the back-end
# dropped for guest 1's full ring.
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
  pkt-gen -i eth0 -f tx -n $N -l 60 -R 20000 -w 1
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
expect_eq "guest 0 pkt-gen sent" "$sent" "$N"
expect_eq "guest 1 pkt-gen received + back-end drops for g1" "$(( ${received:-0} + dropped ))" "$N"
echo "  (received ${received:-0}, dropped by the back-end on g1's full ring: $dropped)"
finish
