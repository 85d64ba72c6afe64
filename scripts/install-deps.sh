#!/bin/sh
# Installs the Debian packages vhost-netmap needs. With "guest", also what boots the test guest
# (QEMU, busybox for the image); with "test", also the real peers the tests use (DPDK testpmd,
# libvirt, ...). Skips what is installed.
set -eu
need="liburing-dev pkg-config libvirt-dev"
[ "${1:-}" = guest ] && need="$need qemu-system-x86 busybox-static python3"
[ "${1:-}" = test ] && need="$need dpdk-dev qemu-system-x86 busybox-static python3 iproute2 iperf3 iputils-ping libvirt-daemon-system libvirt-clients gcc make curl lintian tcpdump"
missing=""
for p in $need; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ]; then
  echo "installing:$missing"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq $missing >/dev/null
fi
# promtool (checks the metrics endpoint's output) comes in Debian's prometheus package, whose
# server the tests do not want installed and running: only the tool is taken from the package.
PROMTOOL_DIR=/usr/local/lib/vhost-netmap-test
if [ "${1:-}" = test ] && ! command -v promtool >/dev/null && [ ! -x $PROMTOOL_DIR/promtool ]; then
  echo "installing: promtool (from the prometheus package, unpacked)"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO=sudo
  work=$(mktemp -d)
  (cd "$work" && { apt-get download prometheus >/dev/null 2>&1 || { $SUDO apt-get update -qq && apt-get download prometheus >/dev/null; }; } \
     && dpkg-deb -x prometheus_*.deb root && $SUDO install -D -m 0755 root/usr/bin/promtool $PROMTOOL_DIR/promtool)
  rm -rf "$work"
fi
command -v swift >/dev/null || { echo "swift is not on PATH (Swift 6.1 or newer is needed)" >&2; exit 1; }
