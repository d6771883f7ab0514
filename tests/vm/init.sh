#!/bin/busybox sh
# /init of the tlskit kTLS test VM (tests/vm/vm.py): mount, load tls.ko, bring up lo, run the tests or the
# benchmark named on the kernel command line, report on the serial console, power off.
/bin/busybox mkdir -p /proc /sys /dev /tmp /run /root /usr/sbin /usr/bin
/bin/busybox --install -s
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mount -t tmpfs -o size=90% tmpfs /tmp
ip link set lo up
ip addr add 127.0.0.1/8 dev lo 2>/dev/null
for module in tls gcm ghash-generic ghash-clmulni-intel aesni-intel chacha20poly1305 chacha-x86_64 poly1305-x86_64; do
    modprobe "$module" 2>/dev/null || echo "KTLS-VM INFO modprobe $module failed"
done
mode=test
args=
for word in $(cat /proc/cmdline); do
    case "$word" in
        tlskit.mode=*) mode="${word#tlskit.mode=}" ;;
        tlskit.args=*) args="$(echo "${word#tlskit.args=}" | tr ',' ' ')" ;;
    esac
done
export HOME=/root PYTHONPATH=/project/src:/project:/site PYTHONDONTWRITEBYTECODE=1 PATH=/usr/sbin:/usr/bin:/sbin:/bin
cd /project
echo "KTLS-VM INFO kernel $(uname -r), $(grep -c ^processor /proc/cpuinfo) CPUs, mode $mode"
if [ "$mode" = bench ]; then
    @PYTHON@ bench/ktls_sendfile.py --in-vm $args
else
    @PYTHON@ -m tests.vm.guest $args
fi
echo "KTLS-VM INFO guest exit status $?"
sync
poweroff -f
