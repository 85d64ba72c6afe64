#!/usr/bin/env bash
# A back-end killed with SIGKILL and restarted, again and again, under a QEMU guest (TCG,
# chardev reconnect=1) that receives a TCP stream: the guest takes a 16 MiB file from a peer in
# a network namespace behind a host port while the daemon is killed RESTARTS times; QEMU
# reconnects each time, the rings resume, and the file's SHA-256 in the guest equals the
# sender's. The daemon runs in the peer's namespace on a persistent tap, so the peer's address
# and route survive the kills.
# usage: qemu-restart.sh [RESTARTS=20] [packed]   (packed: the guest uses packed virtqueues;
# they do not resume: QEMU gives no position for a packed ring after a back-end restart, see
# docs/operating.md, so this variant is not in scripts/test.sh)
. "$(dirname "$0")/lib.sh"
RESTARTS=${1:-20}
PACKED=""; [ "${2:-}" = packed ] && PACKED=--packed
echo "qemu-restart: $RESTARTS SIGKILLs under a TCP stream${PACKED:+ (packed rings)}"
TAG=$(($$ % 100000))
NS=vnrs$TAG; TAP=vnrt$TAG
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
STREAM_MIB=16
QPID=""; SENDER=""
rs_cleanup() {
  [ -n "$QPID" ] && { kill -KILL "$QPID" 2>/dev/null; wait "$QPID" 2>/dev/null; }
  [ -n "$SENDER" ] && kill "$SENDER" 2>/dev/null
  ip netns del "$NS" 2>/dev/null
}
trap 'rs_cleanup; cleanup' EXIT
"$ROOT/qemu-glue/guest/build-image.sh" "$IMAGE" > "$WORK/image.log" 2>&1 || { fail "guest image: $(tail -1 "$WORK/image.log")"; finish; exit 1; }
ip netns add "$NS" && ip -n "$NS" link set lo up && ip -n "$NS" tuntap add dev "$TAP" mode tap vnet_hdr \
  && ip -n "$NS" addr add 10.77.0.1/24 dev "$TAP" && ip -n "$NS" link set "$TAP" up || { fail "namespace set-up"; finish; exit 1; }

serve() { # the daemon, in the namespace, on the persistent tap
  ip netns exec "$NS" "$BIN" serve --control "$WORK/control.sock" --port "vale0:guest=$WORK/guest.sock" --host-port "vale0:$TAP" \
    > "$WORK/daemon-$1.log" 2>&1 &
  DAEMON_PID=$!
  PIDS+=("$DAEMON_PID")
  wait_for test -S "$WORK/control.sock"
}
serve 0 || { fail "daemon did not start"; finish; exit 1; }

cat > "$WORK/vn-script" <<'SCRIPT'
#!/bin/sh
echo "VN: listening"
nc -l -p 5000 > /tmp/file
echo "VN: file $(wc -c < /tmp/file) bytes sha256 $(sha256sum /tmp/file | cut -d' ' -f1)"
SCRIPT
chmod 755 "$WORK/vn-script"
(cd "$WORK" && echo vn-script | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$WORK/script.cpio.gz"
cat "$IMAGE/initramfs.cpio.gz" "$WORK/script.cpio.gz" > "$WORK/initramfs.cpio.gz"
qemu-system-x86_64 -accel tcg -smp 1 -nographic -no-reboot -nodefaults -serial "file:$WORK/guest.log" -monitor none -display none \
  $("$BIN" qemu-args --socket "$WORK/guest.sock" --memory 256M --mac 52:54:00:00:77:02 --no-msix --qemu-version 7.2 $PACKED) \
  -kernel "$IMAGE/vmlinux" -initrd "$WORK/initramfs.cpio.gz" \
  -append "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.mode=script vn.ip=10.77.0.2/24 vn.peer=10.77.0.1" > "$WORK/qemu.log" 2>&1 &
QPID=$!
wait_for grep -aqs "VN: listening" "$WORK/guest.log" || { fail "the guest did not come up: $(tail -3 "$WORK/guest.log")"; finish; exit 1; }

python3 -c "import os,sys; sys.stdout.buffer.write(os.urandom($STREAM_MIB << 20))" > "$WORK/file"
SENT_SUM=$(sha256sum "$WORK/file" | cut -d' ' -f1)
ip netns exec "$NS" python3 - "$WORK/file" > "$WORK/sender.log" 2>&1 <<'PY' &
import socket, sys, time
data = open(sys.argv[1], "rb").read()
for attempt in range(50):
    try:
        s = socket.create_connection(("10.77.0.2", 5000), timeout=5)
        break
    except OSError:
        time.sleep(0.5)
s.settimeout(600)
for i in range(0, len(data), 32 << 10):
    s.sendall(data[i:i + (32 << 10)])
    time.sleep(0.1)  # about 50 s: the stream outlasts the restarts
s.shutdown(socket.SHUT_WR)
s.close()
print("sent", len(data))
PY
SENDER=$!
sleep 2
resumed=0
for i in $(seq "$RESTARTS"); do
  kill -0 "$SENDER" 2>/dev/null || { fail "the stream ended before restart $i (make it longer)"; break; }
  kill -KILL "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
  PIDS=("${PIDS[@]/$DAEMON_PID}")
  rm -f "$WORK/control.sock"  # a SIGKILLed daemon cannot remove its sockets
  before=$(grep -c . "$WORK/sender.log" 2>/dev/null)
  serve "$i" || { fail "restart $i: the daemon did not start"; break; }
  if wait_for port_ready vale0:guest && wait_for counter_at_least vale0:guest outPackets 1; then
    resumed=$((resumed + 1))
  else
    fail "restart $i: the guest's rings did not resume ($(grep -i 'broken\|refused' "$WORK/daemon-$i.log" | head -2))"
  fi
  sleep 1
done
expect_eq "restarts after which QEMU reconnected and the rings ran again" "$resumed" "$RESTARTS"
BROKEN=$(cat "$WORK"/daemon-*.log | grep -c "broken")
expect_eq "rings marked broken over all restarts" "$BROKEN" 0
grep -h "resynchronised" "$WORK"/daemon-*.log | head -3 | sed 's/^/    /'
wait "$SENDER" && pass "sender: $(cat "$WORK/sender.log")" || fail "sender failed: $(tail -2 "$WORK/sender.log")"
SENDER=""
for _ in $(seq 1200); do grep -aq "VN: file" "$WORK/guest.log" && break; sleep 0.1; done
grep -a "VN: file" "$WORK/guest.log" | tr -d '\r' | sed 's/^/    guest: /'
expect_eq "file SHA-256 in the guest after $RESTARTS SIGKILLs" "$(grep -a 'VN: file' "$WORK/guest.log" | tr -d '\r' | sed -n 's/.*sha256 //p')" "$SENT_SUM"
finish
