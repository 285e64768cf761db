#!/bin/bash
# The main job: a sandbox dom0 under a local directory (default ./sandbox), no Xen needed, and
# a short tour through real Admin API calls, each printed with what it does: a private libvirtd
# with the QEMU driver, so the qube the tour starts is a real QEMU process booting a real kernel.
#   scripts/sandbox.sh [DIR]        (re-running reuses DIR; delete it to start afresh)
# Afterwards: `source DIR/env` and use target/release/qubes-admin-call yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build --release --locked -q
BIN=$PWD/target/release
DIR=$(realpath -m "${1:-$PWD/sandbox}")
KVER=$(scripts/guest-kernel.sh "$PWD/target/guest-kernel")

# QEMU runs as the libvirt session daemon's user; as root that is nobody (uid 65534), so the
# sandbox belongs to nobody and every process of it runs as nobody.
AS=()
if [[ $(id -u) == 0 ]]; then
    AS=(setpriv --reuid=65534 --regid=65534 --clear-groups)
fi
mkdir -p "$DIR"
if [[ -f $DIR/env ]] && ! grep -q 'qemu+unix' "$DIR/env"; then
    echo "sandbox.sh: $DIR was made for libvirt's test driver by an older version; remove it" >&2
    exit 1
fi
# A private libvirtd with the QEMU session driver (state under DIR/libvirtd; same socket, so
# the same URI, on every run).
# It stays up after the tour, for your own calls: stop it with
#   tests/support/libvirtd.sh stop DIR/libvirtd
if [[ -f $DIR/libvirtd/daemon.pid ]] && kill -0 "$(cat "$DIR/libvirtd/daemon.pid")" 2>/dev/null; then
    URI="qemu+unix:///session?socket=$DIR/libvirtd/run/libvirt/libvirt-sock"
else
    URI=$(LIBVIRTD_DRIVER=qemu tests/support/libvirtd.sh start "$DIR/libvirtd")
fi
EVENTD=
trap '[[ -z $EVENTD ]] || kill $EVENTD 2>/dev/null' EXIT
trap 'tests/support/libvirtd.sh stop "$DIR/libvirtd"' ERR
q() { "${AS[@]}" "$BIN/qubes-admin-call" "$@"; }
if [[ ! -f $DIR/qubes.xml ]]; then
    "$BIN/qubes-admin-call" sandbox "$DIR" "$URI" > "$DIR/env.tmp"
    mkdir -p "$DIR/varlib/vm-kernels/$KVER"
    cp target/guest-kernel/"$KVER"/{vmlinuz,initramfs} "$DIR/varlib/vm-kernels/$KVER/"
    [[ ${#AS[@]} -eq 0 ]] || chown -R 65534:65534 "$DIR"
    mv "$DIR/env.tmp" "$DIR/env"
    # shellcheck disable=SC1091
    source "$DIR/env"
    printf '%s' "$KVER" | q call admin.property.Set+default_kernel dom0
    echo "# created a sandbox dom0 in $DIR (embedded default qubes.xml written by the real qubesd)"
    echo "# default_kernel: $KVER (Debian's kernel, a busybox initramfs: scripts/guest-kernel.sh)"
fi
# shellcheck disable=SC1091
source "$DIR/env"
echo "# environment contract (also in $DIR/env):"
sed 's/^/#   /' "$DIR/env"

# The one long-lived helper: runtime state from libvirt, kept current by its events.
"${AS[@]}" "$BIN/qubes-admin-eventd" > "$DIR/eventd.log" 2>&1 &
EVENTD=$!
for _ in $(seq 100); do [[ -S $QUBES_RUN_DIR/qubes-admin/eventd.sock ]] && break; sleep 0.05; done

step() { # description, then: method dest [payload]
    local what=$1 method=$2 dest=$3 payload=${4-}
    echo
    echo "## $what"
    if [[ -n $payload ]]; then
        echo "\$ printf '%s' '$payload' | qubes-admin-call call $method $dest"
        printf '%s' "$payload" | q call "$method" "$dest" || true
    else
        echo "\$ qubes-admin-call call $method $dest < /dev/null"
        q call "$method" "$dest" < /dev/null || true
    fi
    echo
}

step "Which qubes exist, and their power state (from libvirt, via the helper)" admin.vm.List dom0
step "The VM classes this implementation knows" admin.vmclass.List dom0
step "Labels" admin.label.List dom0
step "Every global property, as qubes-prefs shows them" admin.property.GetAll dom0
step "Where 'work' gets its network from (inherited default)" admin.vm.property.Get+netvm work
step "Give 'work' more memory (a write: lock, splice, fsync, rename)" admin.vm.property.Set+memory work 800
step "...and read it back" admin.vm.property.Get+memory work
step "A bad value is refused with the reference's exception" admin.vm.property.Set+memory work lots
step "Enable a service through a feature (qvm-service does this)" admin.vm.feature.Set+service.cups work 1
step "Features of 'work', in insertion order" admin.vm.feature.List work
step "Tag 'work'" admin.vm.tag.Set+project-x work
step "Tags of 'work', sorted" admin.vm.tag.List work
step "Notes (sanitised, stored in the VM's directory, not in qubes.xml)" admin.vm.notes.Set work "Work qube: keep it tidy"
step "...and read back" admin.vm.notes.Get work
step "Runtime state of a halted qube" admin.vm.CurrentState work

# A tour that stopped half-way leaves its qubes behind: clear them quietly.
for leftover in tour-app tour-tpl; do
    q call admin.vm.Kill "$leftover" < /dev/null > /dev/null 2>&1 || true
    q call admin.vm.Remove "$leftover" < /dev/null > /dev/null 2>&1 || true
done

step "Storage pools (as qvm-pool lists them)" admin.pool.List dom0
step "The pool new volumes go to" admin.pool.Info+varlibqubes dom0
step "Create a template: sparse root and private images, reflinked where the filesystem can" admin.vm.Create.TemplateVM dom0 "name=tour-tpl label=black"
step "Create a qube based on it (created-by tag, volume config in qubes.xml)" admin.vm.Create.AppVM+tour-tpl dom0 "name=tour-app label=green"
step "Its volumes" admin.vm.volume.List tour-app
step "...the private one in detail" admin.vm.volume.Info+private tour-app
step "No network in the sandbox: no netvm for it" admin.vm.property.Set+netvm tour-app
step "A small qube, its console on the serial port" admin.vm.property.Set+memory tour-app 256
step "...kernel command line" admin.vm.property.Set+kernelopts tour-app "console=ttyS0"
step "Start it: volumes started, domain defined in libvirt, a QEMU process started" admin.vm.Start tour-app
echo "\$ virsh -c \$QUBES_LIBVIRT_URI list"
virsh -c "$QUBES_LIBVIRT_URI" list
step "It runs" admin.vm.List tour-app
echo "## Its console ($QUBES_BASE_DIR/appvms/tour-app/console.log), until the guest is up"
for _ in $(seq 240); do
    grep -q 'guest up' "$QUBES_BASE_DIR/appvms/tour-app/console.log" 2>/dev/null && break
    sleep 0.5
done
grep -a -E 'Linux version|guest up' "$QUBES_BASE_DIR/appvms/tour-app/console.log" | sed 's/^/#   /' || true
step "Pause it (the QEMU process stays, its vCPUs stop)" admin.vm.Pause tour-app
step "...paused" admin.vm.CurrentState tour-app
step "Unpause it" admin.vm.Unpause tour-app
step "Shut it down and wait (ACPI power button; the guest powers off; private committed)" admin.vm.Shutdown+wait tour-app
grep -a 'powering off' "$QUBES_BASE_DIR/appvms/tour-app/console.log" | sed 's/^/#   /' || true
step "Halted again" admin.vm.CurrentState tour-app
step "Its revisions: the state before this run" admin.vm.volume.ListSnapshots+private tour-app
step "Remove it (its images go after the commit, outside the qubes.xml lock)" admin.vm.Remove tour-app
step "...and the template" admin.vm.Remove tour-tpl

echo
echo "## The same call as qrexec runs it (exec-service mode: identity from the environment)"
echo "\$ QREXEC_SERVICE_FULL_NAME=admin.vm.property.Get+label QREXEC_REMOTE_DOMAIN=dom0 QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET=work qubes-admin-call label | od -c"
QREXEC_SERVICE_FULL_NAME=admin.vm.property.Get+label QREXEC_REMOTE_DOMAIN=dom0 \
    QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET=work \
    "${AS[@]}" "$BIN/qubes-admin-call" label < /dev/null | od -c | head -3

echo
echo "## Events the writes above appended to the event log ($QUBES_RUN_DIR/qubes-admin/events.log)"
if [[ -f $QUBES_RUN_DIR/qubes-admin/events.log ]]; then
    tr '\0' ' ' < "$QUBES_RUN_DIR/qubes-admin/events.log" | grep -a -o 'property-set:[a-z_]*\|domain-feature-set:[a-z_.]*\|domain-tag-add:[a-z0-9_-]*\|domain-[a-z-]*' | sort | uniq -c
fi
echo
echo "# done: source $DIR/env and run ${AS[*]}${AS:+ }$BIN/qubes-admin-call call METHOD[+ARG] [DEST]"
echo "# yourself (libvirtd keeps running: tests/support/libvirtd.sh stop $DIR/libvirtd stops it)"
