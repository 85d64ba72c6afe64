#!/usr/bin/env bash
# Coverage-guided fuzzing (libFuzzer, with AddressSanitizer) of what a guest or front-end
# controls: FuzzFraming (the vhost-user byte stream into a device, with fuzzed guest memory),
# FuzzChainWalker (split-ring chains in fuzzed guest memory), FuzzRXWriter (the receive path into
# a fuzzed ring), FuzzNetmapRing (a netmap port over a fuzzed region), FuzzMemoryTable (memory
# tables, slots, translation, dirty log), FuzzControl (control-socket lines), FuzzNames
# (port-name and --port parsers), FuzzPktGenOptions (pkt-gen's options), FuzzDomainXML (the
# domain XML libvirt watch reads). Each target runs SECONDS (default 60) from its
# seed corpus (Tests/Fuzz/Corpus/<target>, made by Tests/Fuzz/make-seeds.py) into a scratch corpus;
# prints executions, coverage and findings per target; exits non-zero if any target found one
# (the crashing input is kept and named). Without libFuzzer, `swift build` makes the same targets
# replay files: .build/debug/FuzzFraming Tests/Fuzz/Corpus/FuzzFraming CRASH-FILE...
# usage: scripts/fuzz.sh [SECONDS] [TARGET...]
set -u
cd "$(dirname "$0")/.."
SECONDS_EACH=${1:-60}; shift || true
TARGETS=("$@"); [ ${#TARGETS[@]} -eq 0 ] && TARGETS=(FuzzFraming FuzzChainWalker FuzzRXWriter FuzzNetmapRing FuzzMemoryTable FuzzControl FuzzNames FuzzPktGenOptions FuzzDomainXML)
FUZZER_LIB=$(ls "$(dirname "$(dirname "$(readlink -f "$(command -v swift)")")")"/lib/clang/*/lib/linux/libclang_rt.fuzzer_no_main-x86_64.a 2>/dev/null | head -1)
[ -n "$FUZZER_LIB" ] || { echo "fuzz.sh: libclang_rt.fuzzer_no_main not found beside the Swift toolchain" >&2; exit 1; }
[ -d Tests/Fuzz/Corpus ] || python3 Tests/Fuzz/make-seeds.py
OUT=${FUZZ_OUT:-/tmp/vhost-netmap-fuzz}
mkdir -p "$OUT"
FLAGS=(-c release --build-path .build-fuzz -Xswiftc -sanitize=address
       -Xswiftc -sanitize-coverage=edge,inline-8bit-counters,pc-table,trace-cmp
       -Xcc -DVHOST_NETMAP_LIBFUZZER -Xlinker "$FUZZER_LIB" -Xlinker -lstdc++)
export ASAN_OPTIONS=detect_leaks=0
found=0
for t in "${TARGETS[@]}"; do
  if ! swift build "${FLAGS[@]}" --product "$t" > "$OUT/build-$t.log" 2>&1; then
    grep error "$OUT/build-$t.log" | head -5; echo "$t: build failed"; found=1; continue
  fi
  mkdir -p "$OUT/corpus-$t" "$OUT/crashes-$t"
  .build-fuzz/release/"$t" "$OUT/corpus-$t" "Tests/Fuzz/Corpus/$t" -max_total_time="$SECONDS_EACH" -print_final_stats=1 \
    -artifact_prefix="$OUT/crashes-$t/" -max_len=65536 -timeout=10 -rss_limit_mb=4096 > "$OUT/run-$t.log" 2>&1
  rc=$?
  execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$OUT/run-$t.log")
  cov=$(grep -oE "cov: [0-9]+ ft: [0-9]+" "$OUT/run-$t.log" | tail -1)
  crashes=$(ls "$OUT/crashes-$t" | wc -l)
  echo "$t: ${execs:-?} executions in ${SECONDS_EACH} s, $cov, corpus $(ls "$OUT/corpus-$t" | wc -l), findings $crashes (exit $rc)"
  if [ "$rc" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    found=1
    grep -E "ERROR|Fatal error|SUMMARY|deadly|timeout" "$OUT/run-$t.log" | head -5 | sed 's/^/    /'
    ls "$OUT/crashes-$t" | sed "s|^|    $OUT/crashes-$t/|"
  fi
done
exit $found
