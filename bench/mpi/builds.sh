#!/usr/bin/env bash
# bench/mpi/run.sh as before/after pairs of two oxccl builds: each pair runs the whole
# side-by-side once with each build, alternating which goes first (this VM switches between fast
# and slow states for minutes at a time). Prints per (ranks, size) the median and worst over the
# pairs of oxccl's after/before time ratio (below 1: after is faster; worst: the largest), each build's median time,
# and Open MPI's time over each build's (median over the pairs; above 1: oxccl is faster).
#
#   bench/mpi/builds.sh BEFORE AFTER                # two oxccl binaries, 5 pairs
#   PAIRS=3 RANKS=2 MAX=1M bench/mpi/builds.sh target/before/oxccl target/release/oxccl
#
# Settings (environment): PAIRS (5), OUT (target/mpi-builds: one folder per run); RANKS, MIN,
# MAX, FACTOR and REPS are passed to run.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."

if [ $# -ne 2 ]; then
    echo "usage: $0 BEFORE AFTER (two oxccl binaries)" >&2
    exit 2
fi
BEFORE=$(realpath "$1")
AFTER=$(realpath "$2")
PAIRS=${PAIRS:-5}
OUT=${OUT:-target/mpi-builds}
mkdir -p "$OUT"

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $PAIRS pairs of bench/mpi/run.sh"
echo "# before: $BEFORE"
echo "# after:  $AFTER"
rows="$OUT/rows.txt"
: >"$rows"
for ((p = 1; p <= PAIRS; p++)); do
    if ((p % 2)); then order="before after"; else order="after before"; fi
    for side in $order; do
        bin=$BEFORE
        [ "$side" = after ] && bin=$AFTER
        dir="$OUT/pair-$p-$side"
        OXCCL=$bin OUT=$dir bash bench/mpi/run.sh >"$dir.log" 2>&1 || {
            echo "run.sh failed for $side in pair $p: see $dir.log" >&2
            exit 1
        }
        # side-by-side-N.txt: size mpi_us mpi_bw fix_us fix_bw oxccl_us ...
        for f in "$dir"/side-by-side-*.txt; do
            n=${f##*side-by-side-}
            n=${n%.txt}
            awk -v p="$p" -v s="$side" -v n="$n" '$1 ~ /^[0-9]+$/ { print p, s, n, $1, $6, $2 }' "$f" >>"$rows"
        done
    done
    echo "# pair $p of $PAIRS done" >&2
done

echo
echo "## oxccl after/before time ratio per (ranks, size) over $PAIRS pairs (median, worst);"
echo "## each build's median time (us); Open MPI's time over each build's (median)"
printf "%5s %10s %8s %8s %10s %10s %9s %9s\n" ranks bytes med worst before_us after_us mpi/before mpi/after
awk '
    $2 == "before" { b[$1 " " $3 " " $4] = $5; mb[$1 " " $3 " " $4] = $6 }
    $2 == "after"  { a[$1 " " $3 " " $4] = $5; ma[$1 " " $3 " " $4] = $6 }
    END {
        for (k in b) if ((k in a) && b[k] > 0 && a[k] > 0) {
            split(k, f, " ")
            print f[2], f[3], a[k] / b[k], b[k], a[k], mb[k] / b[k], ma[k] / a[k]
        }
    }' "$rows" | sort -k1,1n -k2,2n | awk '
    function median(arr, n,   i, j, t) {
        for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
        return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
    }
    function flush() {
        if (m == 0) return
        printf "%5d %10d %8.3f %8.3f %10.2f %10.2f %9.2f %9.2f\n", ranks, size, median(r, m), w, median(bt, m), median(at, m), median(xb, m), median(xa, m)
    }
    {
        if ($1 != ranks || $2 != size) { flush(); ranks = $1; size = $2; m = 0; w = 0 }
        m++; r[m] = $3; bt[m] = $4; at[m] = $5; xb[m] = $6; xa[m] = $7
        if ($3 > w) w = $3
    }
    END { flush() }'
