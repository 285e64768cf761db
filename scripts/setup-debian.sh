#!/bin/bash
# Installs the Debian 12 packages the build, the tests and the sandbox need (idempotent).
#   libvirt-dev pkg-config          build: the `virt` crate links libvirt (event helper only)
#   libvirt-daemon(+driver-qemu)    tests: a private unprivileged libvirtd (test driver)
#   libvirt-clients                 tests: virsh, to change domain state under the binary
#   util-linux                      tests: setpriv (start libvirtd as nobody from root)
#   python3                         tests: a Python writer holding fcntl.lockf on qubes.xml
#   hyperfine                       benchmarks
#   btrfs-progs xfsprogs            tests: file-reflink pools on btrfs and xfs in loop devices
#   lvm2 thin-provisioning-tools    tests: a real lvm_thin pool where the kernel has device-mapper
#   qemu-system-x86                 sandbox, boot test: qubes run as real QEMU domains
#   busybox-static cpio             scripts/guest-kernel.sh: the guest's initramfs
set -euo pipefail
PKGS=(build-essential libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu
    libvirt-clients util-linux python3 hyperfine btrfs-progs xfsprogs
    lvm2 thin-provisioning-tools qemu-system-x86 busybox-static cpio)
installed() { [[ $(dpkg-query -W -f='${db:Status-Status}' "$1" 2>/dev/null || true) == installed ]]; }
missing=()
for p in "${PKGS[@]}"; do
    installed "$p" || missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "setup-debian.sh: installing ${missing[*]}" >&2
    apt=(apt-get)
    qemu_utils=$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null || true)
    if [[ " ${missing[*]} " == *" qemu-system-x86 "* && $qemu_utils == *bpo12* ]]; then
        # This machine's own qemu-utils comes from bookworm-backports: Debian 12's
        # qemu-system-x86 (7.2) would remove it. Take the same version from backports, through
        # a source list given to apt for this run only (nothing is added to /etc/apt).
        list=$(mktemp)
        { cat /etc/apt/sources.list 2>/dev/null || true
          echo "deb http://deb.debian.org/debian bookworm-backports main"; } > "$list"
        apt=(apt-get -o "Dir::Etc::SourceList=$list" -t bookworm-backports)
        missing=("${missing[@]/#qemu-system-x86/qemu-system-x86=$qemu_utils}")
    fi
    "${sudo[@]}" "${apt[@]}" update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive "${apt[@]}" install -y -qq \
        --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup-debian.sh: cargo not found (install Rust >= 1.89 with rustup)" >&2; exit 1; }
