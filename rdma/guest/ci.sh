#!/usr/bin/env bash
# CI's RDMA part (.ci/run calls it after the workspace tests): the verbs feature of oxccl-rdma,
# linted, built, and its tests run inside the Soft-RoCE guest (run.sh). Root, Debian; installs
# what it needs with apt, quietly, and only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=lib.sh
source rdma/guest/lib.sh

# Test targets of oxccl-rdma (cargo test selectors) that run in the guest, built with the verbs
# feature: the unit tests, the verbs smoke test, device choice and the transport suite.
TARGETS=(--lib --test guest_smoke --test device --test transport)
# Arguments for every test binary in the guest (no commas or spaces inside one). One test at a
# time: the guest has two CPUs, and the process tests start several ranks each.
TEST_ARGS=(--test-threads=1)

# Building the verbs feature: ibverbs-sys builds its bundled rdma-core with cmake and make (libnl,
# pkg-config and a Python 3 interpreter), generates bindings with bindgen (libclang) and links the
# system libibverbs (libibverbs-dev).
BUILD_DEPS=(cmake make libclang-dev libibverbs-dev libnl-3-dev libnl-route-3-dev pkg-config python3)

t0=$(now)
step() { echo "--- rdma: $1 ($(since "$t0")s)"; }

step "apt"
apt_ensure "${BUILD_DEPS[@]}" "${GUEST_DEPS[@]}"

# From a cold target directory, clippy and the build below each run ibverbs-sys's build script
# (rdma-core compiled, about a minute on 2 cores): its build-time dependencies resolve to
# different units in check and build mode, whatever the profile. Cached after the first run.
step "clippy --features verbs / rdma"
cargo clippy -p oxccl-rdma --features verbs --all-targets -- -D warnings
cargo clippy -p oxccl-tools -p oxccl-bench --features rdma --all-targets -- -D warnings

step "device errors on this host (no RDMA device here)"
cargo test -p oxccl-rdma --features verbs --test device

step "build the guest tests"
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test -p oxccl-rdma --features verbs --no-run --message-format=json "${TARGETS[@]}" > "$json"
mapfile -t bins < <(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' "$json")
[ ${#bins[@]} -gt 0 ] || { echo "rdma: no test executables built" >&2; exit 1; }
# `oxccl perf --transport rdma` under `oxccl run`: the tools' test, with the oxccl binary it runs.
cargo test -p oxccl-tools --features rdma --test rdma_perf --no-run --message-format=json > "$json"
mapfile -t -O ${#bins[@]} bins < <(grep '"kind":\["test"\]' "$json" | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
oxccl=$(grep '"kind":\["bin"\]' "$json" | grep '"name":"oxccl"' | sed -n 's/.*"executable":"\([^"]*\)".*/\1/p')
[ -x "$oxccl" ] || { echo "rdma: the oxccl binary was not built" >&2; exit 1; }
export GUEST_FILES="$oxccl"

step "run ${#bins[@]} test binaries in the Soft-RoCE guest"
rdma/guest/run.sh "${bins[@]}" ${TEST_ARGS[@]+-- "${TEST_ARGS[@]}"}
step "done"
