#!/usr/bin/env bash
# A back-end killed with SIGKILL during traffic and started again resumes the rings that the
# front-ends kept running: two dpdk-testpmd virtio-user front-ends in server mode (server=1),
# the daemon's ports in client mode; a sends to b all along, the daemon is killed and restarted
# RESTARTS times, and after each restart b receives again. Every restart is counted: the daemon
# reconnects, both ports get ready rings, frames reach b, and no ring was marked broken.
# usage: backend-restart.sh [RESTARTS=5]
. "$(dirname "$0")/lib.sh"
RESTARTS=${1:-5}
echo "backend-restart: $RESTARTS restarts under traffic"
PORTS=(--log-level "${LOG_LEVEL:-info}" --port "vale0:a=$WORK/a.sock,client" --port "vale0:b=$WORK/b.sock,client")
MA=02:00:00:00:00:0a; MB=02:00:00:00:00:0b
# testpmd listens (server=1) before the daemon connects.
start_testpmd a "$WORK/a.sock" $MA 0 ",server=1"
start_testpmd b "$WORK/b.sock" $MB 1 ",server=1"
for s in a b; do wait_for test -S "$WORK/$s.sock" || { fail "testpmd $s did not listen"; finish; exit 1; }; done
start_daemon "${PORTS[@]}" || { finish; exit 1; }
for p in a b; do wait_for port_ready "vale0:$p" || { fail "port $p never got ready rings"; finish; exit 1; }; done
tp b "set fwd rxonly"; tp b "start"
sleep 1
# a sends to b all the time; b's first frames make the switch learn nothing about b, so frames
# to b are flooded (to b only: a is the sender): b counts them either way.
tp a "set eth-peer 0 $MB"; tp a "set fwd txonly"; tp a "start"
wait_for counter_at_least vale0:b outPackets 10000 || { fail "no traffic before the first restart"; finish; exit 1; }
resumed=0
for i in $(seq "$RESTARTS"); do
  kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  PIDS=("${PIDS[@]/$DAEMON_PID}")
  mv "$WORK/daemon.log" "$WORK/daemon-$i.log"
  rm -f "$WORK/control.sock" # a SIGKILLed daemon cannot remove its socket
  before=$(tp_stat b RX-packets)
  start_daemon "${PORTS[@]}" || break
  if wait_for port_ready vale0:a && wait_for port_ready vale0:b && wait_for counter_at_least vale0:b outPackets 10000; then
    sleep 0.5
    after=$(tp_stat b RX-packets)
    if [ "${after:-0}" -gt "${before:-0}" ]; then
      resumed=$((resumed + 1))
    else
      fail "restart $i: b received nothing new (before $before, after $after)"
    fi
  else
    fail "restart $i: traffic did not resume"; sed -n '1,40p' "$WORK/daemon.log"
  fi
  for p in a b; do expect_eq "restart $i: $p broken rings" "$(port_field vale0:$p device.brokenRings | tr -d ' ')" "[]"; done
done
expect_eq "restarts after which traffic resumed" "$resumed" "$RESTARTS"
grep -h "resynchronised\|resumes at" "$WORK"/daemon*.log | head -4 | sed 's/^/  daemon: /'
tp a "stop"
for p in a b; do tp_quit $p; done
finish
