# Shared helpers for the integration tests: a scratch folder, the daemon, dpdk-testpmd
# front-ends driven through FIFOs, and assertions. Every test cleans up what it started.
set -u
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
BIN=${VHOST_NETMAP_BIN:-$ROOT/.build/release/vhost-netmap}
WORK=$(mktemp -d /tmp/vn-it.XXXXXX)
PIDS=()
FAILURES=0

cleanup() {
  for p in "${PIDS[@]}"; do kill -INT "$p" 2>/dev/null; done
  sleep 0.5
  for p in "${PIDS[@]}"; do kill -KILL "$p" 2>/dev/null; wait "$p" 2>/dev/null; done
  for prefix in $(ls "$WORK" 2>/dev/null | sed -n 's/^tp-\(.*\)\.log$/\1/p'); do
    rm -rf "/var/run/dpdk/vnit-$prefix"
  done
  if [ "$FAILURES" -gt 0 ] || [ -n "${KEEP_WORK:-}" ]; then
    echo "  (logs kept in $WORK)"
  else
    rm -rf "$WORK"
  fi
}
trap cleanup EXIT

fail() { echo "  FAIL: $*"; FAILURES=$((FAILURES + 1)); }
pass() { echo "  ok: $*"; }
expect_eq() { # expect_eq WHAT GOT WANT
  if [ "$2" = "$3" ]; then pass "$1 = $2"; else fail "$1: got '$2', want '$3'"; fi
}

# start_daemon ARGS...: the back-end with a control socket in $WORK.
start_daemon() {
  "$BIN" serve --control "$WORK/control.sock" "$@" > "$WORK/daemon.log" 2>&1 &
  DAEMON_PID=$!
  PIDS+=("$DAEMON_PID")
  for _ in $(seq 100); do [ -S "$WORK/control.sock" ] && return 0; sleep 0.05; done
  fail "daemon did not start"; cat "$WORK/daemon.log"; return 1
}

stats() { "$BIN" stats --control "$WORK/control.sock"; }

# stats_field LIST MATCH-KEY NAME KEY: a field (counters.X, device.X or top level) of the entry
# of each switch's LIST ("ports", "hostPorts") whose MATCH-KEY is NAME.
stats_field() {
  stats | python3 -c '
import json, sys
kind, match, name, key = sys.argv[1:5]
for sw in json.load(sys.stdin)["switches"]:
    for p in sw[kind]:
        if p[match] == name:
            v = p
            for k in key.split("."):
                v = v[k]
            print(v if not isinstance(v, bool) else str(v).lower())
' "$1" "$2" "$3" "$4"
}
# port_field PORT KEY: a field of a vhost-user port; host_field TAP KEY: of a host port.
port_field() { stats_field ports name "$1" "$2"; }
host_field() { stats_field hostPorts interface "$1" "$2"; }

# wait_for COMMAND...: retries a test command for up to 60 s.
wait_for() {
  for _ in $(seq 600); do "$@" && return 0; sleep 0.1; done
  return 1
}
port_ready() { [ "$(port_field "$1" device.readyRX 2>/dev/null)" -ge "${2:-1}" ] 2>/dev/null && [ "$(port_field "$1" device.readyTX)" -ge "${2:-1}" ]; }
counter_at_least() { [ "$(port_field "$1" "counters.$2" 2>/dev/null)" -ge "$3" ] 2>/dev/null; }

# start_testpmd NAME SOCKET MAC CPU [DEVARGS] [TESTPMD-ARGS]: an interactive virtio-user
# front-end whose commands come from a FIFO (tp NAME "command").
start_testpmd() {
  local name=$1 sock=$2 mac=$3 cpu=$4 devargs=${5:-} extra=${6:-}
  mkfifo "$WORK/tp-$name.in"
  stdbuf -oL dpdk-testpmd --file-prefix="vnit-$name" --no-pci --no-huge -m 512 --lcores "0@$cpu,1@$cpu" --log-level=lib.eal:error \
    --vdev "net_virtio_user0,path=$sock,mac=$mac$devargs" -- -i --total-num-mbufs=32768 $extra \
    < "$WORK/tp-$name.in" > "$WORK/tp-$name.log" 2>&1 &
  PIDS+=("$!")
  eval "TP_PID_$name=$!"
  exec {fd}> "$WORK/tp-$name.in"
  eval "TP_FD_$name=$fd"
}
tp() { local fd; eval "fd=\$TP_FD_$1"; echo "$2" >&"$fd"; }
tp_quit() {
  local pid; eval "pid=\$TP_PID_$1"
  tp "$1" "quit"
  for _ in $(seq 100); do kill -0 "$pid" 2>/dev/null || return 0; sleep 0.1; done
  kill -INT "$pid" 2>/dev/null
}
# tp_stat NAME RX-packets|TX-packets: the last value testpmd printed for port 0.
tp_stat() {
  tp "$1" "show port stats 0"; sleep 0.5
  grep -a "$2:" "$WORK/tp-$1.log" | tail -1 | awk -v k="$2:" '{for (i = 1; i <= NF; i++) if ($i == k) print $(i + 1)}'
}

# HMP command on a QEMU monitor socket; prints the answer.
hmp() {
  python3 - "$1" "$2" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX)
s.connect(sys.argv[1])
s.settimeout(2)
def drain():
    out = b""
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            out += chunk
            if out.endswith(b"(qemu) "): break
    except socket.timeout:
        pass
    return out
banner = drain()
s.sendall(sys.argv[2].encode() + b"\n")
answer = drain()
with open(sys.argv[1] + ".log", "ab") as log:
    log.write(b"=== " + sys.argv[2].encode() + b"\n" + banner + b"\n---\n" + answer + b"\n")
print(answer.decode(errors="replace").replace("\r", ""))
PY
}

# start_guest_and_echo_peer: the test guest image ($IMAGE), and a daemon with a port for a QEMU
# guest (vale0:guest, $WORK/guest.sock) beside a dpdk-testpmd in icmpecho mode (vale0:echo), which
# answers the guest's ARP and pings as 10.0.0.1.
start_guest_and_echo_peer() {
  "$ROOT/qemu-glue/guest/build-image.sh" "$IMAGE" > "$WORK/image.log" 2>&1 || { fail "guest image: $(tail -1 "$WORK/image.log")"; return 1; }
  start_daemon --port "vale0:guest=$WORK/guest.sock" --port "vale0:echo=$WORK/echo.sock" || return 1
  start_testpmd echo "$WORK/echo.sock" 02:00:00:00:00:01 1
  wait_for port_ready vale0:echo || fail "testpmd never got ready rings"
  tp echo "set fwd icmpecho"
  tp echo "start"
}

finish() {
  echo "  $(basename "$0"): $FAILURES failure(s)"
  [ "$FAILURES" -eq 0 ]
}
