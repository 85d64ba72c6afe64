#!/usr/bin/env bash
# Builds the real netmap kernel module and netmap's own tools for the guest tests, from the
# upstream archive beside the project (../shared/deps/netmap/netmap-*.tar.gz, never copied into
# this repository), against Debian's kernel headers for the kernel the test guest boots
# (the version linux-headers-amd64 points to, so the module's vermagic equals the guest's).
#
# usage: kernel/build-netmap.sh OUTDIR
# Leaves in OUTDIR: netmap.ko pkt-gen vale-ctl ctrl-api-test kernel-version headers/net/netmap*.h
# (the archive's user headers, for comparing our ABI with the real ones). Cached: a second
# run with the same archive and kernel version does nothing. Exit 3 (with a line saying why)
# when the kernel packages cannot be had; 1 on a build failure.
set -eu
OUT=${1:?usage: build-netmap.sh OUTDIR}
mkdir -p "$OUT"; OUT=$(cd "$OUT" && pwd)
HERE=$(cd "$(dirname "$0")" && pwd)
ROOT=$(cd "$HERE/.." && pwd)
ARCHIVE=${NETMAP_ARCHIVE:-$(ls "$ROOT"/../shared/deps/netmap/netmap-*.tar.gz 2>/dev/null | head -1)}
[ -n "$ARCHIVE" ] && [ -f "$ARCHIVE" ] || { echo "build-netmap: no netmap archive at ../shared/deps/netmap (set NETMAP_ARCHIVE)"; exit 3; }

PKG=$(apt-cache depends linux-headers-amd64 2>/dev/null | awk '/Depends: linux-headers-[0-9]/{print $2; exit}')
if [ -z "$PKG" ]; then
  apt-get update -qq >/dev/null 2>&1 || true
  PKG=$(apt-cache depends linux-headers-amd64 2>/dev/null | awk '/Depends: linux-headers-[0-9]/{print $2; exit}')
fi
[ -n "$PKG" ] || { echo "build-netmap: Debian's linux-headers-amd64 cannot be resolved (no package lists?)"; exit 3; }
KV=${PKG#linux-headers-}            # e.g. 6.1.0-57-amd64
FLAVOURLESS=${KV%-amd64}
KDIR=/usr/src/linux-headers-$KV
KSRC=/usr/src/linux-headers-$FLAVOURLESS-common
if [ ! -d "$KDIR" ] || [ ! -d "$KSRC" ]; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$PKG" >/dev/null 2>&1 \
    || { echo "build-netmap: cannot install $PKG"; exit 3; }
fi

STAMP="$(basename "$ARCHIVE") $(sha256sum "$ARCHIVE" | cut -c1-16) $KV"
if [ -f "$OUT/stamp" ] && [ "$(cat "$OUT/stamp")" = "$STAMP" ] && [ -f "$OUT/netmap.ko" ]; then
  echo "build-netmap: cached ($STAMP)"
  exit 0
fi
rm -rf "$OUT"; mkdir -p "$OUT/src"
tar xzf "$ARCHIVE" -C "$OUT/src"
SRC=$(find "$OUT/src" -maxdepth 2 -name configure -printf '%h\n' | head -1)
[ -n "$SRC" ] || { echo "build-netmap: no configure script in $ARCHIVE"; exit 1; }
(
  cd "$SRC"
  ./configure --kernel-dir="$KDIR" --kernel-sources="$KSRC" --no-drivers --enable-ptnetmap \
              --apps=pkt-gen,vale-ctl > "$OUT/configure.log" 2>&1
  make -j"$(nproc)" > "$OUT/make.log" 2>&1
) || { echo "build-netmap: build failed (see $OUT/configure.log and $OUT/make.log)"; tail -20 "$OUT/make.log" 2>/dev/null; exit 1; }
cp "$SRC/netmap.ko" "$OUT/"
cp "$SRC/build-apps/pkt-gen/pkt-gen" "$SRC/build-apps/vale-ctl/vale-ctl" "$SRC/build-utils/ctrl-api-test" "$OUT/"
mkdir -p "$OUT/headers/net"
cp "$SRC"/sys/net/netmap*.h "$OUT/headers/net/"
# modinfo needs kmod; the vermagic string is in the module's .modinfo section as text.
vermagic=$(tr '\0' '\n' < "$OUT/netmap.ko" | sed -n 's/^vermagic=\([^ ]*\).*/\1/p' | head -1)
[ "$vermagic" = "$KV" ] || { echo "build-netmap: netmap.ko vermagic '$vermagic' is not $KV"; exit 1; }
echo "$KV" > "$OUT/kernel-version"
echo "$STAMP" > "$OUT/stamp"
echo "build-netmap: netmap.ko for $KV, pkt-gen, vale-ctl, ctrl-api-test in $OUT"
