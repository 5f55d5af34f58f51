#!/bin/sh
# Build $OUT/initrd.gz for the Soft-RoCE guest: busybox, the kernel modules for rxe in load order,
# the verbs tools and the rxe provider from the host, init.sh as /init, and each test binary as
# /tests/<name> with its shared libraries (from ldd, at their host paths).
# Usage: W=CACHE OUT=DIR build-initramfs.sh [test binaries...]
set -eu
W=${W:?W: the cache directory (fetch.sh)}; OUT=${OUT:?OUT: where to build}
HERE=$(cd "$(dirname "$0")" && pwd)
KV=$(cat "$W/fetched")
R="$OUT/root"; rm -rf "$R"
mkdir -p "$R"/bin "$R"/sbin "$R"/proc "$R"/sys "$R"/dev "$R"/tmp "$R"/etc/libibverbs.d "$R"/lib/modules "$R"/tests
cp "$W/bbx/bin/busybox" "$R/bin/busybox"; ln -s busybox "$R/bin/sh"
cp "$HERE/init.sh" "$R/init"; chmod +x "$R/init"

# Modules in dependency order (modprobe --show-depends against the unpacked tree). crc32_generic:
# rdma_rxe needs the "crc32" hash (its ICRC) but does not declare it. virtio: the eth0 fallback.
: > "$R/modules.list"
for m in virtio_pci virtio_net crc32_generic rdma_rxe; do
  "$W/kmodx/modprobe" -d "$W/kx" -S "$KV" --show-depends $m | awk '$1 == "insmod" { print $2 }'
done | awk '!seen[$0]++' | while read -r ko; do
  cp "$ko" "$R/lib/modules/"; basename "$ko" >> "$R/modules.list"
done

# libs FILE...: copy the shared libraries FILE needs (ldd) to the same paths in the guest.
libs() {
  ldd "$@" 2>/dev/null | awk '/=>/ { print $3 } /^\t\// { print $1 }' | sort -u | while read -r l; do
    [ -f "$l" ] && [ ! -e "$R$l" ] && { mkdir -p "$R$(dirname "$l")"; cp -L "$l" "$R$l"; }
    true
  done
}
# The verbs tools, the rxe provider (libibverbs dlopens it by the name in rxe.driver) and `rdma`.
PROV=$(ls /usr/lib/*/libibverbs/librxe-rdmav*.so 2>/dev/null | head -1)
[ -n "$PROV" ] || { echo "no rxe provider (librxe-rdmav*.so): apt-get install ibverbs-providers" >&2; exit 1; }
for f in /usr/bin/rdma /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong "$PROV"; do
  mkdir -p "$R$(dirname "$f")"; cp -L "$f" "$R$f"
done
libs /usr/bin/rdma /usr/bin/ibv_devices /usr/bin/ibv_devinfo /usr/bin/ibv_rc_pingpong "$PROV"
cp /etc/libibverbs.d/rxe.driver "$R/etc/libibverbs.d/"

# The tests, without their DWARF (symbols stay, for backtraces): less to pack and to load.
for t in "$@"; do
  dst="$R/tests/$(basename "$t")"
  strip --strip-debug -o "$dst" "$t" 2> /dev/null || cp -L "$t" "$dst"
  chmod +x "$dst"; libs "$t"
done

# Programs the tests run (GUEST_FILES, space-separated absolute paths): at the same paths, with
# their libraries.
for f in ${GUEST_FILES:-}; do
  case "$f" in /*) ;; *) echo "GUEST_FILES: $f is not an absolute path" >&2; exit 1 ;; esac
  mkdir -p "$R$(dirname "$f")"
  strip --strip-debug -o "$R$f" "$f" 2> /dev/null || cp -L "$f" "$R$f"
  chmod +x "$R$f"; libs "$f"
done

(cd "$R" && find . | "$W/bbx/bin/busybox" cpio -o -H newc 2>/dev/null | gzip -1 > "$OUT/initrd.gz")
echo "modules: $(tr '\n' ' ' < "$R/modules.list")"
echo "initrd: $(du -k "$OUT/initrd.gz" | cut -f1) KiB, tests: $(ls "$R/tests" | tr '\n' ' ')"
