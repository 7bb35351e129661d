#!/usr/bin/env bash
# Makes a tiny bootable guest for tests that need a real QEMU domain (direct kernel boot, TCG).
#
# Usage: tests/tools/tiny-guest.sh OUTDIR [WORKLOAD]
#
# Writes OUTDIR/vmlinuz and OUTDIR/initrd.img (and prints nothing on success). With WORKLOAD (a
# static executable), the initrd also holds it as /bin/workload, and the guest runs
# `/bin/workload /dev/vda` instead of the loop below (again, a second after it exits). Boot them with
#   <os><type arch='x86_64' machine='pc'>hvm</type>
#       <kernel>OUTDIR/vmlinuz</kernel><initrd>OUTDIR/initrd.img</initrd>
#       <cmdline>console=ttyS0 panic=-1 quiet</cmdline></os>
# and one virtio disk (vda). The guest's /init:
#   - mounts proc, sys, devtmpfs; loads virtio_pci + virtio_blk (modules in the initramfs:
#     Debian's cloud kernel builds them as modules);
#   - prints "VMHA-GUEST-READY" on the serial console (ttyS0) once /dev/vda exists;
#   - then every second writes one 512-byte sector at offset 0 of /dev/vda holding
#     "VMHA-GUEST-WRITE <n>\n" (n counts up from 1) followed by fsync, and prints the same line
#     on the console. A test sees progress by reading the first sector of the disk image.
# The guest reaches userspace in 3-5 s under TCG.
#
# The kernel comes from Debian (linux-image-cloud-amd64's kernel package, fetched with
# `apt-get download` and unpacked with `dpkg-deb -x`, never installed) and busybox-static from
# the host. Both are cached in ${VMHA_TEST_CACHE:-/var/cache/vmha-tests}/tiny-guest; a second
# run only copies. Exit status: 0 ok, 1 failure (message on stderr).
set -euo pipefail

out=${1:?usage: tiny-guest.sh OUTDIR [WORKLOAD]}
workload=${2:-}
[[ -z $workload || -x $workload ]] || { echo "tiny-guest: $workload is not an executable" >&2; exit 1; }
cache=${VMHA_TEST_CACHE:-/var/cache/vmha-tests}/tiny-guest
mkdir -p "$out" "$cache"

die() { echo "tiny-guest: $*" >&2; exit 1; }

busybox=/bin/busybox
[[ -x $busybox ]] && "$busybox" --list | grep -x insmod >/dev/null ||
  die "busybox-static is missing (tests/tools/install-deps.sh installs it)"
command -v cpio >/dev/null || die "cpio is missing (tests/tools/install-deps.sh installs it)"

# Serialize concurrent runs (several tests may prepare the guest at once).
exec 9>"$cache/.lock"
flock -w 600 9 || die "timed out waiting for the lock on $cache"

version_file=$cache/kernel-version
if [[ ! -s $version_file || ! -f $cache/vmlinuz || ! -d $cache/modules ]]; then
  meta=linux-image-cloud-amd64
  pkg=$(apt-cache depends "$meta" 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
  [[ -n $pkg ]] || die "cannot resolve the kernel package of $meta (apt-get update needed?)"
  work=$(mktemp -d "$cache/.work.XXXXXX")
  trap 'rm -rf "$work"' EXIT
  (cd "$work" && apt-get download -qq "$pkg" >/dev/null 2>&1) ||
    die "apt-get download $pkg failed"
  dpkg-deb -x "$work"/"$pkg"_*.deb "$work/x"
  kver=${pkg#linux-image-}
  [[ -f $work/x/boot/vmlinuz-$kver ]] || die "$pkg holds no boot/vmlinuz-$kver"
  rm -rf "$cache/modules"
  mkdir -p "$cache/modules"
  config=$work/x/boot/config-$kver
  for mod in virtio_ring virtio virtio_pci_legacy_dev virtio_pci_modern_dev virtio_pci virtio_blk; do
    symbol=CONFIG_$(tr '[:lower:]' '[:upper:]' <<<"$mod")
    # Built-in drivers need no module; the order above is their dependency order.
    grep -qx "$symbol=y" "$config" && continue
    file=$(find "$work/x/lib/modules/$kver" -name "$mod.ko" | head -n1)
    [[ -n $file ]] || die "$pkg has neither $symbol=y nor $mod.ko"
    cp "$file" "$cache/modules/"
    echo "$mod.ko" >>"$cache/modules/load-order"
  done
  touch "$cache/modules/load-order"
  cp "$work/x/boot/vmlinuz-$kver" "$cache/vmlinuz"
  echo "$kver" >"$version_file"
  rm -f "$cache/initrd.img"
fi

if [[ ! -f $cache/initrd.img || $0 -nt $cache/initrd.img ]]; then
  root=$(mktemp -d "$cache/.root.XXXXXX")
  mkdir -p "$root"/{bin,dev,proc,sys,tmp,lib/modules}
  cp "$busybox" "$root/bin/busybox"
  cp "$cache"/modules/*.ko "$cache/modules/load-order" "$root/lib/modules/" 2>/dev/null || true
  cat >"$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
for m in $(cat /lib/modules/load-order); do insmod /lib/modules/$m || echo "VMHA-GUEST-INSMOD-FAILED $m"; done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
[ -b /dev/vda ] || echo "VMHA-GUEST-NO-DISK"
echo "VMHA-GUEST-READY"
if [ -x /bin/workload ]; then
  while true; do /bin/workload /dev/vda; sleep 1; done
fi
n=0
while true; do
  n=$((n+1))
  line="VMHA-GUEST-WRITE $n"
  { echo "$line"; dd if=/dev/zero bs=480 count=1 2>/dev/null; } | dd of=/dev/vda bs=512 count=1 conv=sync,fsync,notrunc 2>/dev/null \
    && echo "$line" || echo "VMHA-GUEST-WRITE-FAILED $n"
  sleep 1
done
EOF
  chmod 755 "$root/init"
  (cd "$root" && find . | cpio -o -H newc --quiet | gzip -1) >"$cache/initrd.img.tmp"
  mv "$cache/initrd.img.tmp" "$cache/initrd.img"
  rm -rf "$root"
fi

cp "$cache/vmlinuz" "$out/vmlinuz"
cp "$cache/initrd.img" "$out/initrd.img"
if [[ -n $workload ]]; then
  # A second archive appended to the first, which is padded with zeros to a 512-byte boundary:
  # the kernel unpacks both, in order.
  size=$(stat -c %s "$out/initrd.img")
  truncate -s $(( (size + 511) / 512 * 512 )) "$out/initrd.img"
  extra=$(mktemp -d)
  mkdir -p "$extra/bin"
  cp "$workload" "$extra/bin/workload"
  (cd "$extra" && find . | cpio -o -H newc --quiet) >>"$out/initrd.img"
  rm -rf "$extra"
fi
