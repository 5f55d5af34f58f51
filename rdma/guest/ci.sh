#!/usr/bin/env bash
# CI's RDMA part (.ci/run calls it after the workspace tests): the verbs feature of oxccl-rdma,
# linted, built, and its tests run inside the Soft-RoCE guest (run.sh). Root, Debian; installs
# what it needs with apt, quietly, and only what is missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
# shellcheck source=lib.sh
source rdma/guest/lib.sh

# Test targets of oxccl-rdma (cargo test selectors) that run in the guest, built with the verbs
# feature. The transport's tests go here.
TARGETS=(--lib --test guest_smoke)
# Arguments for every test binary in the guest (no commas or spaces inside one).
TEST_ARGS=()

# Building the verbs feature: ibverbs-sys builds its bundled rdma-core with cmake and make (libnl,
# pkg-config and a Python 3 interpreter), generates bindings with bindgen (libclang) and links the
# system libibverbs (libibverbs-dev).
BUILD_DEPS=(cmake make libclang-dev libibverbs-dev libnl-3-dev libnl-route-3-dev pkg-config python3)

t0=$(now)
step() { echo "--- rdma: $1 ($(since "$t0")s)"; }

step "apt"
apt_ensure "${BUILD_DEPS[@]}" "${GUEST_DEPS[@]}"

# Clippy in the test profile, as the build below: one build of ibverbs-sys (its rdma-core and
# bindgen, minutes) serves both, where the dev profile would build it a second time.
step "clippy --features verbs"
cargo clippy -p oxccl-rdma --features verbs --all-targets --profile test -- -D warnings

step "build the guest tests"
json=$(mktemp)
trap 'rm -f "$json"' EXIT
cargo test -p oxccl-rdma --features verbs --no-run --message-format=json "${TARGETS[@]}" > "$json"
mapfile -t bins < <(sed -n 's/.*"executable":"\([^"]*\)".*/\1/p' "$json")
[ ${#bins[@]} -gt 0 ] || { echo "rdma: no test executables built" >&2; exit 1; }

step "run ${#bins[@]} test binaries in the Soft-RoCE guest"
rdma/guest/run.sh "${bins[@]}" ${TEST_ARGS[@]+-- "${TEST_ARGS[@]}"}
step "done"
