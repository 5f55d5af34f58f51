#!/usr/bin/env bash
# Compiles every kernel in ptx/kernels to PTX for sm_80 and sm_90 with the
# pinned CUDA 13.0 nvcc (install-cuda-tools.sh), checks `.version` ≤ 9.0,
# assembles each with `ptxas -v --warning-as-error`, and prints registers,
# shared memory, stack and spills per kernel (full log: target/ptxas/).
#
#   build-ptx.sh           regenerate and fail if ptx/gen differs (CI)
#   build-ptx.sh --update  regenerate and write ptx/gen (commit the result)
set -euo pipefail

HERE="$(cd "$(dirname "$0")" && pwd)"
PTX="$(dirname "$HERE")"
REPO="$(dirname "$PTX")"
MODE="${1:-check}"
ARCHS=(80 90)
MAX_VERSION="9.0"

ROOT="$(bash "$HERE/install-cuda-tools.sh")"
NVCC="$ROOT/bin/nvcc"
PTXAS="$ROOT/bin/ptxas"
export PATH="$ROOT/bin:$PATH"

OUT="$(mktemp -d)"
trap 'rm -rf "$OUT"' EXIT
LOGDIR="$REPO/target/ptxas"
mkdir -p "$LOGDIR"

version_ok() { # "9.0" ≤ MAX_VERSION ?
  awk -v v="$1" -v m="$MAX_VERSION" 'BEGIN { split(v, a, "."); split(m, b, ".");
    exit !((a[1] < b[1]) || (a[1] == b[1] && a[2] <= b[2])) }'
}

fail=0
printf '%-8s %-18s %5s %8s %6s %12s\n' arch kernel regs smem stack "spill st/ld"
for arch in "${ARCHS[@]}"; do
  mkdir -p "$OUT/sm_$arch"
  log="$LOGDIR/ptxas-sm_$arch.log"
  : >"$log"
  for src in "$PTX"/kernels/*.cu; do
    name="$(basename "$src" .cu)"
    ptx="$OUT/sm_$arch/$name.ptx"
    # Relative source path and no -lineinfo: the PTX must not depend on where the repo lives.
    (cd "$PTX/kernels" && "$NVCC" -ptx -arch="sm_$arch" -O3 -std=c++17 "$name.cu" -o "$ptx")
    v="$(awk '$1 == ".version" { print $2; exit }' "$ptx")"
    if ! version_ok "$v"; then
      echo "build-ptx: $name.ptx for sm_$arch has .version $v > $MAX_VERSION (the CUDA 13.0 driver rejects it)" >&2
      fail=1
    fi
    if ! "$PTXAS" -v --warning-as-error -arch="sm_$arch" -O3 "$ptx" -o /dev/null >>"$log" 2>&1; then
      echo "build-ptx: ptxas failed on $name.ptx for sm_$arch:" >&2
      cat "$log" >&2
      exit 1
    fi
  done
  awk -v arch="sm_$arch" '
    /Compiling entry function/ { split($0, q, "'"'"'"); k = q[2] }
    /bytes stack frame/ { stack[k] = $1; st[k] = $5; ld[k] = $9 }
    /Used [0-9]+ registers/ {
      match($0, /Used [0-9]+ registers/); r = substr($0, RSTART + 5, RLENGTH - 15);
      s = 0; if (match($0, /[0-9]+ bytes smem/)) s = substr($0, RSTART, RLENGTH - 11);
      printf "%-8s %-18s %5d %8d %6d %6d/%-5d\n", arch, k, r, s, stack[k], st[k], ld[k]
      if (st[k] + ld[k] > 0) spills = 1
    }
    END { exit spills }' "$log" || echo "build-ptx: note: a kernel spills registers on sm_$arch (see above)" >&2
done
[[ $fail -eq 0 ]] || exit 1

case "$MODE" in
  --update)
    rm -rf "$PTX/gen"
    mkdir -p "$PTX/gen"
    cp -r "$OUT"/sm_* "$PTX/gen/"
    echo "build-ptx: wrote $PTX/gen" >&2
    ;;
  check)
    if ! diff -r "$PTX/gen" "$OUT" >"$LOGDIR/gen.diff" 2>&1; then
      echo "build-ptx: ptx/gen is stale (diff in target/ptxas/gen.diff); run ptx/tools/build-ptx.sh --update and commit" >&2
      head -n 40 "$LOGDIR/gen.diff" >&2
      exit 1
    fi
    echo "build-ptx: ptx/gen matches the sources; every kernel assembled for sm_${ARCHS[*]}" >&2
    ;;
  *)
    echo "usage: build-ptx.sh [--update]" >&2
    exit 2
    ;;
esac
