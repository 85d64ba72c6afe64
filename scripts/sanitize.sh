#!/usr/bin/env bash
# The Swift tests, and with --integration the daemon under dpdk-testpmd, built with a sanitizer:
#   address  AddressSanitizer (+ LeakSanitizer for the Swift tests; XCTest's own objects suppressed)
#   thread   ThreadSanitizer; the locks are built as pthread mutexes (VHOST_NETMAP_TSAN), which
#            TSan tracks (the standard library's Mutex waits on a raw futex TSan cannot see)
# Any sanitizer report fails the run. Prints "sanitize SAN: N report(s), tests passed|failed".
# usage: scripts/sanitize.sh address|thread [--integration]
set -u
cd "$(dirname "$0")/.."
SAN=${1:-}
case "$SAN" in
  address) FLAGS=(--sanitize=address); BUILD=.build-asan;;
  thread) FLAGS=(--sanitize=thread -Xswiftc -DVHOST_NETMAP_TSAN); BUILD=.build-tsan;;
  *) sed -n '2,8p' "$0" >&2; exit 64;;
esac
REPORTS=$(mktemp -d /tmp/vn-sanitize.XXXXXX)
export ASAN_OPTIONS="log_path=$REPORTS/asan:detect_leaks=1"
export LSAN_OPTIONS="suppressions=$(pwd)/Tests/Sanitizers/lsan.supp:print_suppressions=0"
export TSAN_OPTIONS="log_path=$REPORTS/tsan:halt_on_error=0"
echo "== swift build --build-tests ${FLAGS[*]}"
swift build --build-tests "${FLAGS[@]}" --build-path "$BUILD" > "$REPORTS/build.log" 2>&1 || { grep error "$REPORTS/build.log" | head; exit 1; }
echo "== swift test ${FLAGS[*]}"
swift test --skip-build "${FLAGS[@]}" --build-path "$BUILD" > "$REPORTS/test.log" 2>&1
rc=$?
grep -E "Test run with" "$REPORTS/test.log" | tail -1
if [ "${2:-}" = --integration ]; then
  echo "== the daemon under dpdk-testpmd (${FLAGS[*]})"
  swift build -c release "${FLAGS[@]}" --build-path "$BUILD" --product vhost-netmap > "$REPORTS/build-bin.log" 2>&1 || { grep error "$REPORTS/build-bin.log" | head; exit 1; }
  # A daemon stopped by a signal is not a leak check (its last state is not torn down by exit).
  export ASAN_OPTIONS="log_path=$REPORTS/asan:detect_leaks=0"
  export VHOST_NETMAP_BIN=$(pwd)/$BUILD/release/vhost-netmap
  for t in "Tests/Integration/testpmd-switching.sh ,mrg_rxbuf=1,queue_size=256" "Tests/Integration/testpmd-switching.sh ,queue_size=256 2" \
           "Tests/Integration/testpmd-switching.sh ,queue_size=256 2 2" "Tests/Integration/multi-worker.sh 2 2 4" \
           "Tests/Integration/backend-restart.sh 2" "Tests/Integration/frontend-churn.sh 200" "Tests/Integration/host-port.sh"; do
    $t > "$REPORTS/$(basename "${t%% *}" .sh).log" 2>&1 && echo "  ok: $t" || { echo "  FAIL: $t (log: $REPORTS)"; rc=1; }
  done
fi
n=$(cat "$REPORTS"/asan.* "$REPORTS"/tsan.* 2>/dev/null | grep -cE "^(==[0-9]+==ERROR|WARNING: ThreadSanitizer|SUMMARY)")
[ "$n" -gt 0 ] && { cat "$REPORTS"/asan.* "$REPORTS"/tsan.* 2>/dev/null | grep -E "ERROR|WARNING|SUMMARY" | sort | uniq -c | head -20; rc=1; }
echo "sanitize $SAN: $n report(s), tests $([ $rc -eq 0 ] && echo passed || echo failed) (logs: $REPORTS)"
[ $rc -eq 0 ] && rm -rf "$REPORTS"
exit $rc
