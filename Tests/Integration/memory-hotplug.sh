#!/usr/bin/env bash
# Memory hot-plug through memory slots (CONFIGURE_MEM_SLOTS): a QEMU guest (TCG, -m 384M with
# 4 slots) on one port pings a dpdk-testpmd icmpecho front-end on another while a 256 MiB memfd
# DIMM is plugged (QEMU sends ADD_MEM_REG) and unplugged (REM_MEM_REG). The daemon's memory
# follows each step, no ring breaks, and every ping is answered.
. "$(dirname "$0")/lib.sh"
echo "memory-hotplug"
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
COUNT=100
QPID=""
trap '[ -n "$QPID" ] && { kill -KILL "$QPID" 2>/dev/null; wait "$QPID" 2>/dev/null; }; cleanup' EXIT
start_guest_and_echo_peer || { finish; exit 1; }
qemu-system-x86_64 -accel tcg -smp 1 -nographic -no-reboot -nodefaults \
  -serial "file:$WORK/guest.log" -monitor "unix:$WORK/mon,server=on,wait=off" -display none \
  $("$BIN" qemu-args --socket "$WORK/guest.sock" --memory 384M --mac 52:54:00:12:34:56 --no-msix) \
  -m 384M,slots=4,maxmem=2G \
  -kernel "$IMAGE/vmlinux" -initrd "$IMAGE/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.ip=10.0.0.2/24 vn.peer=10.0.0.1 vn.mode=ping vn.count=$COUNT" \
  > "$WORK/qemu.log" 2>&1 &
QPID=$!
wait_for port_ready vale0:guest || fail "the guest never started its rings"
wait_for bash -c "grep -aq 'VN: up' '$WORK/guest.log'" || fail "the guest never came up"
MIB0=$(port_field vale0:guest device.memoryMiB); REGIONS0=$(port_field vale0:guest device.memoryRegions)
grep -q "memory region added" "$WORK/daemon.log" && pass "QEMU added its memory through memory slots ($REGIONS0 region(s), $MIB0 MiB)" \
  || fail "no ADD_MEM_REG seen (QEMU used SET_MEM_TABLE?)"

hmp "$WORK/mon" "object_add memory-backend-memfd,id=hp1,size=256M,share=on" > /dev/null
hmp "$WORK/mon" "device_add pc-dimm,id=dimm1,memdev=hp1" > "$WORK/device_add.out"
plugged() { [ "$(port_field vale0:guest device.memoryMiB)" -eq $((MIB0 + 256)) ]; }
wait_for plugged && pass "DIMM plugged: the daemon maps $(port_field vale0:guest device.memoryMiB) MiB in $(port_field vale0:guest device.memoryRegions) regions" \
  || fail "after device_add: $(port_field vale0:guest device.memoryMiB) MiB ($(cat "$WORK/device_add.out"))"
sleep 3
hmp "$WORK/mon" "device_del dimm1" > "$WORK/device_del.out"
unplugged() { [ "$(port_field vale0:guest device.memoryMiB)" -eq "$MIB0" ]; }
if wait_for unplugged; then
  pass "DIMM unplugged: back to $MIB0 MiB in $(port_field vale0:guest device.memoryRegions) region(s)"
  hmp "$WORK/mon" "object_del hp1" > /dev/null
else
  fail "after device_del: $(port_field vale0:guest device.memoryMiB) MiB ($(cat "$WORK/device_del.out"))"
fi
wait "$QPID"; QPID=""
grep -a "VN:\|packets transmitted" "$WORK/guest.log" | tr -d '\r' | sed 's/^/    guest: /'
expect_eq "ping replies across plug and unplug" "$(grep -a 'packets transmitted' "$WORK/guest.log" | tr -d '\r' | awk '{print $4}')" "$COUNT"
expect_eq "broken rings" "$(port_field vale0:guest device.brokenRings)" "[]"
tp_quit echo
finish
