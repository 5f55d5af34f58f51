# Shared by run.sh and ci.sh (sourced, bash): quiet, idempotent apt installs.

# What the guest harness needs on the host: qemu (software emulation), the verbs tools and the rxe
# provider copied into the guest, and `rdma` (iproute2) to add the rxe link there. The kernel,
# busybox and kmod are downloaded as packages and unpacked, never installed (fetch.sh).
GUEST_DEPS=(qemu-system-x86 ibverbs-utils ibverbs-providers iproute2)

# apt_ensure PKG...: install the packages that dpkg does not list as installed; nothing when all are.
apt_ensure() {
  local missing=() p
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q ' installed$' || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  if [ "$(id -u)" != 0 ]; then
    echo "missing packages: ${missing[*]} (as root: apt-get install ${missing[*]})" >&2
    return 1
  fi
  echo "apt: installing ${missing[*]}"
  local log
  log=$(mktemp)
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"; } >"$log" 2>&1; then
    cat "$log" >&2; rm -f "$log"
    return 1
  fi
  rm -f "$log"
}

# now: seconds since the epoch, with fractions.
now() { date +%s.%N; }
# since T0: seconds elapsed since T0, one decimal.
since() { awk -v a="$1" -v b="$(now)" 'BEGIN { printf "%.1f", b - a }'; }
