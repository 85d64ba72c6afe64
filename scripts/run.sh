#!/bin/sh
# The main job: builds vhost-netmap and serves two VM ports on the embedded VALE switch vale0,
# printing the QEMU options that attach a VM to each. Stop it with Ctrl-C (SIGINT) or SIGTERM.
# usage: scripts/run.sh [RUNDIR]       (default /run/vhost-netmap)
set -eu
cd "$(dirname "$0")/.."
scripts/install-deps.sh
swift build -c release 2>&1 | tail -1
RUN=${1:-/run/vhost-netmap}
BIN=.build/release/vhost-netmap
mkdir -p "$RUN"
for vm in vm1 vm2; do
  n=$([ $vm = vm1 ] && echo 1 || echo 2)
  echo "QEMU options for vale0:$vm:"
  echo "  $($BIN qemu-args --socket "$RUN/$vm.sock" --memory 1G --mac 52:54:00:00:00:0$n)"
done
echo "(under TCG with Debian's QEMU 7.2 add --no-msix to qemu-args: vectors=0)"
exec "$BIN" serve --control "$RUN/control.sock" \
  --port "vale0:vm1=$RUN/vm1.sock" --port "vale0:vm2=$RUN/vm2.sock"
