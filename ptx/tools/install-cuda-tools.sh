#!/usr/bin/env bash
# Installs the pinned CUDA 13.0 compiler tools (nvcc, ptxas, NVVM, headers)
# from PyPI into a cached virtualenv and prints the toolkit root (the
# directory holding bin/nvcc) on stdout. Idempotent: a venv whose stamp
# matches the pins is reused without touching the network.
#
#   OXCCL_CUDA_VENV  the virtualenv (default ${XDG_CACHE_HOME:-~/.cache}/oxccl/cuda-13.0-venv)
#
# Every package is pinned and installed with --no-deps: nvidia-cuda-nvcc's
# own requirements are unpinned, and would otherwise pull the newest
# (13.x > 13.0) runtime, NVVM and CRT.
set -euo pipefail

PINS=(
  "nvidia-cuda-nvcc==13.0.88"
  "nvidia-nvvm==13.0.88"
  "nvidia-cuda-crt==13.0.88"
  "nvidia-cuda-runtime==13.0.96"
)
VENV="${OXCCL_CUDA_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxccl/cuda-13.0-venv}"
STAMP="$VENV/.oxccl-pins"
WANT="$(printf '%s\n' "${PINS[@]}")"

find_root() {
  local root
  root="$(ls -d "$VENV"/lib/python3*/site-packages/nvidia/cu13 2>/dev/null | head -n1)"
  [[ -n "$root" && -x "$root/bin/nvcc" && -x "$root/bin/ptxas" ]] && echo "$root"
}

if [[ -f "$STAMP" && "$(cat "$STAMP")" == "$WANT" ]] && root="$(find_root)"; then
  echo "$root"
  exit 0
fi

echo "install-cuda-tools: installing ${PINS[*]} into $VENV" >&2
rm -rf "$VENV"
mkdir -p "$(dirname "$VENV")"
python3 -m venv "$VENV" >&2
"$VENV/bin/python" -m pip install --quiet --no-deps --disable-pip-version-check "${PINS[@]}" >&2
# Fail if anything unpinned arrived.
"$VENV/bin/python" -m pip check >&2 || true
extra="$("$VENV/bin/python" -m pip list --format=freeze --disable-pip-version-check 2>/dev/null | grep -i '^nvidia' | sort)"
want_sorted="$(printf '%s\n' "${PINS[@]}" | sort)"
if [[ "$extra" != "$want_sorted" ]]; then
  echo "install-cuda-tools: installed NVIDIA packages differ from the pins:" >&2
  echo "$extra" >&2
  exit 1
fi
root="$(find_root)" || { echo "install-cuda-tools: nvcc/ptxas not found under $VENV" >&2; exit 1; }
"$root/bin/nvcc" --version | grep -q "release 13.0" || { echo "install-cuda-tools: nvcc is not 13.0" >&2; exit 1; }
echo "$WANT" >"$STAMP"
echo "$root"
