#!/bin/sh
# Builds the Debian package dist/vhost-netmap_VERSION_ARCH.deb with dpkg-deb: the binaries
# (the Swift runtime linked in, Foundation's essentials only: no ICU data), the systemd unit and
# its configuration, QEMU's back-end descriptor, the libvirt hook, bash completion and man pages.
# usage: scripts/build-deb.sh [OUTPUT-DIR]
set -eu
cd "$(dirname "$0")/.."
OUT=${1:-dist}
MAINTAINER=${MAINTAINER:-vhost-netmap developers <vhost-netmap@users.noreply.github.com>}
VERSION=$(sed -n 's/.*static let version = "\(.*\)"/\1/p' Sources/VhostNetmapBackend/Metrics.swift)
ARCH=$(dpkg --print-architecture)
LOG=${TMPDIR:-/tmp}/vhost-netmap-deb-build.log
scripts/install-deps.sh
echo "building $VERSION (swift build -c release --static-swift-stdlib; log: $LOG)"
# Full RELRO with immediate binding (Debian's hardening: lintian's hardening-no-bindnow).
if ! swift build -c release --static-swift-stdlib --build-path .build-static -Xlinker -z -Xlinker relro -Xlinker -z -Xlinker now > "$LOG" 2>&1; then
  grep -E "error" "$LOG" | head -20 >&2
  echo "build-deb.sh: the build failed (full log: $LOG)" >&2
  exit 1
fi
BUILT=.build-static/release
STAGE=$(mktemp -d)
trap 'rm -rf "$STAGE"' EXIT
ROOT=$STAGE/root
DOC=$ROOT/usr/share/doc/vhost-netmap

install -D -m 0755 $BUILT/vhost-netmap "$ROOT/usr/bin/vhost-netmap"
# netmap's own tool is pkt-gen; ours takes the same options under its own name.
install -D -m 0755 $BUILT/pkt-gen "$ROOT/usr/bin/vhost-netmap-pkt-gen"
# libvirt through its C API, in a binary of its own (`vhost-netmap libvirt` runs it): the daemon
# never loads libvirt.
install -D -m 0755 $BUILT/vhost-netmap-libvirt "$ROOT/usr/libexec/vhost-netmap/vhost-netmap-libvirt"
strip --strip-unneeded --remove-section=.comment --remove-section=.note "$ROOT/usr/bin/vhost-netmap" "$ROOT/usr/bin/vhost-netmap-pkt-gen" \
  "$ROOT/usr/libexec/vhost-netmap/vhost-netmap-libvirt"
install -D -m 0644 scripts/debian/vhost-netmap.service "$ROOT/usr/lib/systemd/system/vhost-netmap.service"
install -D -m 0644 scripts/debian/vhost-netmap-libvirt.service "$ROOT/usr/lib/systemd/system/vhost-netmap-libvirt.service"
install -D -m 0644 scripts/debian/vhost-netmap.conf "$ROOT/etc/vhost-netmap/vhost-netmap.conf"
mkdir -p "$ROOT/usr/share/qemu/vhost-user"
sed 's|"binary": "[^"]*"|"binary": "/usr/bin/vhost-netmap"|' qemu-glue/qemu/50-vhost-netmap.json > "$ROOT/usr/share/qemu/vhost-user/50-vhost-netmap.json"
chmod 0644 "$ROOT/usr/share/qemu/vhost-user/50-vhost-netmap.json"
# The hook acts on every domain once linked into libvirt's hooks: the operator chooses
# (docs/operating.md: hook or watcher).
install -D -m 0755 qemu-glue/libvirt/vhost-netmap-hook "$ROOT/usr/share/vhost-netmap/libvirt-hook"

# Bash completion and man pages, from the command's own description (swift-argument-parser).
mkdir -p "$ROOT/usr/share/bash-completion/completions" "$ROOT/usr/share/man/man1"
# (bash-completion sources the file: no #! line)
$BUILT/vhost-netmap --generate-completion-script bash | sed '1{/^#!/d}' > "$ROOT/usr/share/bash-completion/completions/vhost-netmap"
chmod 0644 "$ROOT/usr/share/bash-completion/completions/vhost-netmap"
MANUALS=.build/plugins/GenerateManual/outputs
rm -rf "$MANUALS/vhost-netmap" "$MANUALS/vhost-netmap-libvirt"
swift package --allow-writing-to-package-directory generate-manual --multi-page --date "$(date -u +%Y-%m-%d)" \
  --authors "vhost-netmap developers" --configuration release >> "$LOG" 2>&1 || { echo "build-deb.sh: generate-manual failed (log: $LOG)" >&2; exit 1; }
# Pages are named vhost-netmap-SUB[-SUBSUB] (a NAME without spaces, for whatis); their synopsis
# keeps the command as typed. vhost-netmap-libvirt's pages ("vhost-netmap libvirt ...") replace
# the main command's page of its pass-through `libvirt`. Blank lines are not mdoc.
for page in "$MANUALS"/vhost-netmap/*.1 "$MANUALS"/vhost-netmap-libvirt/*.1; do
  name=$(basename "$page" .1 | tr ' ' '.')
  case "$name" in *.help) continue;; esac
  sub=${name#vhost-netmap}; sub=${sub#.}
  if [ -n "$sub" ]; then
    typed=$(echo "$sub" | tr '.' ' '); dashed=$(echo "$sub" | tr '.' '-')
    sed -e '/^$/d' -e "s/^\.Nm \"vhost-netmap $typed\"\$/.Nm vhost-netmap-$dashed/" -e "0,/^\.Nm\$/s//.Sy \"vhost-netmap $typed\"/" \
      -e 's/vhost-netmap libvirt\.\([a-z-]*\)/vhost-netmap-libvirt-\1/g' -e 's/vhost-netmap\.\([a-z-]*\)/vhost-netmap-\1/g' "$page" \
      | gzip -9n > "$ROOT/usr/share/man/man1/vhost-netmap-$dashed.1.gz"
  else
    sed -e '/^$/d' -e 's/vhost-netmap\.\([a-z-]*\)/vhost-netmap-\1/g' "$page" | gzip -9n > "$ROOT/usr/share/man/man1/vhost-netmap.1.gz"
  fi
done
python3 scripts/debian/pktgen-manpage.py "$BUILT/pkt-gen" "$VERSION" | gzip -9n > "$ROOT/usr/share/man/man1/vhost-netmap-pkt-gen.1.gz"
chmod 0644 "$ROOT"/usr/share/man/man1/*

install -D -m 0644 docs/operating.md "$DOC/operating.md"
install -D -m 0644 docs/user-guide.md "$DOC/user-guide.md"
install -D -m 0644 scripts/debian/host-ports.conf "$DOC/examples/host-ports.conf"
install -D -m 0644 scripts/debian/copyright "$DOC/copyright"
printf 'vhost-netmap (%s) unstable; urgency=medium\n\n  * Built from the vhost-netmap repository.\n\n -- %s  %s\n' \
  "$VERSION" "$MAINTAINER" "$(date -u -R)" | gzip -9n > "$DOC/changelog.gz"
chmod 0644 "$DOC/changelog.gz"

# Depends: the shared libraries the binaries name (DT_NEEDED; not what those load in turn), by
# the packages that hold them, as dpkg-shlibdeps would list them.
libs=$(for b in "$ROOT/usr/bin/vhost-netmap" "$ROOT/usr/bin/vhost-netmap-pkt-gen" "$ROOT/usr/libexec/vhost-netmap/vhost-netmap-libvirt"; do
  for needed in $(readelf -d "$b" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p'); do
    ldd "$b" | awk -v n="$needed" '$1 == n && $3 ~ /^\// {print $3}'
  done
done | sort -u)
depends=$(for l in $libs; do dpkg -S "$(readlink -f "$l")" 2>/dev/null || dpkg -S "$l"; done | cut -d: -f1 | sort -u \
  | while read -r p; do echo "$p (>= $(dpkg-query -W -f='${Version}' "$p" | sed 's/-[^-]*$//'))"; done | paste -sd, - | sed 's/,/, /g')

mkdir -p "$ROOT/DEBIAN"
cat > "$ROOT/DEBIAN/control" <<EOF
Package: vhost-netmap
Version: $VERSION
Architecture: $ARCH
Maintainer: $MAINTAINER
Installed-Size: $(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
Depends: $depends, adduser
Recommends: python3
Suggests: qemu-system-x86, libvirt-daemon-system
Section: net
Priority: optional
Homepage: https://github.com/vhost-netmap/vhost-netmap
Description: vhost-user back-end on netmap/VALE software switches
 vhost-netmap connects QEMU/KVM guests (vhost-user virtio-net: split rings,
 mergeable buffers, offloads, multiqueue, live migration, memory hot-plug) to a
 VALE-compatible learning switch, embedded in the back-end or netmap's kernel
 module, and to the host's stack through TAP interfaces on io_uring.
 .
 The package has the daemon with its systemd unit (configured in
 /etc/vhost-netmap/vhost-netmap.conf), QEMU's back-end descriptor, libvirt
 integration (a watcher on libvirt's C API with its own unit, or a hook),
 Prometheus metrics, packet capture, and vhost-netmap-pkt-gen, a traffic
 generator with netmap pkt-gen's options.
EOF
echo /etc/vhost-netmap/vhost-netmap.conf > "$ROOT/DEBIAN/conffiles"
install -m 0755 scripts/debian/postinst scripts/debian/prerm scripts/debian/postrm "$ROOT/DEBIAN/"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$ROOT/DEBIAN/md5sums"
chmod 0644 "$ROOT/DEBIAN/md5sums" "$ROOT/DEBIAN/control" "$ROOT/DEBIAN/conffiles"

mkdir -p "$OUT"
DEB="$OUT/vhost-netmap_${VERSION}_$ARCH.deb"
dpkg-deb --root-owner-group -Zxz --build "$ROOT" "$DEB" > /dev/null
echo "built $DEB ($(du -h "$DEB" | cut -f1); depends: $depends)"
