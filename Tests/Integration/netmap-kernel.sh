#!/usr/bin/env bash
# The kernel path against the real netmap module. These machines cannot load modules, so the
# module runs where it can: a QEMU/TCG guest booting Debian's own kernel (the version
# linux-headers-amd64 points to), with netmap.ko, netmap's pkt-gen, vale-ctl and ctrl-api-test
# built from the upstream archive beside the project (kernel/build-netmap.sh), and the project's
# binaries with their shared libraries. Inside, netmap-guest-job.sh runs every check; here the
# serial log is read back and each frame accounted for:
#   sent = received + the drops that a counter names.
# Skips (exit 0, with a line saying why) only where the kernel packages cannot be had.
. "$(dirname "$0")/lib.sh"
echo "netmap-kernel (the real netmap module in a TCG guest)"
N=${N:-20000}; RATE=${RATE:-10000}
NETMAP_BUILD=${NETMAP_BUILD:-$ROOT/.build-netmap}
IMAGE=${IMAGE:-/tmp/vhost-netmap-guest}
TESTS_BIN=${TESTS_BIN:-$ROOT/.build/debug/vhost-netmapPackageTests.xctest}
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}

kernel/build-netmap.sh "$NETMAP_BUILD" > "$WORK/build-netmap.log" 2>&1; rc=$?
cat "$WORK/build-netmap.log" | sed 's/^/  /'
if [ $rc -eq 3 ]; then echo "  SKIP: $(tail -1 "$WORK/build-netmap.log")"; finish; exit 0; fi
[ $rc -eq 0 ] || { fail "netmap build"; finish; exit 1; }
for f in "$BIN" "$PG" "$TESTS_BIN"; do [ -x "$f" ] || { fail "missing $f (swift build -c release; swift build --build-tests)"; finish; exit 1; }; done

"$ROOT/qemu-glue/guest/build-image.sh" "$IMAGE" > "$WORK/image.log" 2>&1 || { fail "guest image: $(tail -2 "$WORK/image.log")"; finish; exit 1; }
KV=$(cat "$NETMAP_BUILD/kernel-version")
GUEST_KV=$(sed -n 's/.*(kernel \(.*\))$/\1/p' "$WORK/image.log")
expect_eq "the guest boots the kernel netmap.ko was built for" "$GUEST_KV" "$KV"
abi=$(python3 "$ROOT/kernel/abi/check-headers.py" "$NETMAP_BUILD/headers" "$ROOT/kernel/abi/netmap-abi.json" 2>&1)
echo "$abi" | grep -v "values checked" | sed 's/^/  /'
expect_eq "ABI vectors against the archive's headers" "$(echo "$abi" | tail -1)" "$(echo "$abi" | tail -1 | sed 's/, [0-9]* differ/, 0 differ/')"

# The overlay: a second cpio archive the kernel unpacks over the base image.
STAGE=$WORK/stage
mkdir -p "$STAGE/opt/netmap" "$STAGE/opt/vn/bin" "$STAGE/opt/vn/tests" "$STAGE/lib/modules" "$STAGE/lib64"
cp "$NETMAP_BUILD"/{netmap.ko,pkt-gen,vale-ctl,ctrl-api-test} "$STAGE/opt/netmap/"
cp "$BIN" "$PG" "$STAGE/opt/vn/bin/"
cp "$TESTS_BIN" "$STAGE/opt/vn/tests/"
cp "$IMAGE/kpkg/lib/modules/$KV/kernel/drivers/net/veth.ko" "$IMAGE/kpkg/lib/modules/$KV/kernel/drivers/net/tun.ko" "$STAGE/lib/modules/"
# iproute2's ip for netmap's ctrl-api-test (busybox's has no tuntap).
mkdir -p "$STAGE/opt/iproute2"; cp "$(command -v ip)" "$STAGE/opt/iproute2/ip"
# Every program with the shared libraries it links, at the same paths.
for exe in "$STAGE"/opt/netmap/{pkt-gen,vale-ctl,ctrl-api-test} "$STAGE"/opt/vn/bin/* "$STAGE"/opt/vn/tests/* "$STAGE/opt/iproute2/ip"; do
  ldd "$exe" | awk '/=> \//{print $3}'
done | sort -u | while read -r lib; do
  mkdir -p "$STAGE$(dirname "$lib")"; cp -L "$lib" "$STAGE$lib"
done
cp -L /lib64/ld-linux-x86-64.so.2 "$STAGE/lib64/"
cp -L /lib/x86_64-linux-gnu/libgcc_s.so.1 "$STAGE/lib/x86_64-linux-gnu/" 2>/dev/null
{ echo "#!/bin/sh"; echo "N=$N RATE=$RATE NETMAP_PARAMS='buf_num=32768' KLOOP_MODES='${KLOOP_MODES:-default kloop}'"; cat "${JOB:-$ROOT/Tests/Integration/netmap-guest-job.sh}"; } > "$STAGE/vn-script"
chmod 755 "$STAGE/vn-script"
(cd "$STAGE" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$WORK/overlay.cpio.gz"
cat "$IMAGE/initramfs.cpio.gz" "$WORK/overlay.cpio.gz" > "$WORK/initramfs.cpio.gz"
echo "  guest initramfs: $(du -m "$WORK/initramfs.cpio.gz" | cut -f1) MiB"

start=$(date +%s)
timeout "${GUEST_TIMEOUT:-1200}" qemu-system-x86_64 -accel tcg,thread=multi -smp 2 -m 1536M -nographic -no-reboot -nodefaults \
  -serial "file:$WORK/guest.log" -monitor none -display none \
  -kernel "$IMAGE/vmlinux" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.mode=script vn.nic=none" > "$WORK/qemu.log" 2>&1
rc=$?
echo "  guest ran $(( $(date +%s) - start )) s (QEMU exit $rc)"
tr -d '\r' < "$WORK/guest.log" > "$WORK/serial.log"
grep -q "VN: script rc=0" "$WORK/serial.log" && pass "the guest job ran to its end" || fail "guest job: $(tail -5 "$WORK/serial.log")"
grep "^VN: ok" "$WORK/serial.log" | sed 's/^VN: ok /  ok: /'
while read -r line; do fail "${line#VN: FAIL }"; done < <(grep "^VN: FAIL" "$WORK/serial.log")

python3 "$ROOT/Tests/Integration/netmap-accounting.py" "$WORK/serial.log" "$N" > "$WORK/accounting.out"; arc=$?
sed 's/^/  /' "$WORK/accounting.out"
[ $arc -eq 0 ] || FAILURES=$((FAILURES + $(grep -c '^FAIL' "$WORK/accounting.out")))
finish
