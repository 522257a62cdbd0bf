#!/bin/sh
# PID 1 inside the test VM (overlay root: the host's files, read-only underneath, writable on top).
# Sources the run's settings written by tests/vm/run.py, lays the unpacked kernel's modules and
# headers where a node would have them, runs the tests, prints the exit status, powers off.
# /run/netns is deliberately NOT created: on a freshly booted host it does not exist either.
set -u
. "$(dirname "$0")/settings.sh"
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t tmpfs tmpfs /run
mount -t tmpfs tmpfs /tmp
mkdir -p /sys/fs/cgroup && mount -t cgroup2 cgroup2 /sys/fs/cgroup
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
mount -t tracefs tracefs /sys/kernel/tracing 2>/dev/null
mkdir -p /dev/pts /dev/shm && mount -t devpts devpts /dev/pts && mount -t tmpfs tmpfs /dev/shm
hostname ks-vm-test
ip link set lo up
mkdir -p /lib/modules /boot && rm -rf "/lib/modules/$KS_RELEASE" && ln -s "$KS_TREE/lib/modules/$KS_RELEASE" "/lib/modules/$KS_RELEASE"
cp "$KS_TREE/boot/config-$KS_RELEASE" "/boot/config-$KS_RELEASE"
rm -f "/lib/modules/$KS_RELEASE/build" 2>/dev/null
if [ "$KS_HEADERS" = 1 ]; then
  for d in "$KS_TREE"/usr/src/linux-headers-* "$KS_TREE"/usr/lib/linux-kbuild-*; do
    ln -sfn "$d" "$(dirname "${d#"$KS_TREE"}")/$(basename "$d")"; done
  ln -sfn "/usr/src/linux-headers-$KS_RELEASE" "/lib/modules/$KS_RELEASE/build"
fi
echo "KS-VM: kernel $(uname -r), headers=$KS_HEADERS, $(nproc) cpus"
cd "$KS_REPO"
export CI=true PYTHONDONTWRITEBYTECODE=1 KERNSPLIT_TEST_TIME_SCALE="$KS_TIME_SCALE" HOME=/root
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
sh -c "$KS_COMMAND"
echo "KS-VM-EXIT=$?"
sync
poweroff -f
