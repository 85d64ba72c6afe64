#!/usr/bin/env bash
# The documents work as written: the blocks of docs/user-guide.md and README.md marked for testing
# run in order (Tests/Integration/run-doc-blocks.py; the only substitutions are the socket and
# scratch directories and the install prefix), and the README's main job, scripts/run.sh, prints
# QEMU command lines that boot here: pasted as printed, the two guests ping each other.
. "$(dirname "$0")/lib.sh"
echo "docs"
export VHOST_NETMAP_DIR=$WORK/run PREFIX=$WORK/prefix SYSCONFDIR=$WORK/etc
export PATH=$PREFIX/bin:$PATH
DOCS_TAP=vntap0
if ip link show "$DOCS_TAP" > /dev/null 2>&1; then
  fail "interface $DOCS_TAP exists already (the user guide creates it): not running the documents"; finish; exit 1
fi
for doc in docs/user-guide.md README.md; do
  echo "  -- $doc"
  python3 "$ROOT/Tests/Integration/run-doc-blocks.py" "$ROOT/$doc" "$WORK/blocks" \
    --replace "/run/vhost-netmap=$VHOST_NETMAP_DIR" --replace "/tmp/vn-guide=$WORK/guide" \
    || FAILURES=$((FAILURES + $?))
  [ ! -e "$VHOST_NETMAP_DIR/control.sock" ] && pass "$doc: the back-end stopped and removed its sockets" || fail "$doc: control.sock left behind"
done
ip link show "$DOCS_TAP" > /dev/null 2>&1 && fail "$DOCS_TAP left behind" || pass "the guide's host port is gone"

# README: scripts/run.sh, its QEMU lines pasted as printed.
echo "  -- scripts/run.sh"
RUNDIR=$WORK/runsh
(cd "$ROOT" && setsid scripts/run.sh "$RUNDIR" > "$WORK/run.out" 2> "$WORK/run.err") &
RUN_PID=$!; PIDS+=("$RUN_PID")
for _ in $(seq 1200); do [ -S "$RUNDIR/control.sock" ] && break; sleep 0.1; done
[ -S "$RUNDIR/control.sock" ] && pass "run.sh serves (sockets in $RUNDIR)" || { fail "run.sh did not start: $(tail -5 "$WORK/run.err")"; finish; exit 1; }
vm1=$(grep -A1 '^# vale0:vm1' "$WORK/run.out" | tail -1); vm2=$(grep -A1 '^# vale0:vm2' "$WORK/run.out" | tail -1)
[ -n "$vm1" ] && [ -n "$vm2" ] && pass "run.sh printed a QEMU command line per port" || fail "no QEMU lines: $(cat "$WORK/run.out")"
(eval "timeout 300 $vm1" < /dev/null > "$WORK/vm1.console" 2>&1) & G1=$!
(eval "timeout 300 $vm2" < /dev/null > "$WORK/vm2.console" 2>&1) & G2=$!
wait "$G2"
grep -a "VN:\|packets transmitted" "$WORK/vm2.console" | tr -d '\r' | sed 's/^/    vm2: /'
expect_eq "vm2 -> vm1 ping replies (run.sh's lines as printed)" "$(grep -a 'packets transmitted' "$WORK/vm2.console" | tr -d '\r' | awk '{print $4}')" 5
kill "$G1" 2>/dev/null; pkill -f "$RUNDIR/vale0/vm1.sock" 2>/dev/null; wait "$G1" 2>/dev/null
RUN_DAEMON=$(pgrep -f "vhost-netmap serve --socket-dir $RUNDIR")
kill -TERM $RUN_DAEMON 2>/dev/null; wait "$RUN_PID"
[ ! -e "$RUNDIR/vale0/vm1.sock" ] && [ ! -e "$RUNDIR/control.sock" ] && pass "run.sh's daemon stopped and removed its sockets" || fail "run.sh left sockets: $(ls -R "$RUNDIR")"
finish
