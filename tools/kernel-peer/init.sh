#!/bin/sh
# init.sh: /init of the kernel peer's initrd (tools/kernel-peer/initrd.ts builds it in). It runs
# as PID 1 of Debian's kernel under qemu, with the serial console (ttyS0) as stdin and stdout,
# and turns that console into a command channel for guest.ts:
#
#   1. busybox's applets, /proc, /sys, /dev; printk quiet, so kernel messages do not land in the
#      middle of a command's output;
#   2. the modules in /lib/modules, in the order the kernel command line's kp.modules= lists them
#      (each needs only those before it); a module that does not load is reported, not fatal;
#   3. "@@READY", then for every line "<id> <base64 of a shell script>" read from the console:
#      the script runs (sh, stdin /dev/null, output to a file), then
#        @@BEGIN <id>
#        <its output>
#        @@END <id> <exit status>
#      A script that starts something in the background redirects its output itself.
/bin/busybox mkdir -p /usr/sbin /usr/bin /sbin /dev /proc /sys /tmp
/bin/busybox --install -s /bin
export PATH=/usr/sbin:/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo 1 > /proc/sys/kernel/printk
stty -echo

modules=$(tr ' ' '\n' < /proc/cmdline | sed -n 's/^kp\.modules=//p' | tr ',' ' ')
for m in $modules; do
  insmod "/lib/modules/$m.ko" > /tmp/insmod.out 2>&1 || echo "@@MODULE-FAILED $m $(cat /tmp/insmod.out)"
done
ip link set lo up

echo "@@READY $(uname -r)"
while read -r id script; do
  # busybox's sh runs its own applets before the PATH: "ip" must mean the host's full one.
  { echo 'ip() { /usr/sbin/ip "$@"; }'; echo "$script" | base64 -d; } > /tmp/cmd.sh
  sh /tmp/cmd.sh < /dev/null > /tmp/cmd.out 2>&1
  rc=$?
  echo "@@BEGIN $id"
  cat /tmp/cmd.out
  echo "@@END $id $rc"
done
# The console closed: nothing more will come.
poweroff -f
