#!/usr/bin/env bash
# Runs every test: installs what they need, the Swift unit and hostile-input tests, then the
# integration tests against real peers (dpdk-testpmd virtio-user, a QEMU guest).
# The last line is "N passed, M failed". Set SKIP_INTEGRATION=1 for the Swift tests alone.
set -u
cd "$(dirname "$0")/.."
scripts/install-deps.sh test || exit 1
passed=0; failed=0

echo "== swift test"
swift test 2>&1 | tee /tmp/vhost-netmap-swift-test.log | grep -E "✘|error:|Test run with|Fatal" | head -50
summary=$(grep -E "Test run with [0-9]+ tests?" /tmp/vhost-netmap-swift-test.log | tail -1)
n=$(echo "$summary" | sed -n 's/.*Test run with \([0-9]*\) test.*/\1/p')
if echo "$summary" | grep -q "passed after" && [ "${PIPESTATUS[0]:-0}" = 0 ]; then
  passed=$((passed + ${n:-0}))
else
  failed=$((failed + 1)); passed=$((passed + ${n:-0} - 1))
fi

if [ -z "${SKIP_INTEGRATION:-}" ]; then
  echo "== swift build -c release"
  swift build -c release 2>&1 | grep -E "error|warning: [^']" ; swift build -c release >/dev/null 2>&1 || { echo "release build failed"; failed=$((failed + 1)); }
  run() {
    echo "== $*"
    if "$@"; then passed=$((passed + 1)); else failed=$((failed + 1)); fi
  }
  run Tests/Integration/testpmd-switching.sh ""
  run Tests/Integration/testpmd-switching.sh ",mrg_rxbuf=0,queue_size=1024"
  run Tests/Integration/testpmd-switching.sh ",mrg_rxbuf=1,queue_size=256"
  run Tests/Integration/testpmd-switching.sh ",queue_size=256" 2
  run Tests/Integration/guest-ping.sh
fi
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
