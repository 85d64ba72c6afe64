#!/usr/bin/env bash
# The Prometheus endpoint (--metrics) against curl and Debian's promtool:
#  1. frames from pkt-gen counted: /metrics says what the switch moved, promtool accepts it;
#  2. everything but GET /metrics refused with the right status;
#  3. clients that never read (a 60-port daemon's response is larger than their socket takes)
#     cost the data path nothing: frames still flow, other clients are answered, the 17th
#     concurrent client is told 503, and the stuck ones are cut off after 5 s.
. "$(dirname "$0")/lib.sh"
echo "metrics"
PG=${PKTGEN_BIN:-$ROOT/.build/release/pkt-gen}
PROMTOOL=$(command -v promtool || echo /usr/local/lib/vhost-netmap-test/promtool)
N=20000

extra=()
for i in $(seq 60); do extra+=(--port "vale1:p$i"); done
start_daemon --socket-dir "$WORK" --port "vale0:a=$WORK/a.sock" --port "vale0:b=$WORK/b.sock" "${extra[@]}" --metrics 127.0.0.1:0 || { finish; exit 1; }
URL=$(sed -n 's|.*metrics on \(http://[^ ]*\)$|\1|p' "$WORK/daemon.log")
[ -n "$URL" ] && pass "serving at $URL" || { fail "no metrics line in the log"; finish; exit 1; }
metric() { # metric NAME LABEL-SUBSTRING: the value of the first sample that matches
  grep "^$1{" "$WORK/metrics.txt" | grep -F "$2" | head -1 | awk '{print $NF}'
}

# 1. Counted frames.
"$PG" -i "vhost-user:$WORK/b.sock" -f rx -n $N -W -w 0 > "$WORK/rx.out" 2> "$WORK/rx.err" & RX=$!
wait_for port_ready vale0:b || fail "pkt-gen rx never got ready rings"
curl -sS -o "$WORK/metrics.txt" "$URL"
expect_eq "rx rings running on vale0:b while pkt-gen receives" "$(metric vhost_netmap_port_rings_running 'port="vale0:b",direction="rx"')" 1
expect_eq "front-end connected on vale0:b" "$(metric vhost_netmap_port_front_end_connected 'port="vale0:b"')" 1
timeout 120 "$PG" -i "vhost-user:$WORK/a.sock" -f tx -n $N -R 100000 -w 1 -D 02:00:00:00:00:99 > "$WORK/tx.out" 2> "$WORK/tx.err" || fail "pkt-gen tx: $(tail -1 "$WORK/tx.err")"
wait $RX
curl -sS -o "$WORK/metrics.txt" -D "$WORK/headers.txt" "$URL" || fail "curl $URL"
grep -q "^HTTP/1.1 200" "$WORK/headers.txt" && grep -qi "^Content-Type: text/plain; version=0.0.4" "$WORK/headers.txt" \
  && pass "200, text exposition format 0.0.4" || fail "headers: $(cat "$WORK/headers.txt")"
expect_eq "in_packets of vale0:a" "$(metric vhost_netmap_port_in_packets_total 'port="vale0:a"')" $N
received=$(awk '/^Received/{print $2}' "$WORK/rx.out")
out=$(metric vhost_netmap_port_out_packets_total 'port="vale0:b"')
noroom=$(metric vhost_netmap_port_drops_total 'port="vale0:b",kind="vhost-user",reason="no_room"')
expect_eq "out_packets of vale0:b = what pkt-gen received" "$out" "$received"
expect_eq "out_packets + no_room drops of vale0:b" "$((out + noroom))" $N
expect_eq "front-end connections of vale0:b" "$(metric vhost_netmap_port_front_end_connections_total 'port="vale0:b"')" 1
expect_eq "ports on vale1" "$(metric vhost_netmap_switch_ports 'switch="vale1",kind="vhost-user"')" 60
if "$PROMTOOL" check metrics < "$WORK/metrics.txt" > "$WORK/promtool.out" 2>&1; then
  pass "promtool check metrics: clean ($(grep -c '^# TYPE' "$WORK/metrics.txt") families, $(grep -vc '^#' "$WORK/metrics.txt") samples)"
else
  fail "promtool: $(head -5 "$WORK/promtool.out")"
fi

# 2. Refusals.
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
expect_eq "POST /metrics" "$(status -X POST "$URL")" 405
expect_eq "HEAD-less PUT /metrics" "$(status -X PUT "$URL")" 405
expect_eq "GET /" "$(status "${URL%/metrics}/")" 404
expect_eq "GET /metrics?x=1 (query ignored)" "$(status "$URL?x=1")" 200
expect_eq "HTTP/1.0" "$(status -0 "$URL")" 200
expect_eq "a 9 KiB header" "$(status -H "X-Pad: $(head -c 9000 /dev/zero | tr '\0' a)" "$URL")" 431
HOSTPORT=${URL#http://}; HOSTPORT=${HOSTPORT%/metrics}
raw() { python3 - "$HOSTPORT" "$1" <<'PY'
import socket, sys
host, port = sys.argv[1].rsplit(":", 1)
s = socket.create_connection((host, int(port)), timeout=10)
s.sendall(sys.argv[2].encode().decode("unicode_escape").encode("latin-1"))
print(s.recv(100).split(b"\r\n")[0].decode())
PY
}
expect_eq "a line that is not HTTP" "$(raw 'hello\r\n\r\n')" "HTTP/1.1 400 Bad Request"
expect_eq "HTTP/2 on the request line" "$(raw 'GET /metrics HTTP/2\r\n\r\n')" "HTTP/1.1 505 HTTP Version Not Supported"
expect_eq "a request that never ends (5 s)" "$(raw 'GET /metrics HTTP/1.1\r\nHost: x\r\n')" "HTTP/1.1 408 Request Timeout"

# 3. Clients that never read, while frames flow.
size=$(wc -c < "$WORK/metrics.txt")
python3 - "$HOSTPORT" "$WORK/stuck.out" <<'PY' &
import socket, sys, time
host, port = sys.argv[1].rsplit(":", 1)
clients = []
for i in range(16):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 2048)  # a tiny window: the response cannot all be sent
    s.connect((host, int(port)))
    s.sendall(b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    clients.append(s)
time.sleep(7)  # never read for longer than the server's 5 s
got = []
for s in clients:
    s.settimeout(5)
    n = 0
    try:
        while True:
            chunk = s.recv(65536)
            if not chunk: break
            n += len(chunk)
    except (socket.timeout, ConnectionResetError):
        pass
    got.append(n)
open(sys.argv[2], "w").write(" ".join(map(str, got)) + "\n")
PY
STUCK=$!
sleep 1
expect_eq "a 17th client while 16 are stuck" "$(status "$URL")" 503
"$PG" -i "vhost-user:$WORK/b.sock" -f rx -n $N -W -w 0 > "$WORK/rx2.out" 2> "$WORK/rx2.err" & RX=$!
sleep 0.5
timeout 120 "$PG" -i "vhost-user:$WORK/a.sock" -f tx -n $N -R 100000 -w 1 -D 02:00:00:00:00:99 > "$WORK/tx2.out" 2> "$WORK/tx2.err" || fail "pkt-gen tx: $(tail -1 "$WORK/tx2.err")"
wait $RX
expect_eq "frames taken from vale0:a while the clients were stuck" "$(port_field vale0:a counters.inPackets)" $((2 * N))
wait $STUCK
read -r -a got < "$WORK/stuck.out"
short=0; for n in "${got[@]}"; do [ "$n" -lt "$size" ] && short=$((short + 1)); done
expect_eq "stuck clients cut off before their whole response (of ~$size bytes)" "$short" 16
expect_eq "a client after they were cut off" "$(status "$URL")" 200
finish
