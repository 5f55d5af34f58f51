#!/usr/bin/env bash
# Builds the Python package into the cached environment (env.sh) and runs
# its tests with pytest (python/tests: 2-4 processes each).
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
PY="$(dirname "$HERE")"
VENV="$(bash "$HERE/env.sh")"
export VIRTUAL_ENV="$VENV" PATH="$VENV/bin:$PATH"
(cd "$PY" && maturin develop --release --quiet)
python -c "import oxccl; print('oxccl', oxccl.__version__, 'from', oxccl.__file__)"
cd "$PY" && python -m pytest -q tests "$@"
