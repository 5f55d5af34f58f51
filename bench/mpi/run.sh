#!/usr/bin/env bash
# Open MPI's MPI_Allreduce and oxccl's all-reduce side by side, float sum,
# on the same sizes in one run; see README.md beside this file.
#
#   bench/mpi/run.sh                  # 2 and 4 ranks, 8 B .. 256 MiB, x2 steps
#   RANKS="2" MAX=64M FACTOR=4 bench/mpi/run.sh
#
# Settings (environment): RANKS (default "2 4"), MIN (8), MAX (256M),
# FACTOR (2), REPS (5), OUT (target/mpi: raw outputs and the harness binary),
# OXCCL (an oxccl binary; default: built here with cargo --release).
set -euo pipefail
cd "$(dirname "$0")/../.."

RANKS=${RANKS:-"2 4"}
MIN=${MIN:-8}
MAX=${MAX:-256M}
FACTOR=${FACTOR:-2}
REPS=${REPS:-5}
OUT=${OUT:-target/mpi}
MALLOC_FIX=(-x MALLOC_MMAP_MAX_=0 -x MALLOC_TRIM_THRESHOLD_=17179869184)
# Open MPI from Debian if missing, our MPI harness and the oxccl binary.
# shellcheck source=lib.sh
source bench/mpi/lib.sh
mpi_setup

# Processes over shared memory when this oxccl has `run` and `perf --transport`;
# otherwise ranks are threads of one perf process (in-process transport).
if "$OXCCL" run --help >/dev/null 2>&1 && "$OXCCL" perf --help 2>/dev/null | grep -q -- '--transport'; then
    MODE=shm
else
    MODE=local
fi

to_bytes() { # 8, 4K, 256M -> bytes
    local s=$1 n=${1%[kKmMgG]}
    case $s in
    *[kK]) echo $((n << 10)) ;;
    *[mM]) echo $((n << 20)) ;;
    *[gG]) echo $((n << 30)) ;;
    *) echo "$s" ;;
    esac
}
MIN_B=$(to_bytes "$MIN")
MAX_B=$(to_bytes "$MAX")
SIZES=()
for ((s = MIN_B; s <= MAX_B; s *= FACTOR)); do SIZES+=("$s"); done

# The harness's iteration count, reused for oxccl: clamp(64 MiB / size, 2, 1000).
iters_for() {
    local i=$(((64 << 20) / $1))
    ((i < 2)) && i=2
    ((i > 1000)) && i=1000
    echo "$i"
}

# One oxccl perf row (CSV, out-of-place columns) for N ranks and SIZE bytes,
# measured as the harness measures Open MPI: REPS repetitions of `iters`
# calls after one of warm-up, each the slowest rank's mean; the row of the
# median repetition. `oxccl run` binds ranks to cores as mpirun binds its
# ranks (one core each while they do not outnumber the cores).
oxccl_row() {
    local n=$1 size=$2 it r
    it=$(iters_for "$size")
    local perf=(perf all_reduce -b "$size" -e "$size" -d float -o sum --algo auto --no-membw --csv
        -w "$it" -n "$it")
    for ((r = 0; r < REPS; r++)); do
        if [ "$MODE" = shm ]; then
            "$OXCCL" run -n "$n" --timeout 600 -- "$OXCCL" "${perf[@]}" --transport shm
        else
            "$OXCCL" "${perf[@]}" --ranks "$n"
        fi | grep -v '^collective,' | tail -n 1
    done | sort -t, -k10,10g | sed -n "$(((REPS + 1) / 2))p"
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores; sizes $MIN..$MAX x$FACTOR; oxccl mode: $MODE"
if [ "$MODE" = shm ]; then
    echo "# oxccl: $OXCCL run -n N -- $OXCCL perf all_reduce --transport shm --algo auto"
    echo "#        (one process per rank, bound to cores like mpirun's; median of $REPS runs, like the harness)"
else
    echo "# oxccl: $OXCCL perf all_reduce --ranks N --algo auto: ranks are THREADS of one process"
    echo "#        (this build has no 'oxccl run' / 'perf --transport shm'), so this is not process against process"
fi

for n in $RANKS; do
    mpi_cmd=(mpirun --allow-run-as-root --oversubscribe -n "$n")
    echo "# mpi:      ${mpi_cmd[*]} $OUT/allreduce -b SIZE -e SIZE -r $REPS"
    echo "# mpi+fix:  ${mpi_cmd[*]} ${MALLOC_FIX[*]} $OUT/allreduce -b SIZE -e SIZE -r $REPS"
    echo "#           (per size, Open MPI, Open MPI with the fix and oxccl run back to back, so that all"
    echo "#           three see the machine in the same state: this VM's core-to-core latency switches"
    echo "#           between about 0.05 and 0.3 us for minutes at a time)"
    : >"$OUT/mpi-$n.txt"
    : >"$OUT/mpi-fix-$n.txt"
    : >"$OUT/oxccl-$n.csv"
    for s in "${SIZES[@]}"; do
        "${mpi_cmd[@]}" "$OUT/allreduce" -b "$s" -e "$s" -r "$REPS" >>"$OUT/mpi-$n.txt"
        "${mpi_cmd[@]}" "${MALLOC_FIX[@]}" "$OUT/allreduce" -b "$s" -e "$s" -r "$REPS" >>"$OUT/mpi-fix-$n.txt"
        oxccl_row "$n" "$s" >>"$OUT/oxccl-$n.csv" || echo "# oxccl perf failed at $s bytes with $n ranks" >&2
    done

    # Join on size. Harness lines: size count time_us algbw busbw wrong;
    # oxccl CSV: size is field 3, out-of-place time/busbw/#wrong fields 10/12/13.
    # "fix" is Open MPI with the malloc settings (no page faults from its temporary buffer).
    echo
    echo "## $n ranks: all-reduce float sum, busbw in GB/s (2(n-1)/n * size / time), time in us"
    awk '
        FNR == 1 { f++ }
        f == 1 && $1 !~ /^#/ { mt[$1] = $3; mb[$1] = $5; mw[$1] = $6; order[++k] = $1 }
        f == 2 && $1 !~ /^#/ { ft[$1] = $3; fb[$1] = $5; fw[$1] = $6 }
        f == 3 { split($0, c, ","); ot[c[3]] = c[10]; ob[c[3]] = c[12]; ow[c[3]] = c[13] }
        function num(x, f) { return (x == "") ? "n/a" : sprintf(f, x) }
        # busbw(oxccl) / busbw(mpi) = time(mpi) / time(oxccl): from the times, which carry more digits.
        function ratio(tm, to) { return (tm != "" && to > 0) ? sprintf("%.2f", tm / to) : "n/a" }
        END {
            printf "%12s %10s %8s %10s %8s %10s %8s %7s %7s  %s\n", "size(B)", "mpi_us", "mpi_bw",
                "fix_us", "fix_bw", "oxccl_us", "oxccl_bw", "ox/mpi", "ox/fix", "#wrong(mpi,fix,oxccl)"
            for (i = 1; i <= k; i++) {
                s = order[i]
                printf "%12d %10s %8s %10s %8s %10s %8s %7s %7s  %s,%s,%s\n", s, num(mt[s], "%.2f"),
                    num(mb[s], "%.3f"), num(ft[s], "%.2f"), num(fb[s], "%.3f"), num(ot[s], "%.2f"),
                    num(ob[s], "%.3f"), ratio(mt[s], ot[s]), ratio(ft[s], ot[s]), num(mw[s], "%d"),
                    num(fw[s], "%d"), num(ow[s], "%d")
            }
        }' "$OUT/mpi-$n.txt" "$OUT/mpi-fix-$n.txt" "$OUT/oxccl-$n.csv" | tee "$OUT/side-by-side-$n.txt"
done
