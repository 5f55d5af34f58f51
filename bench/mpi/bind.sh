#!/bin/sh
# Runs CMD bound to one core per local rank, as Open MPI's mpirun binds by
# default (--bind-to core with up to 2 ranks): rank r on core r mod cores.
# With more ranks than cores nothing is bound (Open MPI binds to the socket
# then, which on one socket is no binding). Used by run.sh for oxccl ranks.
#
#   oxccl run -n N -- bench/mpi/bind.sh CMD...
set -eu
cores=$(nproc)
rank=${OXCCL_LOCAL_RANK:-0}
ranks=${OXCCL_LOCAL_WORLD_SIZE:-${OXCCL_WORLD_SIZE:-1}}
if [ "$ranks" -le 2 ] && [ "$ranks" -le "$cores" ] && command -v taskset >/dev/null; then
    exec taskset -c "$((rank % cores))" "$@"
fi
exec "$@"
