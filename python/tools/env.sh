#!/usr/bin/env bash
# Prints the path of oxccl's cached Python environment (a venv with the
# pinned test requirements), creating or updating it first (idempotent: a
# stamp of the requirements skips pip when nothing changed).
#
#   OXCCL_PY_VENV   the venv (default ${XDG_CACHE_HOME:-~/.cache}/oxccl/py-venv)
set -euo pipefail
HERE="$(cd "$(dirname "$0")" && pwd)"
VENV="${OXCCL_PY_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/oxccl/py-venv}"
REQ="$HERE/requirements.txt"
STAMP="$VENV/.oxccl-requirements"
if [[ ! -x "$VENV/bin/python" ]]; then
  python3 -m venv "$VENV" >&2
fi
if ! cmp -s "$REQ" "$STAMP"; then
  "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check -r "$REQ" >&2
  cp "$REQ" "$STAMP"
fi
echo "$VENV"
