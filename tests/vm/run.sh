#!/usr/bin/env bash
# Build the kTLS test VM from Debian packages and run the kTLS tests inside it (tests/vm/vm.py).
#   tests/vm/run.sh                      the tests (about 20 s once ~/.cache/tlskit-vm holds the kernel)
#   tests/vm/run.sh --bench --size-mb 1024
#   TLSKIT_VM_KERNEL=linux-image-6.12.117+deb12-cloud-amd64 tests/vm/run.sh
# On a fresh Debian 12 machine it first installs qemu-system-x86, busybox-static and kmod (as root or
# with sudo -n). The Python that runs it must have the project's dependencies (pip install -e .).
set -euo pipefail
cd "$(dirname "$0")/../.."

packages=(qemu-system-x86 busybox-static kmod)
missing=()
for pkg in "${packages[@]}"; do
    dpkg-query -W -f='${Status}\n' "$pkg" 2>/dev/null | grep -q '^install ok installed$' || missing+=("$pkg")
done
if [ "${#missing[@]}" -gt 0 ]; then
    as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo -n "$@"; fi; }
    echo "installing: ${missing[*]}"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq --no-install-recommends "${missing[@]}" </dev/null
fi
exec "${PYTHON:-python3}" tests/vm/vm.py "$@"
