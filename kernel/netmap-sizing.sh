#!/bin/sh
# Prints netmap module options for VM back-ends: PORTS vhost-user ports on VALE switches, each
# with QUEUES queue pairs and SLOTS slots per ring, and NICS NIC/host/pipe ports on the global
# allocator. The arithmetic is in kernel/README.md ("Sizing").
# usage: kernel/netmap-sizing.sh PORTS QUEUES SLOTS [NICS=2] [NIC_RINGS=4]
set -eu
ports=$1; queues=$2; slots=$3; nics=${4:-2}; nic_rings=${5:-4}
[ "$queues" -ge 1 ] && [ "$queues" -le 16 ] || { echo "QUEUES must be 1..16 (VALE's limit)" >&2; exit 1; }
[ "$slots" -ge 64 ] && [ "$slots" -le 4096 ] || { echo "SLOTS must be 64..4096 (VALE's limit)" >&2; exit 1; }
# Per VALE port (private allocator): Q TX + Q RX rings, plus one fake host ring each way.
rings=$((2 * queues + 2))
# Ring object: 256-byte header + 16 bytes per slot, rounded up to a page.
ring_bytes=$(( (256 + 16 * slots + 4095) / 4096 * 4096 ))
[ "$ring_bytes" -lt 20480 ] && ring_bytes=20480
# Buffers: one per slot of every ring, plus 25% for frames in flight between rings, plus 2 reserved.
bufs=$(( rings * slots * 5 / 4 + 2 ))
# Global allocator: NIC ports with their host rings.
g_rings=$(( nics * (2 * nic_rings + 2) ))
[ "$g_rings" -lt 200 ] && g_rings=200
g_bufs=$(( g_rings * slots * 5 / 4 + 2 ))
[ "$g_bufs" -lt 163840 ] && g_bufs=163840
mem_priv=$(( ports * (rings * ring_bytes + bufs * 2048) / 1048576 ))
mem_global=$(( (g_rings * 36864 + g_bufs * 2048) / 1048576 ))
echo "# $ports VALE ports x $queues queue pair(s) x $slots slots: ~${mem_priv} MiB private; global ~${mem_global} MiB"
echo "options netmap priv_if_num=2 priv_ring_num=$rings priv_ring_size=$ring_bytes priv_buf_num=$bufs priv_buf_size=2048 if_num=100 ring_num=$g_rings ring_size=36864 buf_num=$g_bufs buf_size=2048"
