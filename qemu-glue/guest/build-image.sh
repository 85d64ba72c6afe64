#!/bin/sh
# Builds a small test guest: Debian's current amd64 kernel (as an ELF vmlinux, which QEMU boots
# through the PVH entry point, skipping the slow decompression under TCG) and a busybox
# initramfs with the virtio modules and qemu-glue/guest/init.
# usage: build-image.sh OUTDIR      (needs: apt-get install busybox-static; python3)
set -eu
OUT=${1:?usage: build-image.sh OUTDIR [PKT_GEN]}
# PKT_GEN: a pkt-gen built with --static-swift-stdlib (swift build -c release --static-swift-stdlib
# --product pkt-gen --build-path .build-static); it goes to /bin/pkt-gen with the glibc libraries
# ldd lists, libstdc++.so.6 and libgcc_s.so.1 (dlopen'ed by glibc, not always listed) and the loader.
PKTGEN=${2:-${PKTGEN:-}}
HERE=$(cd "$(dirname "$0")" && pwd)
mkdir -p "$OUT/deb" "$OUT/root"
[ -x /bin/busybox ] || { echo "build-image: /bin/busybox missing (apt-get install busybox-static)" >&2; exit 1; }
PKG=$(apt-cache depends linux-image-amd64 | awk '/Depends: linux-image-[0-9]/{print $2; exit}')
[ -n "$PKG" ] || { echo "build-image: cannot find linux-image-amd64's kernel package (apt-get update?)" >&2; exit 1; }
KV=${PKG#linux-image-}
if [ ! -d "$OUT/kpkg/lib/modules/$KV" ]; then
  (cd "$OUT/deb" && apt-get download "$PKG" >/dev/null)
  dpkg-deb -x "$OUT"/deb/"$PKG"_*.deb "$OUT/kpkg"
fi
KMOD=$OUT/kpkg/lib/modules/$KV/kernel
R=$OUT/root
rm -rf "$R"; mkdir -p "$R/bin" "$R/sbin" "$R/proc" "$R/sys" "$R/dev" "$R/lib/modules" "$R/tmp"
cp /bin/busybox "$R/bin/busybox"
for a in $(/bin/busybox --list); do [ "$a" = busybox ] || ln -sf busybox "$R/bin/$a"; done
for m in drivers/virtio/virtio_ring drivers/virtio/virtio drivers/virtio/virtio_pci_legacy_dev \
         drivers/virtio/virtio_pci_modern_dev drivers/virtio/virtio_pci net/core/failover \
         drivers/net/net_failover drivers/net/virtio_net; do
  cp "$KMOD/$m.ko" "$R/lib/modules/"
done
cp "$HERE/init" "$R/init"; chmod +x "$R/init"
if [ -n "$PKTGEN" ]; then
  [ -x "$PKTGEN" ] || { echo "build-image: $PKTGEN is not an executable" >&2; exit 1; }
  cp "$PKTGEN" "$R/bin/pkt-gen"
  libs=$(ldd "$PKTGEN" | awk '/=> \//{print $3} /^\t\/lib64/{print $1}')
  for l in $libs /lib/x86_64-linux-gnu/libgcc_s.so.1 /lib/x86_64-linux-gnu/libstdc++.so.6; do
    mkdir -p "$R$(dirname "$l")"
    cp -L "$l" "$R$l"
  done
  mkdir -p "$R/lib64"
  cp -L /lib64/ld-linux-x86-64.so.2 "$R/lib64/ld-linux-x86-64.so.2"
fi
(cd "$R" && find . | busybox cpio -o -H newc 2>/dev/null | gzip -1) > "$OUT/initramfs.cpio.gz"
if [ ! -f "$OUT/vmlinux" ] || [ "$OUT/kpkg/boot/vmlinuz-$KV" -nt "$OUT/vmlinux" ]; then
  python3 - "$OUT/kpkg/boot/vmlinuz-$KV" "$OUT/vmlinux" <<'PY'
import lzma, sys
data = open(sys.argv[1], 'rb').read()
start = data.find(b'\xfd7zXZ\x00')
if start < 0:
    sys.exit("no XZ payload in the kernel image")
open(sys.argv[2], 'wb').write(lzma.LZMADecompressor(format=lzma.FORMAT_XZ).decompress(data[start:]))
PY
fi
echo "guest image: $OUT/vmlinux $OUT/initramfs.cpio.gz (kernel $KV)"
