# What run.sh and pairs.sh share (sourced, from the repository root): Open MPI from Debian if
# missing, the harness built into $OUT, and $OXCCL (built here with cargo --release unless set).
mpi_setup() {
    if ! command -v mpicc >/dev/null || ! command -v mpirun >/dev/null; then
        echo "# installing Open MPI (openmpi-bin libopenmpi-dev)"
        local sudo=""
        [ "$(id -u)" -eq 0 ] || sudo=sudo
        $sudo apt-get update -qq
        DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq openmpi-bin libopenmpi-dev >/dev/null
    fi
    mkdir -p "$OUT"
    mpicc -O2 -Wall -o "$OUT/allreduce" bench/mpi/allreduce.c
    if [ -z "${OXCCL:-}" ]; then
        cargo build --release -q -p oxccl-tools
        OXCCL=target/release/oxccl
    fi
}
