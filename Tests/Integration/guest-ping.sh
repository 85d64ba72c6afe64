#!/usr/bin/env bash
# A QEMU guest (Debian kernel, busybox, TCG) on one port pings a dpdk-testpmd virtio-user
# front-end in icmpecho mode on another port of the same embedded switch: all replies arrive.
# usage: guest-ping.sh [packed]   (packed: the guest's virtio-net uses packed virtqueues)
# Then a QEMU asking for 2 queue pairs on that one-pair port (it gives up and reconnects at once,
# forever): the daemon says why and slows it to about one connection a second, with few log lines.
. "$(dirname "$0")/lib.sh"
COUNT=${COUNT:-10}
PACKED=""; [ "${1:-}" = packed ] && PACKED=--packed
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
start_guest_and_echo_peer || { finish; exit 1; }
# Debian's QEMU 7.2 crashes under TCG with vhost-user and MSI-X: the device uses INTx (vectors=0).
timeout 300 qemu-system-x86_64 -accel tcg -smp 1 -nographic -no-reboot -nodefaults \
  -serial "file:$WORK/guest.log" -monitor none -display none \
  $("$BIN" qemu-args --socket "$WORK/guest.sock" --memory 256M --mac 52:54:00:12:34:56 --no-msix $PACKED) \
  -kernel "$IMAGE/vmlinux" -initrd "$IMAGE/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.ip=10.0.0.2/24 vn.peer=10.0.0.1 vn.mode=ping vn.count=$COUNT" \
  > "$WORK/qemu.log" 2>&1
echo "  qemu exited: $?"
grep -a "VN:\|packets transmitted" "$WORK/guest.log" | sed 's/^/    guest: /'
expect_eq "ping replies" "$(grep -a 'packets transmitted' "$WORK/guest.log" | tr -d '\r' | awk '{print $4}')" "$COUNT"
expect_eq "ping rc" "$(grep -a 'VN: ping rc=' "$WORK/guest.log" | tr -d '\r' | sed 's/.*rc=//')" 0
rings=$(grep "port=vale0:guest .*features 0x" "$WORK/daemon.log" | head -1 | sed -n 's/.*bytes, \([a-z]*\) rings.*/\1/p')
expect_eq "the guest's rings (the daemon's log)" "$rings" "$([ -n "$PACKED" ] && echo packed || echo split)"
# ARP request + reply and COUNT echo requests/replies went through the switch.
GUEST_IN=$(port_field vale0:guest counters.inPackets)
GUEST_OUT=$(port_field vale0:guest counters.outPackets)
[ "$GUEST_IN" -ge $((COUNT + 1)) ] && pass "guest sent $GUEST_IN frames into the switch" || fail "guest in: $GUEST_IN"
[ "$GUEST_OUT" -ge $((COUNT + 1)) ] && pass "guest received $GUEST_OUT frames from the switch" || fail "guest out: $GUEST_OUT"
tp_quit echo

LOG_BEFORE=$(wc -l < "$WORK/daemon.log")
timeout 20 qemu-system-x86_64 -accel tcg -smp 1 -nographic -no-reboot -nodefaults -serial none -monitor none -display none \
  $("$BIN" qemu-args --socket "$WORK/guest.sock" --memory 256M --queues 2 --no-msix) \
  -kernel "$IMAGE/vmlinux" -initrd "$IMAGE/initramfs.cpio.gz" -append "console=ttyS0 vn.mode=wait" > "$WORK/qemu-mq.log" 2>&1
grep -q "asking more queues than supported: 1" "$WORK/qemu-mq.log" && pass "QEMU refuses the one-pair port (queues=2)" || fail "QEMU: $(head -3 "$WORK/qemu-mq.log")"
CONNECTIONS=$(port_field vale0:guest frontEnds.connections)
[ "$CONNECTIONS" -le 40 ] && pass "the reconnect loop was slowed: $CONNECTIONS connections in 20 s" || fail "$CONNECTIONS connections in 20 s"
port_field vale0:guest frontEnds.lastLeaveReason | grep -q "serve the port with queues=N" && pass "stats give the reason: $(port_field vale0:guest frontEnds.lastLeaveReason | cut -c1-120)" \
  || fail "reason: $(port_field vale0:guest frontEnds.lastLeaveReason)"
LOG_LINES=$(( $(wc -l < "$WORK/daemon.log") - LOG_BEFORE ))
[ "$LOG_LINES" -le 30 ] && pass "$LOG_LINES log lines for the loop" || fail "$LOG_LINES log lines for $CONNECTIONS connections"
grep -q "keeps leaving right after connecting.*serve the port with queues=N" "$WORK/daemon.log" && pass "the log says why" || fail "no reason in the log"
finish
