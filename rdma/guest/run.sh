#!/usr/bin/env bash
# Run test binaries inside a qemu guest with Soft-RoCE (rxe0 on the guest's loopback): the way to
# test verbs code on a machine with no RDMA device. One cycle (pack, boot, tests, power off) takes
# about 10 s plus the tests, which run at emulation speed: correctness here, never performance.
#
# Usage: rdma/guest/run.sh BIN... [-- TEST-ARG...]
#   rdma/guest/run.sh target/debug/deps/guest_smoke-0123abcd -- --test-threads=1 --nocapture
# Each binary runs in the guest with every TEST-ARG (none may hold a comma or white space), and
# with RXE_DEV (the device), RXE_GID_INDEX (its IPv4-mapped RoCE v2 GID) and RXE_ADDR (its IPv4
# address) set. Exits 0 only if every binary exited 0; prints the guest's console either way.
#
# Environment:
#   W             cache: the unpacked kernel, busybox, kmod (default ~/.cache/oxccl/rxe; fetched
#                 with apt-get download the first time, reused afterwards)
#   GUEST_ENV     "VAR=value ..." more variables for the tests (values without spaces)
#   GUEST_FILES   "/abs/path ..." programs the tests run, put at the same paths in the guest
#   TEST_TIMEOUT  seconds per binary (default 300); BOOT_TIMEOUT: for the whole guest (540)
#   RXE_PINGPONG  1: run ibv_rc_pingpong in the guest before the tests
#   ACCEL, CPU    qemu's accelerator and CPU model (tcg, max)
# Installs what it needs with apt when run as root (qemu-system-x86, ibverbs-utils,
# ibverbs-providers, iproute2); otherwise says what is missing.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
# shellcheck source=lib.sh
source "$HERE/lib.sh"

usage() { sed -n '6,7p' "$0" | sed 's/^# //' >&2; exit 2; }
bins=() args=()
while [ $# -gt 0 ]; do
  case "$1" in
    --) shift; args=("$@"); break ;;
    -h|--help) usage ;;
    *) bins+=("$1"); shift ;;
  esac
done
[ ${#bins[@]} -gt 0 ] || usage
for b in "${bins[@]}"; do
  [ -f "$b" ] && [ -x "$b" ] || { echo "run.sh: $b: not an executable file" >&2; exit 2; }
done
names=$(for b in "${bins[@]}"; do basename "$b"; done | sort)
[ -z "$(uniq -d <<< "$names")" ] || { echo "run.sh: two test binaries with the same name" >&2; exit 2; }
for a in "${args[@]}"; do
  if [[ "$a" =~ [,[:space:]] ]]; then echo "run.sh: test argument '$a' holds a comma or white space" >&2; exit 2; fi
done
test_args=$(IFS=,; echo "${args[*]}")
for e in ${GUEST_ENV:-}; do
  [[ "$e" =~ ^[A-Za-z_][A-Za-z0-9_]*= ]] || { echo "run.sh: GUEST_ENV word '$e' is not VAR=value" >&2; exit 2; }
done

apt_ensure "${GUEST_DEPS[@]}"
W=${W:-$HOME/.cache/oxccl/rxe}
mkdir -p "$W"
t0=$(now)
( flock 9; W=$W "$HERE/fetch.sh" ) 9> "$W/lock"
t_fetch=$(since "$t0")

find "$W" -maxdepth 1 -name 'run.*' -mmin +60 -exec rm -rf {} +   # left by killed runs
RUN=$(mktemp -d "$W/run.XXXXXX")   # one per cycle: runs may share the cache
trap 'rm -rf "$RUN"' EXIT
t1=$(now)
W=$W OUT=$RUN "$HERE/build-initramfs.sh" "${bins[@]}" > "$RUN/pack.log" 2>&1 || { cat "$RUN/pack.log"; exit 2; }
t_pack=$(since "$t1")

t2=$(now)
append="RXE_PINGPONG=${RXE_PINGPONG:-0} TEST_TIMEOUT=${TEST_TIMEOUT:-300}${test_args:+ TEST_ARGS=$test_args} ${GUEST_ENV:-}"
qemu_rc=0
W=$W "$HERE/boot.sh" "$RUN/initrd.gz" "$RUN/console.log" "$append" || qemu_rc=$?
t_guest=$(since "$t2")
tr -d '\r' < "$RUN/console.log" > "$W/console.log"   # the last run's console, kept

LOG=$W/console.log
if grep -q 'init start' "$LOG"; then sed -n '/init start/,$p' "$LOG"; else tail -50 "$LOG"; fi
echo "--- guest: fetch ${t_fetch}s, pack ${t_pack}s ($(sed -n 's/^initrd: //p' "$RUN/pack.log")), boot and tests ${t_guest}s, total $(since "$t0")s"
if ! grep -q '=== RXE-RUN-COMPLETE ===' "$LOG"; then
  echo "FAILED: the guest did not finish (qemu rc=$qemu_rc; 124: past BOOT_TIMEOUT)"; exit 1
fi
passed=$(grep -c 'TEST-RESULT .* rc=0$' "$LOG" || true)
results=$(grep -c 'TEST-RESULT .* rc=' "$LOG" || true)
if [ "$results" -ne ${#bins[@]} ] || [ "$passed" -ne ${#bins[@]} ]; then
  echo "FAILED: $passed of ${#bins[@]} test binaries passed"
  grep 'TEST-RESULT .* rc=' "$LOG" | grep -v 'rc=0$' || true
  exit 1
fi
echo "ok: ${#bins[@]} test binaries passed in the Soft-RoCE guest"
