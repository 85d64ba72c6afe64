#!/bin/sh
# The main job: builds vhost-netmap and serves two VM ports, vale0:vm1 and vale0:vm2, on the
# embedded VALE switch, after printing complete QEMU command lines that boot a test guest on each
# (on this machine: the accelerator and the MSI-X setting are detected). Stop it with Ctrl-C
# (SIGINT) or SIGTERM: it removes its sockets.
# usage: scripts/run.sh [SOCKET_DIR]     (default /run/vhost-netmap: the sockets are
#        SOCKET_DIR/vale0/vm1.sock, SOCKET_DIR/vale0/vm2.sock and SOCKET_DIR/control.sock)
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh guest
LOG=${TMPDIR:-/tmp}/vhost-netmap-build.log
echo "building (swift build -c release; log: $LOG)"
if ! swift build -c release > "$LOG" 2>&1; then
  grep -E "error|warning" "$LOG" | head -20 >&2
  echo "run.sh: the build failed (full log: $LOG); not starting an old binary" >&2
  exit 1
fi
BIN=$(pwd)/.build/release/vhost-netmap
DIR=${1:-/run/vhost-netmap}
export VHOST_NETMAP_DIR="$DIR"
IMAGE=${GUEST_IMAGE:-/tmp/vhost-netmap-guest}
cat <<INFO

Each guest below boots a small test image (build it once: qemu-glue/guest/build-image.sh $IMAGE);
vm1 (10.0.0.2) waits, vm2 (10.0.0.3) pings it 5 times. Run each in its own terminal, after the
back-end is up; for your own guest replace -kernel/-initrd/-append with its disk (-drive file=...).
INFO
n=0
for vm in vm1 vm2; do
  n=$((n + 1))
  if [ $vm = vm1 ]; then job="vn.mode=wait vn.secs=60"; else job="vn.mode=ping vn.peer=10.0.0.2 vn.count=5"; fi
  echo ""
  echo "# vale0:$vm"
  echo "$("$BIN" qemu-args --port "vale0:$vm" --memory 512M --command) -no-reboot" \
       "-kernel $IMAGE/vmlinux -initrd $IMAGE/initramfs.cpio.gz" \
       "-append 'console=ttyS0 panic=-1 quiet vn.ip=10.0.0.$((n + 1))/24 $job'"
done
echo ""
if [ "$DIR" != /run/vhost-netmap ]; then
  echo "Other shells find this back-end with: export VHOST_NETMAP_DIR=$DIR"
fi
echo "Counters: $BIN stats    learned addresses: $BIN fdb    ports: $BIN vale -l"
echo ""
exec "$BIN" serve --socket-dir "$DIR" --port vale0:vm1 --port vale0:vm2
