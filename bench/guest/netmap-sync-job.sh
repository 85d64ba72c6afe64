#!/bin/sh
# Runs inside the netmap guest (bench/netmap-kernel-bench.sh): frames per second from one
# vhost-user front-end to another through the daemon, for each candidate, rounds interleaved:
#   embedded  two ports of the embedded switch
#   ioctl     kernel mode: each port cross-connected to a kernel VALE port, synced by ioctls
#   kloop     the same, synced through netmap's sync kernel loop
# Prints "VN-BENCH CANDIDATE ROUND RECEIVED SECONDS" per run. Variables: ROUNDS, FRAMES, SIZE.
ROUNDS=${ROUNDS:-3}; FRAMES=${FRAMES:-200000}; SIZE=${SIZE:-60}
VN=/opt/vn; NM=/opt/netmap
export PATH=/bin:/sbin:$VN/bin
mkdir -p /tmp; mount -t tmpfs tmp /tmp
insmod $NM/netmap.ko buf_num=32768 || { echo "VN: FAIL insmod"; exit 1; }
for r in $(seq $ROUNDS); do
  for c in embedded ioctl kloop; do
    rm -f /tmp/*.sock
    case $c in
      embedded) mode="--switch embedded";;
      *) mode="--switch kernel --netmap-sync $c";;
    esac
    vhost-netmap serve $mode --control /tmp/c.sock --port vale0:a=/tmp/a.sock --port vale0:b=/tmp/b.sock > /tmp/d.log 2>&1 & d=$!
    i=0; while [ ! -S /tmp/c.sock ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
    pkt-gen -i vhost-user:/tmp/b.sock -f rx -n $FRAMES -W -w 0 > /tmp/rx.out 2>/dev/null & rx=$!
    sleep 1
    pkt-gen -i vhost-user:/tmp/a.sock -f tx -n $FRAMES -l $SIZE -w 1 > /tmp/tx.out 2>/dev/null
    wait $rx
    line=$(grep '^Received' /tmp/rx.out)
    set -- $line
    echo "VN-BENCH $c $r ${2:-0} $(echo "$line" | sed -n 's/.* in \([0-9.]*\) seconds.*/\1/p')"
    kill -TERM $d; wait $d
  done
done
exit 0
