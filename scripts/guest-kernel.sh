#!/bin/bash
# A bootable kernel for qubes run under QEMU (the sandbox and the boot test), laid out as a
# linux-kernel pool entry: DIR/<version>/{vmlinuz,initramfs}.
#
#   scripts/guest-kernel.sh DIR     prints <version>; reuses DIR/<version> when it is complete
#
# The kernel is Debian's own (linux-image-amd64, extracted from its .deb: nothing is installed
# into /boot and no initramfs hook runs). The initramfs is ours: busybox-static and an /init
# that mounts /proc, /sys and /dev, finds the ACPI power button, says "qubes-admin-rs guest up"
# on the serial console, and powers the machine off when the button is pressed (what libvirt's
# shutdown sends), so Shutdown works as on a real qube. Needs apt-get, dpkg-deb, cpio and busybox-static.
set -euo pipefail
DIR=$(realpath -m "${1:?usage: guest-kernel.sh DIR}")
BUSYBOX=/bin/busybox
[[ -x $BUSYBOX ]] && "$BUSYBOX" --list | grep -qx poweroff ||
    { echo "guest-kernel.sh: $BUSYBOX missing (Debian package busybox-static)" >&2; exit 1; }
command -v cpio >/dev/null || { echo "guest-kernel.sh: cpio missing" >&2; exit 1; }

kernel_pkg() {
    apt-cache depends linux-image-amd64 2>/dev/null |
        sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -n1
}
pkg=$(kernel_pkg)
if [[ -z $pkg && $(id -u) == 0 ]]; then
    apt-get update -qq && pkg=$(kernel_pkg)
fi
[[ -n $pkg ]] || { echo "guest-kernel.sh: no linux-image-amd64 in the apt lists (run apt-get update)" >&2; exit 1; }
ver=${pkg#linux-image-}
out=$DIR/$ver
# Bumped whenever the initramfs below changes, so that a cached kernel directory is rebuilt.
RECIPE=2
if [[ -s $out/vmlinuz && -s $out/initramfs && $(cat "$out/recipe" 2>/dev/null) == "$RECIPE" ]]; then
    echo "$ver"
    exit 0
fi

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
(cd "$work" && apt-get download -q "$pkg" >/dev/null 2>&1) ||
    { echo "guest-kernel.sh: apt-get download $pkg failed" >&2; exit 1; }
mkdir "$work/deb"
dpkg-deb -x "$work"/*.deb "$work/deb"
mods=$work/deb/lib/modules/$ver/kernel/drivers

root=$work/initramfs
mkdir -p "$root"/{bin,dev,proc,sys,lib}
cp "$BUSYBOX" "$root/bin/busybox"
# evdev: /dev/input/event*; button: the ACPI power button as an input device.
cp "$mods/input/evdev.ko" "$mods/acpi/button.ko" "$root/lib/"
cat > "$root/init" <<'EOF'
#!/bin/busybox sh
/bin/busybox --install -s /bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
insmod /lib/evdev.ko
insmod /lib/button.ko
for i in $(seq 50); do
    for e in /sys/class/input/event*; do
        [ "$(cat "$e/device/name" 2>/dev/null)" = "Power Button" ] && pb=/dev/input/${e##*/}
    done
    [ -n "$pb" ] && [ -e "$pb" ] && break
    sleep 0.1
done
# "up" once the power button is found, right before listening to it (a shutdown sent before
# the line may be lost, as on a real guest that is still booting).
echo "qubes-admin-rs guest up" > /dev/console
if [ -n "$pb" ]; then
    # Blocks until the power button sends its first input event (evdev reads whole
    # 24-byte events: a smaller read fails at once).
    dd if="$pb" of=/dev/null bs=24 count=1 2>/dev/null
    echo "qubes-admin-rs guest: power button, powering off" > /dev/console
    poweroff -f
fi
echo "qubes-admin-rs guest: no power button; idle" > /dev/console
while :; do sleep 3600; done
EOF
chmod 0755 "$root/init"

mkdir -p "$out.tmp"
cp "$work/deb/boot/vmlinuz-$ver" "$out.tmp/vmlinuz"
(cd "$root" && find . | cpio -o -H newc --quiet | gzip -9) > "$out.tmp/initramfs"
chmod 0644 "$out.tmp/vmlinuz" "$out.tmp/initramfs"
echo "$RECIPE" > "$out.tmp/recipe"
rm -rf "$out"
mv "$out.tmp" "$out"
echo "$ver"
