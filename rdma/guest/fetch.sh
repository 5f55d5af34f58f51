#!/bin/sh
# Fetch the guest's kernel, busybox and kmod as Debian packages and unpack them under $W; nothing is
# installed on the host. Does nothing when $W already holds them (delete $W to fetch afresh).
# Usage: W=DIR fetch.sh        (env KPKG: the kernel package; default: what linux-image-amd64 depends on)
set -eu
W=${W:?W: the cache directory}
[ -f "$W/fetched" ] && exit 0
SANDBOX=; [ "$(id -u)" = 0 ] && SANDBOX="-o APT::Sandbox::User=root"   # as root, download without _apt
kernel() { apt-cache depends linux-image-amd64 2>/dev/null | awk '$1 == "Depends:" && $2 ~ /^linux-image-/ { print $2; exit }'; }
download() {
  K=${KPKG:-$(kernel)}
  [ -n "$K" ] && (cd "$W/debs" && apt-get download -qq $SANDBOX "$K" busybox-static kmod)
}
rm -rf "$W/debs" "$W/kx" "$W/bbx" "$W/kmodx"
mkdir -p "$W/debs" "$W/kx" "$W/bbx" "$W/kmodx"
# Package lists missing or stale (an old kernel gone from the mirror): update them once, as root.
if ! download; then
  [ "$(id -u)" = 0 ] || { echo "fetch: apt-get download failed; run apt-get update as root" >&2; exit 1; }
  apt-get update -qq
  download || { echo "fetch: no kernel, busybox-static or kmod package to download" >&2; exit 1; }
fi
dpkg -x "$W"/debs/"${K}"_*.deb "$W/kx"
dpkg -x "$W"/debs/busybox-static_*.deb "$W/bbx"
dpkg -x "$W"/debs/kmod_*.deb "$W/kmodx"
rm -rf "$W/debs"
ln -sf "$W/kmodx/bin/kmod" "$W/kmodx/depmod"     # kmod acts on its argv[0]
ln -sf "$W/kmodx/bin/kmod" "$W/kmodx/modprobe"
KV=$(ls "$W/kx/lib/modules")
"$W/kmodx/depmod" -b "$W/kx" "$KV"
echo "$KV" > "$W/fetched"
echo "fetched kernel $KV ($K) into $W"
