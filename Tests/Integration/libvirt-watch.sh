#!/usr/bin/env bash
# libvirt through its C API, with a real libvirtd and no hook installed: `vhost-netmap libvirt
# watch` creates a domain's port when the domain is defined (so QEMU finds its socket when it
# starts), the guest pings through it; `vhost-netmap libvirt attach` makes a second port and
# hot-plugs its interface into the running guest, which pings through that one too; the
# hot-plugged port goes when the guest stops, the defined one when the domain is undefined.
# Also: a port the operator made is used and never removed; a domain defined while the watcher
# was down gets its port when it comes back; the watcher follows libvirtd's restart and remakes
# its ports after the daemon's.
. "$(dirname "$0")/lib.sh"
echo "libvirt watch / attach (C API)"
TAG=$(($$ % 100000))
NS1=vnW$TAG; NS2=vnX$TAG; TAP1=vnw$TAG; TAP2=vnx$TAG
DOM=vnwd$TAG; DOM2=vnwe$TAG; DOM3=vnwf$TAG
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
STARTED_LIBVIRTD=""
WATCH_PID=""
lw_cleanup() {
  [ -n "$WATCH_PID" ] && kill "$WATCH_PID" 2>/dev/null
  for d in "$DOM" "$DOM2" "$DOM3"; do
    virsh -c qemu:///system destroy "$d" > /dev/null 2>&1
    virsh -c qemu:///system undefine "$d" > /dev/null 2>&1
  done
  if [ -n "$STARTED_LIBVIRTD" ]; then pkill -x libvirtd; pkill -x virtlogd; sleep 0.5; fi
  ip netns del "$NS1" 2>/dev/null; ip netns del "$NS2" 2>/dev/null
}
trap 'lw_cleanup; cleanup' EXIT
vsh() { virsh -c qemu:///system "$@"; }
vale_list() { "$BIN" vale --switch embedded --control "$WORK/control.sock" -l 2>/dev/null | awk '{print $1}' | sort | paste -sd' ' -; }
has_port() { "$BIN" vale --switch embedded --control "$WORK/control.sock" -l 2>/dev/null | grep -q "^$1 "; }
no_port() { ! has_port "$1"; }
owned() { grep -v '^#' "$SOCKS/libvirt/owned-ports" 2>/dev/null | paste -sd' ' -; }
# The watcher records what it owns after the pass that made or removed the ports: wait for it.
owned_is() { [ "$(owned)" = "$1" ]; }
start_watch() { # start_watch RESYNC
  "$BIN" libvirt watch --socket-dir "$SOCKS" --control "$WORK/control.sock" --resync "$1" >> "$WORK/watch.log" 2>&1 &
  WATCH_PID=$!
}
domain_xml() { # domain_xml NAME PORT CMDLINE [--qemu-listens]
  "$BIN" libvirt-xml --domain "$1" --port "$2" --socket-dir "$SOCKS" --mac 52:54:00:00:80:02 \
    --kernel "$IMAGE/vmlinux" --initrd "$IMAGE/initramfs.cpio.gz" --serial-log "$WORK/$1.serial.log" --cmdline "$3" ${4:-} > "$WORK/$1.xml"
}

"$ROOT/qemu-glue/guest/build-image.sh" "$IMAGE" > "$WORK/image.log" 2>&1 || { fail "guest image: $(tail -1 "$WORK/image.log")"; finish; exit 1; }
chmod 755 "$WORK"
SOCKS=$WORK/sockets
mkdir -p "$SOCKS" && chmod 755 "$SOCKS"
DAEMON_ARGS=(--socket-dir "$SOCKS" --host-port "vale0:$TAP1" --host-port "vale1:$TAP2")
start_daemon "${DAEMON_ARGS[@]}" || { finish; exit 1; }
for pair in "$NS1 $TAP1 10.81.0.1" "$NS2 $TAP2 10.82.0.1"; do
  set -- $pair
  ip netns add "$1" && ip link set "$2" netns "$1" && ip -n "$1" addr add "$3/24" dev "$2" && ip -n "$1" link set "$2" up || fail "namespace $1"
done

# libvirtd without our hook (the hook test removes its own; make sure none is left).
[ -e /etc/libvirt/hooks/qemu.d/vhost-netmap ] && { fail "a vhost-netmap hook is installed; this test needs none"; finish; exit 1; }
if pgrep -x libvirtd > /dev/null; then pkill -x libvirtd; sleep 1; fi
pgrep -x virtlogd > /dev/null || virtlogd -d
libvirtd -d && STARTED_LIBVIRTD=1
for _ in $(seq 100); do vsh version > /dev/null 2>&1 && break; sleep 0.2; done
vsh version > /dev/null 2>&1 && pass "libvirtd is up" || { fail "libvirtd did not start"; finish; exit 1; }

# Events only (a resync once an hour): every change below is seen through libvirt's events.
start_watch 3600
wait_for grep -q "watching domain events" "$WORK/watch.log" && pass "the watcher connected to libvirtd" || fail "watcher: $(tail -3 "$WORK/watch.log")"

domain_xml "$DOM" vale0:vm "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.ip=10.81.0.2/24 vn.peer=10.81.0.1 vn.mode=ping vn.count=4 vn.secs=150 vn.hotplug=10.82.0.2/24 vn.hotpeer=10.82.0.1"
vsh define "$WORK/$DOM.xml" > /dev/null 2>&1 && pass "domain defined" || fail "define"
wait_for has_port vale0:vm && pass "defining the domain created its port" || fail "no port vale0:vm after define"
wait_for owned_is "vale0:vm"
expect_eq "the watcher owns it" "$(owned)" "vale0:vm"
expect_eq "socket group is QEMU's" "$(stat -c %G "$SOCKS/vale0/vm.sock" 2>/dev/null)" "$(id -gn libvirt-qemu 2>/dev/null || echo kvm)"

vsh start "$DOM" > "$WORK/start.log" 2>&1 && pass "domain started" || fail "start: $(cat "$WORK/start.log")"
wait_for bash -c "grep -aq 'VN: ping rc=' '$WORK/$DOM.serial.log' 2>/dev/null" || fail "the guest never finished its first ping"
expect_eq "guest eth0 -> namespace 1 ping replies" "$(grep -a 'packets transmitted' "$WORK/$DOM.serial.log" | head -1 | tr -d '\r' | awk '{print $4}')" 4

# Hot-plug onto vale1, which only the namespace 2 peer is on.
# (with packed rings: libvirt's <driver packed='on'/> reaches QEMU and the daemon)
"$BIN" libvirt attach "$DOM" --port vale1:hot --packed --socket-dir "$SOCKS" --control "$WORK/control.sock" > "$WORK/attach.log" 2>&1 \
  && pass "libvirt attach: $(cat "$WORK/attach.log")" || fail "attach: $(cat "$WORK/attach.log")"
expect_eq "the hot-plugged port is owned" "$(owned)" "vale0:vm vale1:hot"
wait_for grep -q "port=vale1:hot .*features .*packed rings" "$WORK/daemon.log" && pass "the hot-plugged interface runs packed rings" \
  || fail "vale1:hot: $(grep 'port=vale1:hot .*features' "$WORK/daemon.log" | tail -1)"
wait_for bash -c "grep -aq 'VN: hotplug ping rc=' '$WORK/$DOM.serial.log' 2>/dev/null" || fail "the guest never pinged through eth1"
grep -a "VN:\|packets transmitted" "$WORK/$DOM.serial.log" | tr -d '\r' | sed 's/^/    guest: /'
expect_eq "guest eth1 (hot-plugged) -> namespace 2 ping replies" "$(grep -a 'packets transmitted' "$WORK/$DOM.serial.log" | sed -n 2p | tr -d '\r' | awk '{print $4}')" 4
expect_eq "hot-plug ping rc" "$(grep -a 'VN: hotplug ping rc=' "$WORK/$DOM.serial.log" | tr -d '\r' | sed 's/.*rc=//')" 0
[ "$(port_field vale1:hot counters.outPackets 2>/dev/null || echo 0)" -ge 4 ] && pass "vale1:hot carried the replies to the guest" || fail "vale1:hot counters: $(port_field vale1:hot counters.outPackets)"

# The guest powers off (on_poweroff destroy): the live-only interface is gone, so is its port;
# the defined one stays for the next start.
wait_for bash -c "! virsh -c qemu:///system domstate '$DOM' 2>/dev/null | grep -q running" || fail "the guest did not stop"
wait_for no_port vale1:hot && pass "the hot-plugged port went with the stopped guest" || fail "vale1:hot still there"
wait_for owned_is "vale0:vm"
expect_eq "the defined domain's port stays" "$(owned)" "vale0:vm"

# An operator's port: used, never removed.
"$BIN" vale --switch embedded --control "$WORK/control.sock" -a "vale0:op=$SOCKS/vale0/op.sock" > /dev/null
domain_xml "$DOM3" vale0:op "console=ttyS0"
vsh define "$WORK/$DOM3.xml" > /dev/null 2>&1
wait_for grep -q "vale0:op .*exists already" "$WORK/watch.log" && pass "the operator's port is used as it is" || fail "no note about vale0:op"
vsh undefine "$DOM3" > /dev/null 2>&1
sleep 2
has_port vale0:op && pass "and stays after its domain is undefined" || fail "vale0:op was removed"

# Watcher down while a domain (QEMU listening: the port connects) is defined; back: it gets its port.
kill "$WATCH_PID"; wait "$WATCH_PID"; expect_eq "the watcher exits 0 on SIGTERM" "$?" 0
has_port vale0:vm && pass "stopping the watcher leaves the ports" || fail "vale0:vm went with the watcher"
domain_xml "$DOM2" vale0:srv "console=ttyS0" --qemu-listens
vsh define "$WORK/$DOM2.xml" > /dev/null 2>&1
start_watch 1
wait_for has_port vale0:srv && pass "a domain defined while the watcher was down got its port" || fail "no vale0:srv"

# The daemon restarts: the watcher makes its ports again (resync 1 s).
kill -INT "$DAEMON_PID"; wait "$DAEMON_PID" 2>/dev/null
start_daemon "${DAEMON_ARGS[@]}" || { finish; exit 1; }
wait_for has_port vale0:vm && wait_for has_port vale0:srv && pass "ports remade after the daemon restarted: $(vale_list)" || fail "after restart: $(vale_list)"

# libvirtd restarts: the watcher reconnects and follows events again.
pkill -x libvirtd; sleep 1; libvirtd -d
wait_for bash -c "[ \$(grep -c 'watching domain events' '$WORK/watch.log') -ge 3 ]" && pass "the watcher reconnected to the restarted libvirtd" || fail "no reconnect: $(tail -3 "$WORK/watch.log")"
vsh undefine "$DOM" > /dev/null 2>&1 && vsh undefine "$DOM2" > /dev/null 2>&1
wait_for no_port vale0:vm && wait_for no_port vale0:srv && pass "undefining the domains removed their ports" || fail "left: $(vale_list)"
[ ! -e "$SOCKS/vale0/vm.sock" ] && pass "vm.sock is gone" || fail "vm.sock left"
wait_for owned_is ""
expect_eq "nothing is owned" "$(owned)" ""
# (the operator's vale0:op went with the daemon's restart: nobody made it again, as it should be)
expect_eq "the daemon's ports" "$(vale_list)" "vale0:$TAP1 vale1:$TAP2"
echo "  watcher log:"; sed 's/^/    /' "$WORK/watch.log"
finish
