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
[ -x "${TESTS_BIN:-$ROOT/.build/debug/vhost-netmapPackageTests.xctest}" ] || { fail "no Swift test binary (swift build --build-tests)"; finish; exit 1; }

"$ROOT/qemu-glue/netmap-guest" --job "${JOB:-$ROOT/Tests/Integration/netmap-guest-job.sh}" --out "$WORK/guest" \
  --netmap-build "$NETMAP_BUILD" --timeout "${GUEST_TIMEOUT:-1200}" \
  --env "N=$N RATE=$RATE NETMAP_PARAMS='buf_num=32768' KLOOP_MODES='${KLOOP_MODES:-default kloop}'" > "$WORK/netmap-guest.log" 2>&1
rc=$?
sed 's/^/  /' "$WORK/netmap-guest.log"
if [ $rc -eq 3 ]; then echo "  SKIP: the kernel packages cannot be had here: $(tail -1 "$WORK/netmap-guest.log")"; finish; exit 0; fi
sed -n 's/^build-netmap: /  build-netmap: /p' "$WORK/guest/build-netmap.log"
cp "$WORK/guest/serial.log" "$WORK/serial.log" 2>/dev/null
abi=$(python3 "$ROOT/kernel/abi/check-headers.py" "$NETMAP_BUILD/headers" "$ROOT/kernel/abi/netmap-abi.json" 2>&1)
echo "$abi" | grep -q ", 0 differ$" && pass "ABI vectors against the archive's headers: $(echo "$abi" | tail -1)" \
  || fail "ABI vectors against the archive's headers: $(echo "$abi" | tail -5)"
grep -q "VN: script rc=0" "$WORK/serial.log" && pass "the guest job ran to its end" || fail "guest job: $(tail -5 "$WORK/serial.log")"
grep "^VN: ok" "$WORK/serial.log" | sed 's/^VN: ok /  ok: /'
while read -r line; do fail "${line#VN: FAIL }"; done < <(grep "^VN: FAIL" "$WORK/serial.log")

python3 "$ROOT/Tests/Integration/netmap-accounting.py" "$WORK/serial.log" "$N" > "$WORK/accounting.out"; arc=$?
sed 's/^/  /' "$WORK/accounting.out"
[ $arc -eq 0 ] || FAILURES=$((FAILURES + $(grep -c '^FAIL' "$WORK/accounting.out")))
finish
