#!/bin/sh
# Installs vhost-netmap and pkt-gen (built with the Swift runtime linked in, so they run without
# a toolchain) into PREFIX/bin (default /usr/local), and QEMU's back-end descriptor into
# SYSCONFDIR/qemu/vhost-user/ (default /etc; QEMU reads it there). With --libvirt-hook, also the
# libvirt hook into SYSCONFDIR/libvirt/hooks/qemu.d/ (restart libvirtd afterwards).
# usage: [PREFIX=/usr/local] [SYSCONFDIR=/etc] scripts/install.sh [--libvirt-hook]
#        scripts/install.sh --uninstall     removes what it installed
set -eu
cd "$(dirname "$0")/.."
PREFIX=${PREFIX:-/usr/local}
SYSCONFDIR=${SYSCONFDIR:-/etc}
BIN_DIR=$PREFIX/bin
DESCRIPTOR=$SYSCONFDIR/qemu/vhost-user/50-vhost-netmap.json
HOOK=$SYSCONFDIR/libvirt/hooks/qemu.d/vhost-netmap
case "${1:-}" in
  --uninstall)
    rm -f "$BIN_DIR/vhost-netmap" "$BIN_DIR/pkt-gen" "$DESCRIPTOR" "$HOOK"
    echo "removed vhost-netmap, pkt-gen, the QEMU descriptor and the libvirt hook"
    exit 0;;
  --libvirt-hook|"") ;;
  *) sed -n '2,7p' "$0" >&2; exit 64;;
esac
scripts/install-deps.sh
LOG=${TMPDIR:-/tmp}/vhost-netmap-install-build.log
echo "building (swift build -c release --static-swift-stdlib; log: $LOG)"
if ! swift build -c release --static-swift-stdlib --build-path .build-static > "$LOG" 2>&1; then
  grep -E "error" "$LOG" | head -20 >&2
  echo "install.sh: the build failed (full log: $LOG); nothing installed" >&2
  exit 1
fi
install -D -m 0755 .build-static/release/vhost-netmap "$BIN_DIR/vhost-netmap"
install -D -m 0755 .build-static/release/pkt-gen "$BIN_DIR/pkt-gen"
mkdir -p "$(dirname "$DESCRIPTOR")"
sed "s|\"binary\": \"[^\"]*\"|\"binary\": \"$BIN_DIR/vhost-netmap\"|" qemu-glue/qemu/50-vhost-netmap.json > "$DESCRIPTOR"
echo "installed $BIN_DIR/vhost-netmap, $BIN_DIR/pkt-gen and $DESCRIPTOR"
if [ "${1:-}" = --libvirt-hook ]; then
  install -D -m 0755 qemu-glue/libvirt/vhost-netmap-hook "$HOOK"
  echo "installed $HOOK (restart libvirtd: it reads hooks when it starts)"
fi
case ":$PATH:" in *":$BIN_DIR:"*) ;; *) echo "note: $BIN_DIR is not on PATH";; esac
