#!/usr/bin/env bash
# Small-message latency as pairs: each oxccl run next to an Open MPI run of the same sizes, so
# both meet the machine in the same state (this VM switches between fast and slow states for
# minutes at a time). Prints every pair's times and oxccl/Open MPI ratios, then per size and
# placement the median ratio, the worst ratio and the spread of each side; see README.md.
#
#   bench/mpi/pairs.sh                        # 10 pairs, 2 processes, 8 B and 1 KiB
#   PAIRS=20 RANKS=4 SIZES="8 1K 64K" bench/mpi/pairs.sh
#
# Settings (environment): PAIRS (10), RANKS (2), SIZES ("8 1K"), TRANSPORT (shm), OUT
# (target/mpi), OXCCL (an oxccl binary; default: built here with cargo --release).
set -euo pipefail
cd "$(dirname "$0")/../.."

PAIRS=${PAIRS:-10}
RANKS=${RANKS:-2}
SIZES=${SIZES:-"8 1K"}
TRANSPORT=${TRANSPORT:-shm}
OUT=${OUT:-target/mpi}
# shellcheck source=lib.sh
source bench/mpi/lib.sh
mpi_setup

mpi=(mpirun --allow-run-as-root --oversubscribe -n "$RANKS" "$OUT/allreduce" -r 5)
echo "# $(date -u +%FT%TZ) on $(nproc) cores, $RANKS processes, $PAIRS pairs, sizes: $SIZES"
echo "# oxccl:   $OXCCL run -n $RANKS -- $OXCCL perf all_reduce --transport $TRANSPORT -b S -e S --algo auto --no-membw -w 500 -n 2000 -c 0"
echo "# mpi:     ${mpi[*]} -b S -e S [-i]   (median of 5 repetitions of 1000 calls)"
echo "# Open MPI and oxccl alternate which runs first; ratio = oxccl time / Open MPI time (below 1: oxccl faster)"
printf "%5s %8s %10s %10s %7s %10s %10s %7s\n" pair size ox_oop_us mpi_oop_us ratio ox_ip_us mpi_ip_us ratio
rows="$OUT/pairs-$RANKS.txt"
: >"$rows"
for ((p = 1; p <= PAIRS; p++)); do
    for s in $SIZES; do
        run_ox() {
            "$OXCCL" run -n "$RANKS" --timeout 120 -- "$OXCCL" perf all_reduce --transport "$TRANSPORT" \
                -b "$s" -e "$s" --algo auto --no-membw -w 500 -n 2000 -c 0 --csv 2>>"$OUT/pairs-oxccl.err" |
                grep -v '^collective,' | tail -n 1
        }
        run_mpi() { "${mpi[@]}" -b "$s" -e "$s" "$@" | grep -v '^#' | tail -n 1; }
        if ((p % 2)); then
            ox=$(run_ox); mo=$(run_mpi); mi=$(run_mpi -i)
        else
            mo=$(run_mpi); mi=$(run_mpi -i); ox=$(run_ox)
        fi
        # oxccl CSV: size field 3, out-of-place time field 10, in-place time field 15.
        # Harness: size count time_us algbw busbw wrong.
        bytes=$(echo "$ox" | cut -d, -f3)
        echo "$p $bytes $(echo "$ox" | cut -d, -f10) $(echo "$mo" | awk '{print $3}') $(echo "$ox" | cut -d, -f15) $(echo "$mi" | awk '{print $3}')" >>"$rows"
        tail -n 1 "$rows" | awk '{printf "%5d %8d %10.2f %10.2f %7.2f %10.2f %10.2f %7.2f\n", $1, $2, $3, $4, $3/$4, $5, $6, $5/$6}'
    done
done

echo
echo "# per size and placement over $PAIRS pairs: median and worst of the ratios; each side's median and range (us)"
printf "%8s %-12s %8s %8s %22s %22s\n" size placement median worst oxccl_us "open_mpi_us"
for s in $(awk '{print $2}' "$rows" | sort -n -u); do
    for placement in out-of-place in-place; do
        col=3
        [ "$placement" = in-place ] && col=5
        awk -v s="$s" -v c="$col" '$2 == s { print $c, $(c + 1), $c / $(c + 1) }' "$rows" | sort -k3,3g | awk -v s="$s" -v pl="$placement" '
            { ox[NR] = $1; mp[NR] = $2; r[NR] = $3 }
            function med(a, n,   t, i, j, k) {
                for (i = 1; i <= n; i++) t[i] = a[i]
                for (i = 1; i <= n; i++) for (j = i + 1; j <= n; j++) if (t[j] < t[i]) { k = t[i]; t[i] = t[j]; t[j] = k }
                return n % 2 ? t[(n + 1) / 2] : (t[n / 2] + t[n / 2 + 1]) / 2
            }
            function lo(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] < m) m = a[i]; return m }
            function hi(a, n,   i, m) { m = a[1]; for (i = 2; i <= n; i++) if (a[i] > m) m = a[i]; return m }
            END {
                printf "%8d %-12s %8.2f %8.2f %8.2f [%5.2f,%6.2f] %8.2f [%5.2f,%6.2f]\n", s, pl, med(r, NR), r[NR],
                    med(ox, NR), lo(ox, NR), hi(ox, NR), med(mp, NR), lo(mp, NR), hi(mp, NR)
            }'
    done
done
