#!/usr/bin/env bash
# Before/after pairs of two oxccl builds on the same machine state: each pair runs every case once
# with each build, alternating which build goes first (this VM switches between fast and slow
# states for minutes at a time). Prints, per case and row (algorithm, size), the median and the
# worst over the pairs of the after/before time ratio, out of place and in place (below 1: the
# after build is faster), and each build's median time.
#
#   bench/compare.sh BEFORE AFTER              # two oxccl binaries, 5 pairs
#   PAIRS=3 CASES="local" bench/compare.sh target/before/oxccl target/release/oxccl
#
# Cases (CASES, default "local shm2"):
#   local  oxccl perf all_reduce --ranks 4 -b 8 -e 64M -f 4 --algo all       (ranks are threads)
#   shm2   oxccl run -n 2 -- oxccl perf all_reduce --transport shm -b 8 -e 1K -f 128 --algo auto
#          -w 5000 -n 200000                          (8 B and 1 KiB, processes; a run takes <0.1 s, and
#          200000 calls give steady medians where 2000 moved by 10-20 % between runs)
# Settings (environment): PAIRS (5), CASES, OUT (target/compare).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -ne 2 ]; then
    echo "usage: $0 BEFORE AFTER (two oxccl binaries)" >&2
    exit 2
fi
BEFORE=$1
AFTER=$2
PAIRS=${PAIRS:-5}
CASES=${CASES:-"local shm2"}
OUT=${OUT:-target/compare}
mkdir -p "$OUT"

run_case() { # binary case -> CSV rows on stdout
    local bin=$1
    case $2 in
    local) "$bin" perf all_reduce --ranks 4 -b 8 -e 64M -f 4 --algo all --no-membw --csv 2>>"$OUT/stderr" ;;
    shm2) "$bin" run -n 2 --timeout 120 -- "$bin" perf all_reduce --transport shm -b 8 -e 1K -f 128 \
        --algo auto --no-membw -w 5000 -n 200000 -c 0 --csv 2>>"$OUT/stderr" ;;
    *)
        echo "unknown case $2" >&2
        exit 2
        ;;
    esac | grep -v '^collective,'
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $PAIRS pairs, cases: $CASES"
echo "# before: $BEFORE"
echo "# after:  $AFTER"
for c in $CASES; do
    rows="$OUT/$c.txt"
    : >"$rows"
    for ((p = 1; p <= PAIRS; p++)); do
        if ((p % 2)); then order="before after"; else order="after before"; fi
        for side in $order; do
            bin=$BEFORE
            [ "$side" = after ] && bin=$AFTER
            # CSV: field 3 size, 8 algo, 10 out-of-place time (us), 15 in-place time (us).
            run_case "$bin" "$c" | awk -F, -v p="$p" -v s="$side" '{ print p, s, $8, $3, $10, $15 }' >>"$rows"
        done
        echo "# $c: pair $p of $PAIRS done" >&2
    done
    echo
    echo "## $c: after/before time ratio per row over $PAIRS pairs (median, worst); each build's median time (us)"
    printf "%-8s %10s %8s %8s %8s %8s %12s %12s\n" algo bytes oop_med oop_worst ip_med ip_worst before_oop after_oop
    # Join each pair's before and after row, then summarize per (algo, size).
    awk '
        $2 == "before" { b_oop[$1 " " $3 " " $4] = $5; b_ip[$1 " " $3 " " $4] = $6 }
        $2 == "after"  { a_oop[$1 " " $3 " " $4] = $5; a_ip[$1 " " $3 " " $4] = $6 }
        END {
            for (k in b_oop) if (k in a_oop) {
                split(k, f, " ")
                print f[2], f[3], a_oop[k] / b_oop[k], a_ip[k] / b_ip[k], b_oop[k], a_oop[k]
            }
        }' "$rows" | sort -k1,1 -k2,2n | awk '
        function median(arr, n,   i, j, t) {
            for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (arr[j] < arr[i]) { t = arr[i]; arr[i] = arr[j]; arr[j] = t }
            return (n % 2) ? arr[(n + 1) / 2] : (arr[n / 2] + arr[n / 2 + 1]) / 2
        }
        function flush() {
            if (n == 0) return
            printf "%-8s %10d %8.3f %8.3f %8.3f %8.3f %12.2f %12.2f\n", algo, size, median(ro, n), wo, median(ri, n), wi, median(bo, n), median(ao, n)
        }
        {
            if ($1 != algo || $2 != size) { flush(); algo = $1; size = $2; n = 0; wo = 0; wi = 0 }
            n++; ro[n] = $3; ri[n] = $4; bo[n] = $5; ao[n] = $6
            if ($3 > wo) wo = $3
            if ($4 > wi) wi = $4
        }
        END { flush() }'
done
