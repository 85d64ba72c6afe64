#!/usr/bin/env bash
# The kernel path's throughput, inside a TCG guest with the real netmap module
# (qemu-glue/netmap-guest): frames/s between two vhost-user front-ends (the project's pkt-gen)
# through the daemon, for the embedded switch, kernel mode synced by ioctls, and kernel mode
# synced through netmap's sync kernel loop, rounds interleaved in one guest. TCG makes the
# absolute numbers meaningless: compare the ratios of one run only.
# usage: bench/netmap-kernel-bench.sh [ROUNDS=3] [FRAMES=200000] [SIZE=60]
set -u
ROOT=$(cd "$(dirname "$0")/.." && pwd)
ROUNDS=${1:-3}; FRAMES=${2:-200000}; SIZE=${3:-60}
W=$(mktemp -d /tmp/vn-nmbench.XXXXXX)
trap 'rm -rf "$W"' EXIT
"$ROOT/scripts/install-deps.sh" test > /dev/null || exit 1
(cd "$ROOT" && swift build -c release > "$W/build.log" 2>&1) || { tail -5 "$W/build.log"; exit 1; }
"$ROOT/qemu-glue/netmap-guest" --job "$ROOT/bench/guest/netmap-sync-job.sh" --out "$W/guest" \
  --env "ROUNDS=$ROUNDS FRAMES=$FRAMES SIZE=$SIZE" --timeout 3600 || { tail -20 "$W/guest/serial.log" 2>/dev/null; exit 1; }
python3 - "$W/guest/serial.log" "$SIZE" <<'PY'
import re, statistics, sys
runs = {}
for line in open(sys.argv[1], errors="replace"):
    m = re.match(r"VN-BENCH (\S+) (\d+) (\d+) ([0-9.]+)", line)
    if m and float(m.group(4)) > 0:
        runs.setdefault(m.group(1), []).append(int(m.group(3)) / float(m.group(4)))
if not runs:
    sys.exit("no measurements in the guest's log")
print(f"pkt-gen -l {sys.argv[2]} frames, vhost-user front-end -> daemon -> front-end, in a 2-vCPU TCG guest (frames/s received)")
for c, v in runs.items():
    print(f"  {c:9s} rounds: {' '.join(f'{x/1000:7.1f}' for x in v)} kpps   median {statistics.median(v)/1000:7.1f} kpps")
base = statistics.median(runs["ioctl"]) if "ioctl" in runs else None
if base:
    for c in runs:
        if c != "ioctl":
            print(f"  ratio {c} / ioctl: {statistics.median(runs[c]) / base:.2f}")
PY
