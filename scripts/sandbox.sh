#!/bin/bash
# The main job: a sandbox dom0 under a local directory (default ./sandbox), no Xen needed, and
# a short tour through real Admin API calls, each printed with what it does.
#   scripts/sandbox.sh [DIR]        (re-running reuses DIR; delete it to start afresh)
# Afterwards: `source DIR/env` and use target/release/qubes-admin-call yourself.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo build --release --locked -q
BIN=$PWD/target/release
DIR=$(realpath -m "${1:-$PWD/sandbox}")
if [[ ! -f $DIR/qubes.xml ]]; then
    mkdir -p "$DIR"
    "$BIN/qubes-admin-call" sandbox "$DIR" > "$DIR/env.tmp" && mv "$DIR/env.tmp" "$DIR/env"
    echo "# created a sandbox dom0 in $DIR (embedded default qubes.xml written by the real qubesd)"
fi
# shellcheck disable=SC1091
source "$DIR/env"
echo "# environment contract (also in $DIR/env):"
sed 's/^/#   /' "$DIR/env"

# The one long-lived helper: runtime state from libvirt (here the test driver, in-process).
"$BIN/qubes-admin-eventd" > "$DIR/eventd.log" 2>&1 &
EVENTD=$!
trap 'kill $EVENTD 2>/dev/null || true' EXIT
for _ in $(seq 100); do [[ -S $QUBES_RUN_DIR/qubes-admin/eventd.sock ]] && break; sleep 0.05; done

step() { # description, then: method dest [payload]
    local what=$1 method=$2 dest=$3 payload=${4-}
    echo
    echo "## $what"
    if [[ -n $payload ]]; then
        echo "\$ printf '%s' '$payload' | qubes-admin-call call $method $dest"
        printf '%s' "$payload" | "$BIN/qubes-admin-call" call "$method" "$dest" || true
    else
        echo "\$ qubes-admin-call call $method $dest < /dev/null"
        "$BIN/qubes-admin-call" call "$method" "$dest" < /dev/null || true
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

echo
echo "## The same call as qrexec runs it (exec-service mode: identity from the environment)"
echo "\$ QREXEC_SERVICE_FULL_NAME=admin.vm.property.Get+label QREXEC_REMOTE_DOMAIN=dom0 QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET=work qubes-admin-call label | od -c"
QREXEC_SERVICE_FULL_NAME=admin.vm.property.Get+label QREXEC_REMOTE_DOMAIN=dom0 \
    QREXEC_REQUESTED_TARGET_TYPE=name QREXEC_REQUESTED_TARGET=work \
    "$BIN/qubes-admin-call" label < /dev/null | od -c | head -3

echo
echo "## Events the writes above appended to the event log ($QUBES_RUN_DIR/qubes-admin/events.log)"
if [[ -f $QUBES_RUN_DIR/qubes-admin/events.log ]]; then
    tr '\0' ' ' < "$QUBES_RUN_DIR/qubes-admin/events.log" | grep -a -o 'property-set:[a-z_]*\|domain-feature-set:[a-z_.]*\|domain-tag-add:[a-z_-]*' | sort | uniq -c
fi
echo
echo "# done: source $DIR/env and run $BIN/qubes-admin-call call METHOD[+ARG] [DEST] yourself"
