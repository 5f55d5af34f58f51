#!/bin/sh
# Boot the Soft-RoCE guest on INITRD, console to LOG; APPEND goes on the kernel command line.
# Usage: W=CACHE boot.sh INITRD LOG [APPEND]     (env: ACCEL=tcg, CPU=max, BOOT_TIMEOUT=540 s)
# Software emulation (TCG) by default: KVM is not available (or, nested, does not work) on the
# machines this runs on. The guest powers itself off when its tests are done.
W=${W:?W: the cache directory (fetch.sh)}; INITRD=${1:?INITRD}; LOG=${2:?LOG}
KV=$(cat "$W/fetched")
exec timeout "${BOOT_TIMEOUT:-540}" qemu-system-x86_64 -accel "${ACCEL:-tcg}" -cpu "${CPU:-max}" -m 2048 -smp 2 \
  -nographic -no-reboot -kernel "$W/kx/boot/vmlinuz-$KV" -initrd "$INITRD" \
  -nic user,model=virtio-net-pci \
  -append "console=ttyS0 quiet panic=-1 ${3:-}" > "$LOG" 2>&1 < /dev/null
