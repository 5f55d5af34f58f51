#!/usr/bin/env bash
# Small-message latency of several oxccl builds, split by the state this VM is in: it switches
# between a fast state (a cache line moves between its two cores in tens of ns) and a slow one
# (several times that) for seconds to minutes at a time, and a change that adds a line transfer to
# the critical path shows only in the slow state. Rounds of one short run per build (order rotating),
# for DURATION seconds; each round is classed by the first build's time (slow above SLOW_US), and
# per class the median of every other build's time over the first's is printed.
#
#   bench/states.sh BASE OTHER...         # oxccl binaries; 600 s of rounds
#   DURATION=120 SIZE=1K bench/states.sh target/before/oxccl target/release/oxccl
#
# Each run: oxccl run -n 2 -- oxccl perf all_reduce --transport shm -b SIZE -e SIZE --algo auto
#           -w 5000 -n 100000 -c 0 (2 processes over shared memory), out-of-place time.
# Settings (environment): DURATION (600), SIZE (8), SLOW_US (0.25), OUT (target/states).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 2 ]; then
    echo "usage: $0 BASE OTHER... (oxccl binaries)" >&2
    exit 2
fi
DURATION=${DURATION:-600}
SIZE=${SIZE:-8}
SLOW_US=${SLOW_US:-0.25}
OUT=${OUT:-target/states}
mkdir -p "$OUT"
bins=("$@")
log="$OUT/rounds.txt"
: >"$log"

one() { # binary -> out-of-place time (us)
    "$1" run -n 2 --timeout 120 -- "$1" perf all_reduce --transport shm -b "$SIZE" -e "$SIZE" --algo auto \
        --no-membw -w 5000 -n 100000 -c 0 --csv 2>>"$OUT/stderr" | grep -v '^collective,' | cut -d, -f10
}

echo "# $(date -u +%FT%TZ) on $(nproc) cores, $DURATION s of rounds, $SIZE B, slow: base above $SLOW_US us"
for ((i = 0; i < ${#bins[@]}; i++)); do echo "# build $i: ${bins[$i]}"; done
end=$((SECONDS + DURATION))
r=0
while ((SECONDS < end)); do
    n=${#bins[@]}
    declare -A t=()
    for ((k = 0; k < n; k++)); do
        i=$(((k + r) % n))
        t[$i]=$(one "${bins[$i]}")
    done
    line="$r"
    for ((i = 0; i < n; i++)); do line="$line ${t[$i]}"; done
    echo "$line" >>"$log"
    r=$((r + 1))
done

# rounds.txt: round t0 t1 ... (build order as given)
awk -v slow="$SLOW_US" -v n="${#bins[@]}" '
    function median(arr, m,   i, j, x) {
        for (i = 1; i <= m; i++) for (j = i + 1; j <= m; j++) if (arr[j] < arr[i]) { x = arr[i]; arr[i] = arr[j]; arr[j] = x }
        return (m % 2) ? arr[(m + 1) / 2] : (arr[m / 2] + arr[m / 2 + 1]) / 2
    }
    NF == n + 1 && $2 > 0 {
        s = ($2 > slow) ? "slow" : "fast"
        c[s]++
        base[s, c[s]] = $2
        for (i = 1; i < n; i++) ratio[s, i, c[s]] = $(i + 2) / $2
    }
    END {
        for (s in c) {
            for (k = 1; k <= c[s]; k++) b[k] = base[s, k]
            printf "%s state: %d rounds, build 0 median %.4f us\n", s, c[s], median(b, c[s])
            for (i = 1; i < n; i++) {
                for (k = 1; k <= c[s]; k++) q[k] = ratio[s, i, k]
                printf "  build %d / build 0: median %.3f\n", i, median(q, c[s])
            }
        }
    }' "$log"
