#!/usr/bin/env bash
# libvirt end to end, with a real libvirtd started by hand (no systemd here): a domain defined from
# `vhost-netmap libvirt-xml` (type qemu, direct kernel boot of the test image) starts; the qemu
# hook asks the back-end to create its port; the guest pings the host stack through a host port;
# a second interface is hot-plugged with `virsh attach-device` onto a port made with `vale -a`;
# destroying the domain makes the hook remove the port it created (and its socket), and only that:
# the hot-plugged port the operator made stays.
. "$(dirname "$0")/lib.sh"
echo "libvirt"
TAG=$(($$ % 100000))
NS=vnL$TAG; TAP=vnl$TAG; DOM=vnlv$TAG
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
HOOK_DIR=/etc/libvirt/hooks/qemu.d
HOOK_CONF=/etc/vhost-netmap/libvirt-hook.conf
STARTED_LIBVIRTD=""
lv_cleanup() {
  virsh -c qemu:///system destroy "$DOM" > /dev/null 2>&1
  virsh -c qemu:///system undefine "$DOM" > /dev/null 2>&1
  if [ -n "$STARTED_LIBVIRTD" ]; then
    pkill -x libvirtd; pkill -x virtlogd; sleep 0.5
  fi
  rm -f "$HOOK_DIR/vhost-netmap" "$HOOK_CONF"
  rmdir /etc/vhost-netmap 2>/dev/null
  ip netns del "$NS" 2>/dev/null
}
trap 'lv_cleanup; cleanup' EXIT
vsh() { virsh -c qemu:///system "$@"; }

"$ROOT/qemu-glue/guest/build-image.sh" "$IMAGE" > "$WORK/image.log" 2>&1 || { fail "guest image: $(tail -1 "$WORK/image.log")"; finish; exit 1; }
# QEMU runs as libvirt-qemu: the sockets' directory must be reachable for it.
chmod 755 "$WORK"
SOCKS=$WORK/sockets
mkdir -p "$SOCKS" && chmod 755 "$SOCKS"

start_daemon --host-port "vale0:$TAP" || { finish; exit 1; }
ip netns add "$NS" && ip link set "$TAP" netns "$NS" && ip -n "$NS" addr add 10.79.0.1/24 dev "$TAP" && ip -n "$NS" link set "$TAP" up \
  || fail "namespace set-up"

# The hook, as an operator installs it, pointed at this test's back-end.
mkdir -p "$HOOK_DIR" /etc/vhost-netmap
install -m 0755 "$ROOT/qemu-glue/libvirt/vhost-netmap-hook" "$HOOK_DIR/vhost-netmap"
printf 'CONTROL=%s\nSOCKET_DIR=%s\n' "$WORK/control.sock" "$SOCKS" > "$HOOK_CONF"

# libvirtd reads its hooks when it starts.
if pgrep -x libvirtd > /dev/null; then pkill -x libvirtd; sleep 1; fi
pgrep -x virtlogd > /dev/null || virtlogd -d
libvirtd -d && STARTED_LIBVIRTD=1
for _ in $(seq 100); do vsh version > /dev/null 2>&1 && break; sleep 0.2; done
vsh version > /dev/null 2>&1 && pass "libvirtd is up" || { fail "libvirtd did not start"; finish; exit 1; }

"$BIN" libvirt-xml --port vale0:vm1 --socket-dir "$SOCKS" --mac 52:54:00:00:79:02 --domain "$DOM" \
  --kernel "$IMAGE/vmlinux" --initrd "$IMAGE/initramfs.cpio.gz" --serial-log "$WORK/serial.log" \
  --cmdline "console=ttyS0 panic=-1 quiet cryptomgr.notests vn.ip=10.79.0.2/24 vn.peer=10.79.0.1 vn.mode=ping vn.count=5 vn.secs=120" \
  > "$WORK/domain.xml"
vsh define "$WORK/domain.xml" > "$WORK/define.log" 2>&1 && pass "domain defined from the generated XML" || fail "define: $(cat "$WORK/define.log")"
vsh start "$DOM" > "$WORK/start.log" 2>&1 && pass "domain started" || fail "start: $(cat "$WORK/start.log")"
expect_eq "the hook created the port" "$("$BIN" vale --switch embedded --control "$WORK/control.sock" -l vale0:vm1)" "vale0:vm1 bridge 0 port 1"
expect_eq "the hook recorded the port it created" "$(cat "$SOCKS/libvirt-hook/$DOM.ports" 2>/dev/null)" "vale0:vm1"
expect_eq "socket group is QEMU's" "$(stat -c %G "$SOCKS/vale0/vm1.sock" 2>/dev/null)" "$(id -gn libvirt-qemu 2>/dev/null || echo kvm)"
# Hot-plug a second interface (onto a port created with vale -a) while the guest runs.
"$BIN" vale --switch embedded --control "$WORK/control.sock" -a "vale0:vm1b=$SOCKS/vale0/vm1b.sock,mode=0660,group=$(id -gn libvirt-qemu 2>/dev/null || echo kvm)" > /dev/null
"$BIN" libvirt-xml --port vale0:vm1b --socket-dir "$SOCKS" --mac 52:54:00:00:79:03 --interface-only > "$WORK/iface.xml"
vsh attach-device "$DOM" "$WORK/iface.xml" --live > "$WORK/attach.log" 2>&1 && pass "virsh attach-device of a second interface" || fail "attach-device: $(cat "$WORK/attach.log")"
hot_connected() { [ "$(port_field vale0:vm1b connected 2>/dev/null)" = true ]; }
wait_for hot_connected || true
expect_eq "QEMU connected the hot-plugged port" "$(port_field vale0:vm1b connected)" true

wait_for bash -c "grep -aq 'VN: ping rc=' '$WORK/serial.log' 2>/dev/null" || fail "the guest never finished pinging"
grep -a "VN:\|packets transmitted" "$WORK/serial.log" | tr -d '\r' | sed 's/^/    guest: /'
expect_eq "guest -> host stack ping replies" "$(grep -a 'packets transmitted' "$WORK/serial.log" | tr -d '\r' | awk '{print $4}')" 5
expect_eq "ping rc" "$(grep -a 'VN: ping rc=' "$WORK/serial.log" | tr -d '\r' | sed 's/.*rc=//')" 0

vsh destroy "$DOM" > /dev/null 2>&1
wait_for bash -c "! '$BIN' vale --switch embedded --control '$WORK/control.sock' -l | grep -q 'vale0:vm1 '" || true
expect_eq "the hook removed the port on release" "$("$BIN" vale --switch embedded --control "$WORK/control.sock" -l | grep -c '^vale0:vm1 ')" 0
[ ! -e "$SOCKS/vale0/vm1.sock" ] && pass "its socket is gone" || fail "vm1.sock still there"
expect_eq "the operator's hot-plug port stays" "$("$BIN" vale --switch embedded --control "$WORK/control.sock" -l | grep -c '^vale0:vm1b ')" 1
[ ! -e "$SOCKS/libvirt-hook/$DOM.ports" ] && pass "the hook's record is gone" || fail "record left: $(cat "$SOCKS/libvirt-hook/$DOM.ports")"
finish
