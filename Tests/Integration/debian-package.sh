#!/usr/bin/env bash
# The Debian package, built by scripts/build-deb.sh, installed on this machine and removed again:
#  1. lintian reports no error or warning; the unit passes systemd-analyze verify;
#  2. installed: its user, files, conffile; the unit's command, run as systemd would run it (its
#     user and group, no capabilities, no new privileges, its umask and limits, its runtime
#     directory under /tmp instead of /run), serves the configured ports: a front-end that is
#     not root but in group kvm (as QEMU under libvirt) sends N frames through it, counted;
#  3. bash completion and man pages load; purge removes the files, the configuration and the user.
. "$(dirname "$0")/lib.sh"
echo "debian-package"
N=20000
if dpkg -s vhost-netmap > /dev/null 2>&1; then
  echo "  vhost-netmap is installed on this machine already: not touching it"; fail "package already installed"; finish; exit 1
fi
purge() { dpkg -s vhost-netmap > /dev/null 2>&1 && dpkg --purge vhost-netmap > "$WORK/purge.log" 2>&1; }
trap 'purge; rm -rf "/tmp/vn-pkg-run.$$"; cleanup' EXIT

scripts_dir="$ROOT/scripts"
if ! sh "$scripts_dir/build-deb.sh" "$WORK/dist" > "$WORK/build.log" 2>&1; then fail "build-deb.sh: $(tail -3 "$WORK/build.log")"; finish; exit 1; fi
DEB=$(ls "$WORK"/dist/vhost-netmap_*.deb)
pass "$(tail -1 "$WORK/build.log")"
lintian "$DEB" > "$WORK/lintian.log" 2>&1
problems=$(grep -cE '^(E|W): ' "$WORK/lintian.log")
expect_eq "lintian errors and warnings" "$problems" 0
[ "$problems" -eq 0 ] || grep -E '^(E|W): ' "$WORK/lintian.log" | head -5

# 2. Installed.
dpkg -i "$DEB" > "$WORK/install.log" 2>&1 || fail "dpkg -i: $(tail -3 "$WORK/install.log")"
id vhost-netmap > /dev/null 2>&1 && pass "user vhost-netmap: $(id vhost-netmap)" || fail "no user vhost-netmap"
UNIT=/usr/lib/systemd/system/vhost-netmap.service
for unit in "$UNIT" /usr/lib/systemd/system/vhost-netmap-libvirt.service; do
  systemd-analyze verify "$unit" > "$WORK/verify.log" 2>&1 && pass "systemd-analyze verify $unit" || fail "unit: $(head -3 "$WORK/verify.log")"
done
# libvirt's C API lives in a binary of its own, which `vhost-netmap libvirt` runs.
/usr/bin/vhost-netmap libvirt watch --help > "$WORK/watch-help.log" 2>&1 && grep -q 'USAGE: vhost-netmap libvirt watch' "$WORK/watch-help.log" \
  && pass "vhost-netmap libvirt runs /usr/libexec/vhost-netmap/vhost-netmap-libvirt" || fail "vhost-netmap libvirt: $(head -3 "$WORK/watch-help.log")"
ldd /usr/bin/vhost-netmap | grep -q libvirt && fail "the daemon's binary loads libvirt"
/usr/bin/vhost-netmap --help > /dev/null && pass "/usr/bin/vhost-netmap runs (no toolchain needed: $(ldd /usr/bin/vhost-netmap | grep -c swift) Swift libraries loaded)" || fail "vhost-netmap does not run"
if ldd /usr/bin/vhost-netmap | grep -q swift || nm -D /usr/bin/vhost-netmap 2>/dev/null | grep -qi icu; then fail "Swift runtime or ICU loaded dynamically"; fi
python3 -c "import json,sys; d=json.load(open('/usr/share/qemu/vhost-user/50-vhost-netmap.json')); sys.exit(d['binary'] != '/usr/bin/vhost-netmap')" \
  && pass "QEMU descriptor names /usr/bin/vhost-netmap" || fail "QEMU descriptor"
cat > /etc/vhost-netmap/vhost-netmap.conf <<EOF
# written by debian-package.sh
port vale0:a
port vale0:b
metrics 127.0.0.1:0
EOF

# The unit's settings, read from the installed unit.
unit_value() { sed -n "s/^$1=//p" "$UNIT" | tail -1; }
exec_start=$(unit_value ExecStart)
# (outside $WORK, which only root may enter)
RUN=/tmp/vn-pkg-run.$$
mkdir -p "$RUN" && chown "$(unit_value User):$(unit_value Group)" "$RUN" && chmod "$(unit_value RuntimeDirectoryMode)" "$RUN"
command=${exec_start//\/run\/$(unit_value RuntimeDirectory)/$RUN}
nofile=$(unit_value LimitNOFILE); memlock=$(unit_value LimitMEMLOCK); [ "$memlock" = infinity ] && memlock=unlimited
# systemd (with CAP_SYS_RESOURCE) sets the unit's limits; a test shell without it keeps its own
# hard limits where they are lower, and says so.
if ! prlimit --nofile="$nofile" --memlock="$memlock" true 2> /dev/null; then
  echo "  (no CAP_SYS_RESOURCE here: limits kept at nofile $(ulimit -Hn), memlock $(ulimit -Hl) KiB instead of the unit's $nofile, $memlock)"
  nofile=$(ulimit -Hn); memlock=$(($(ulimit -Hl) * 1024))
fi
[ -z "$(unit_value CapabilityBoundingSet)" ] || fail "the unit grants capabilities by default"
prlimit --nofile="$nofile" --memlock="$memlock" -- \
  setpriv --reuid "$(unit_value User)" --regid "$(unit_value Group)" --init-groups --bounding-set -all --inh-caps -all --no-new-privs \
  -- sh -c "umask $(unit_value UMask); exec $command" > "$WORK/unit.log" 2>&1 &
UNIT_PID=$!
PIDS+=("$UNIT_PID")
for _ in $(seq 100); do [ -S "$RUN/control.sock" ] && break; sleep 0.05; done
[ -S "$RUN/vale0/a.sock" ] && pass "the unit's command serves $RUN/vale0/a.sock" || { fail "not serving: $(tail -3 "$WORK/unit.log")"; finish; exit 1; }
expect_eq "socket owner, group and mode" "$(stat -c '%U %G %A' "$RUN/vale0/b.sock")" "vhost-netmap kvm srwxrwx---"

# A front-end as QEMU runs under libvirt: not root, in group kvm.
as_qemu() { setpriv --reuid nobody --regid kvm --clear-groups --no-new-privs -- "$@"; }
as_qemu /usr/bin/vhost-netmap-pkt-gen -i "vhost-user:$RUN/vale0/b.sock" -f rx -n $N -W -w 0 > "$WORK/rx.out" 2> "$WORK/rx.err" & RX=$!
PIDS+=("$RX")
sleep 0.5
as_qemu timeout 120 /usr/bin/vhost-netmap-pkt-gen -i "vhost-user:$RUN/vale0/a.sock" -f tx -n $N -R 100000 -w 1 -D 02:00:00:00:00:99 > "$WORK/tx.out" 2> "$WORK/tx.err" \
  || fail "pkt-gen tx: $(tail -1 "$WORK/tx.err")"
wait $RX
received=$(awk '/^Received/{print $2}' "$WORK/rx.out")
stats_json=$(/usr/bin/vhost-netmap stats --control "$RUN/control.sock")
dropped=$(echo "$stats_json" | python3 -c 'import json,sys; print([p for s in json.load(sys.stdin)["switches"] for p in s["ports"] if p["name"]=="vale0:b"][0]["counters"]["dropNoRoom"])')
expect_eq "frames received + dropped for no room, through the unit's daemon" "$((received + dropped))" $N
echo "  (received $received, dropped $dropped)"
URL=$(sed -n 's|.*metrics on \(http://[^ ]*\)$|\1|p' "$WORK/unit.log")
curl -s "$URL" | grep -q '^vhost_netmap_port_in_packets_total{switch="vale0",port="vale0:a",kind="vhost-user"} '"$N"'$' \
  && pass "metrics from the configuration's metrics line" || fail "metrics at '$URL'"
kill -TERM "$UNIT_PID"; wait "$UNIT_PID"; rc=$?
expect_eq "exit status on SIGTERM (systemd's stop)" "$rc" 0
[ ! -e "$RUN/vale0/a.sock" ] && pass "sockets removed on stop" || fail "sockets left behind"

# 3. Completion, man pages, purge.
bash -c 'source /usr/share/bash-completion/completions/vhost-netmap && complete -p vhost-netmap' > /dev/null 2>&1 \
  && pass "bash completion loads" || fail "bash completion"
for page in vhost-netmap vhost-netmap-serve vhost-netmap-pkt-gen vhost-netmap-libvirt vhost-netmap-libvirt-watch vhost-netmap-libvirt-attach; do
  out=$(MANWIDTH=80 man --warnings -l "/usr/share/man/man1/$page.1.gz" 2>&1 > /dev/null)
  [ -z "$out" ] && pass "man $page renders without warnings" || fail "man $page: $out"
done
dpkg --purge vhost-netmap > "$WORK/purge.log" 2>&1 || fail "purge: $(tail -2 "$WORK/purge.log")"
left=$(ls /usr/bin/vhost-netmap /usr/libexec/vhost-netmap /etc/vhost-netmap "$UNIT" 2>/dev/null | wc -l)
expect_eq "files left after purge" "$left" 0
id vhost-netmap > /dev/null 2>&1 && fail "user vhost-netmap left after purge" || pass "user removed by purge"
finish
