#!/bin/sh
# /init of the Soft-RoCE guest (PID 1, busybox sh): load the modules, add rxe0 on loopback, export
# RXE_DEV, RXE_GID_INDEX and RXE_ADDR, run every /tests/* binary, print `TEST-RESULT <bin> rc=N`
# for each, power off.
#
# Words VAR=value of the kernel command line arrive here as environment variables (run.sh puts
# them there; values cannot hold spaces):
#   TEST_ARGS     arguments for every test binary, comma-separated (--test-threads=1,--nocapture)
#   TEST_TIMEOUT  seconds per test binary (default 300)
#   RXE_PINGPONG  1: run ibv_rc_pingpong between two processes first (default 0)
# and any others are left in the environment of the tests.
/bin/busybox --install -s /bin
export PATH=/bin:/sbin:/usr/bin:/usr/sbin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
mkdir -p /dev/shm && mount -t tmpfs -o mode=1777 shm /dev/shm   # shared-memory transport (connect_auto)
# No tmpfs over /tmp: the root is already a writable ramfs, and programs the tests run may be
# packed under /tmp (GUEST_FILES keep their host paths, and a checkout may live there).
mkdir -p /tmp /run
ts() { echo "[T+$(cut -d' ' -f1 /proc/uptime)s] $*"; }
ts "init start"
ip link set lo up
for m in $(cat /modules.list); do
  insmod /lib/modules/$m 2>&1 || echo "INSMOD FAILED: $m"
done
ts "modules loaded"
NETDEV=${RXE_NETDEV:-lo}
if [ -e /sys/class/net/eth0 ]; then   # qemu -nic user: slirp's static address
  ip link set eth0 up; ip addr add 10.0.2.15/24 dev eth0
fi
if ! rdma link add rxe0 type rxe netdev $NETDEV; then
  echo "rdma link add on $NETDEV failed; trying eth0"; NETDEV=eth0
  rdma link add rxe0 type rxe netdev eth0 || echo "RDMA LINK ADD FAILED"
fi
rdma link show
ts "rxe0 added on $NETDEV"
ibv_devices
# The RoCE v2 GID that carries an IPv4 address (::ffff:a.b.c.d), as the transport's default picks.
G=; ADDR=127.0.0.1; [ "$NETDEV" = eth0 ] && ADDR=10.0.2.15
P=/sys/class/infiniband/rxe0/ports/1
for i in 0 1 2 3 4 5 6 7; do   # shell builtins only: fork and exec are slow under emulation
  read -r g < $P/gids/$i 2>/dev/null || continue
  read -r t < $P/gid_attrs/types/$i 2>/dev/null || t=
  [ "$g" = 0000:0000:0000:0000:0000:0000:0000:0000 ] && continue
  echo "gid[$i] $g ($t)"
  case "$g" in 0000:0000:0000:0000:0000:ffff:*) [ "$t" = "RoCE v2" ] && [ -z "$G" ] && G=$i;; esac
done
echo "using gid index $G, addr $ADDR"
export RXE_DEV=rxe0 RXE_GID_INDEX=$G RXE_ADDR=$ADDR
export RUST_BACKTRACE=${RUST_BACKTRACE:-1}
if [ "${RXE_PINGPONG:-0}" = 1 ]; then
  ts "pingpong start"
  timeout 120 ibv_rc_pingpong -d rxe0 -g $G > /tmp/srv.log 2>&1 &
  sleep 1
  timeout 120 ibv_rc_pingpong -d rxe0 -g $G $ADDR; echo "pingpong client rc=$?"
  wait; echo "--- server:"; cat /tmp/srv.log
  ts "pingpong done"
fi
# TEST_ARGS, split at commas (globbing off: the arguments are taken literally).
set -f; IFS=,; set -- ${TEST_ARGS:-}; unset IFS; set +f
cd /tmp
for t in /tests/*; do
  [ -x "$t" ] || continue
  ts "TEST $t $*"; timeout ${TEST_TIMEOUT:-300} "$t" "$@"; echo "TEST-RESULT $t rc=$?"
done
ts "all done"
dmesg | grep -iE 'rxe|rdma|infiniband|ib_' | tail -20
echo "=== RXE-RUN-COMPLETE ==="
sync; poweroff -f
