#!/usr/bin/env bash
# INFLIGHT_SHMFD across SIGKILLs: pkt-gen's own vhost-user front-ends (`,reconnect`: they keep
# their rings and the back-end's inflight buffer, as QEMU's reconnect=1 keeps a guest) send from
# a to b through the daemon while it is killed with SIGKILL and started again RESTARTS times.
# They send the bases QEMU sends after a back-end died (a split ring's used index, a packed
# ring's initial position). After each restart traffic resumes with no ring broken; at the end
# every transmit buffer was completed exactly once (none twice, none never) and no receive
# buffer twice. The packed variant is what the buffer is for: without it a packed ring cannot
# resume (qemu-restart.sh packed, docs/operating.md).
# usage: inflight-restart.sh [RESTARTS=10] [split|packed|both=both]
. "$(dirname "$0")/lib.sh"
RESTARTS=${1:-10}
LAYOUTS=${2:-both}
[ "$LAYOUTS" = both ] && LAYOUTS="split packed"
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}
echo "inflight-restart: $RESTARTS SIGKILLs under pkt-gen traffic ($LAYOUTS rings)"
PORTS=(--log-level "${LOG_LEVEL:-info}" --port "vale0:a=$WORK/a.sock" --port "vale0:b=$WORK/b.sock")

run_layout() { # run_layout split|packed
  local layout=$1 iface=vhost-user resumed=0
  [ "$layout" = packed ] && iface=vhost-user-packed
  start_daemon "${PORTS[@]}" || return
  "$PG" -i "$iface:$WORK/b.sock,reconnect" -f rx > "$WORK/$layout-rx.out" 2> "$WORK/$layout-rx.err" &
  local rx=$!; PIDS+=("$rx")
  wait_for port_ready vale0:b || { fail "$layout: the receiver never got ready rings"; return; }
  "$PG" -i "$iface:$WORK/a.sock,reconnect" -f tx -R 100000 -D 02:00:00:00:00:0b > "$WORK/$layout-tx.out" 2> "$WORK/$layout-tx.err" &
  local tx=$!; PIDS+=("$tx")
  wait_for counter_at_least vale0:b outPackets 5000 || { fail "$layout: no traffic before the first kill"; return; }
  for i in $(seq "$RESTARTS"); do
    kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
    PIDS=("${PIDS[@]/$DAEMON_PID}")
    mv "$WORK/daemon.log" "$WORK/$layout-daemon-$i.log"
    rm -f "$WORK/control.sock"
    sleep 0.$((RANDOM % 5))  # the front-ends notice and retry meanwhile
    start_daemon "${PORTS[@]}" || break
    if wait_for port_ready vale0:a && wait_for port_ready vale0:b && wait_for counter_at_least vale0:b outPackets 2000; then
      resumed=$((resumed + 1))
    else
      fail "$layout restart $i: traffic did not resume"; sed -n '1,30p' "$WORK/daemon.log"
    fi
    for p in a b; do
      local broken tracking; broken=$(port_field vale0:$p device.brokenRings | tr -d ' ')
      [ "$broken" = "[]" ] || fail "$layout restart $i: $p broken rings $broken"
      tracking=$(port_field vale0:$p device.inflight.trackingRings | tr -d ' ')
      [ "$tracking" = "[0,1]" ] || fail "$layout restart $i: $p rings tracking in the inflight buffer: $tracking"
    done
  done
  expect_eq "$layout: restarts after which traffic resumed" "$resumed" "$RESTARTS"
  # The transmitter stops (SIGINT), waits for its ring to drain, then prints its report.
  kill -INT "$tx"; wait "$tx"
  sleep 1
  kill -INT "$rx"; wait "$rx"
  local txr rxr
  txr=$(grep -o "vhost-user: .*" "$WORK/$layout-tx.err" | tail -1)
  rxr=$(grep -o "vhost-user: [0-9]* reconnect.*" "$WORK/$layout-rx.err" | tail -1)
  echo "  tx: $txr"; echo "  rx: $rxr"
  expect_eq "$layout: transmitter reconnects" "$(echo "$txr" | sed -n 's/vhost-user: \([0-9]*\) reconnect.*/\1/p')" "$RESTARTS"
  expect_eq "$layout: receiver reconnects" "$(echo "$rxr" | sed -n 's/vhost-user: \([0-9]*\) reconnect.*/\1/p')" "$RESTARTS"
  expect_eq "$layout: transmit buffers completed twice" "$(echo "$txr" | sed -n 's/.* \([0-9]*\) duplicate.*/\1/p')" 0
  expect_eq "$layout: transmit buffers never completed" "$(echo "$txr" | sed -n 's/.* \([0-9]*\) transmit buffer.*/\1/p')" 0
  expect_eq "$layout: receive buffers completed twice" "$(echo "$rxr" | sed -n 's/.* \([0-9]*\) duplicate.*/\1/p')" 0
  local sent received
  sent=$(awk '/^Sent/{print $2}' "$WORK/$layout-tx.out"); received=$(awk '/^Received/{print $2}' "$WORK/$layout-rx.out")
  echo "  $layout: pkt-gen sent ${sent:-?}, received ${received:-?}"
  [ "${received:-0}" -gt 0 ] || fail "$layout: nothing received"
  local from_region; from_region=$(cat "$WORK/$layout"-daemon-*.log "$WORK/daemon.log" | grep -c "inflight region: resumes")
  [ "$from_region" -ge "$RESTARTS" ] && pass "$layout: rings resumed from the inflight buffer ($from_region ring starts)" \
    || fail "$layout: only $from_region ring starts resumed from the inflight buffer"
  grep -h "inflight region: resumes" "$WORK/$layout"-daemon-*.log | head -2 | sed 's/^/  daemon: /'
  kill -INT "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  PIDS=("${PIDS[@]/$DAEMON_PID}")
  mv "$WORK/daemon.log" "$WORK/$layout-daemon-last.log"
  rm -f "$WORK/control.sock" "$WORK/a.sock" "$WORK/b.sock"
}

for layout in $LAYOUTS; do run_layout "$layout"; done
finish
