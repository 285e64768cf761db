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
set -euo pipefail
PKGS=(build-essential libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu
    libvirt-clients util-linux python3 hyperfine btrfs-progs xfsprogs
    lvm2 thin-provisioning-tools)
missing=()
for p in "${PKGS[@]}"; do
    [[ $(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true) == installed ]] ||
        missing+=("$p")
done
if [[ ${#missing[@]} -gt 0 ]]; then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo)
    echo "setup-debian.sh: installing ${missing[*]}" >&2
    "${sudo[@]}" apt-get update -qq
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi
command -v cargo >/dev/null || { echo "setup-debian.sh: cargo not found (install Rust >= 1.89 with rustup)" >&2; exit 1; }
