#!/bin/busybox sh
# initramfs /init of the test VM: load the few modules needed to reach the host's root filesystem
# (virtio 9p, read-only), lay a tmpfs over it with overlayfs so the guest can write without
# touching the host, then hand over to guest-run.sh inside that root.
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in $(cat /modules.order); do insmod "/modules/$m" || echo "vm init: insmod $m failed"; done
mkdir -p /lower /upper /newroot
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=262144,cache=loose hostroot /lower || {
  echo "vm init: cannot mount the host root over 9p"; poweroff -f; }
mount -t tmpfs -o size=6g,mode=0755 tmpfs /upper
mkdir -p /upper/data /upper/work
mount -t overlay overlay -o lowerdir=/lower,upperdir=/upper/data,workdir=/upper/work /newroot || {
  echo "vm init: overlayfs over 9p failed"; poweroff -f; }
run=$(sed -n 's/.*ks\.run=\([^ ]*\).*/\1/p' /proc/cmdline)
umount /proc /sys
mount --move /dev /newroot/dev
exec switch_root /newroot /bin/sh "$run"
