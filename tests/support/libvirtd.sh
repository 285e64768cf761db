#!/bin/sh
# A private, unprivileged libvirtd for integration tests (test driver; see
# docs/runtime.md and the spec's rust-stack.md §1).
#
#   libvirtd.sh start [DIR]   start it with its state under DIR (default: a new /tmp/qa-libvirtd.*),
#                             wait for its socket, print the test-driver URI on stdout:
#                               test+unix:///default?socket=DIR/run/libvirt/libvirt-sock
#                             or, with LIBVIRTD_DRIVER=qemu, the QEMU session driver's:
#                               qemu+unix:///session?socket=DIR/run/libvirt/libvirt-sock
#                             (QEMU then runs as the daemon's user, so without KVM as root)
#   libvirtd.sh stop DIR      SIGTERM it, wait, and remove DIR if start created it
#
# As root it runs as uid/gid 65534 through setpriv, so it never becomes the system daemon;
# otherwise as the calling user. Needs the Debian package libvirt-daemon.
set -eu

die() { echo "libvirtd.sh: $*" >&2; exit 1; }

LIBVIRTD=${LIBVIRTD:-$(command -v libvirtd || echo /usr/sbin/libvirtd)}
DAEMON_UID=${LIBVIRTD_UID:-65534}

start() {
    [ -x "$LIBVIRTD" ] || die "libvirtd is not installed (Debian package libvirt-daemon)"
    if [ $# -ge 1 ]; then
        dir=$1
        mkdir -p "$dir"
    else
        dir=$(mktemp -d /tmp/qa-libvirtd.XXXXXX)
        : > "$dir/.created-by-libvirtd.sh"
    fi
    dir=$(cd "$dir" && pwd)
    chmod 0711 "$dir"
    mkdir -p "$dir/home" "$dir/run" "$dir/config" "$dir/cache"
    chmod 0700 "$dir/run"
    envs="PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=$dir/home XDG_RUNTIME_DIR=$dir/run \
XDG_CONFIG_HOME=$dir/config XDG_CACHE_HOME=$dir/cache LIBVIRT_LOG_OUTPUTS=3:file:$dir/home/libvirtd.log"
    sock="$dir/run/libvirt/libvirt-sock"
    if [ "$(id -u)" = 0 ]; then
        command -v setpriv >/dev/null || die "setpriv is needed to drop root (util-linux)"
        chown "$DAEMON_UID:$DAEMON_UID" "$dir/home" "$dir/run" "$dir/config" "$dir/cache"
        # shellcheck disable=SC2086
        setpriv --reuid="$DAEMON_UID" --regid="$DAEMON_UID" --clear-groups \
            env -i $envs "$LIBVIRTD" </dev/null >"$dir/libvirtd.out" 2>&1 &
    else
        # shellcheck disable=SC2086
        env -i $envs "$LIBVIRTD" </dev/null >"$dir/libvirtd.out" 2>&1 &
    fi
    # setpriv and env exec, so $! is libvirtd itself.
    echo $! > "$dir/daemon.pid"
    i=0
    while [ ! -S "$sock" ]; do
        if ! kill -0 "$(cat "$dir/daemon.pid")" 2>/dev/null; then
            cat "$dir/libvirtd.out" >&2 || true
            die "libvirtd exited during start-up (see $dir/libvirtd.out)"
        fi
        i=$((i + 1))
        [ $i -le 200 ] || die "libvirtd did not create $sock within 10 s"
        sleep 0.05
    done
    case ${LIBVIRTD_DRIVER:-test} in
        qemu) echo "qemu+unix:///session?socket=$sock" ;;
        *) echo "test+unix:///default?socket=$sock" ;;
    esac
}

stop() {
    [ $# -ge 1 ] || die "usage: libvirtd.sh stop DIR"
    dir=$1
    if [ -f "$dir/daemon.pid" ]; then
        pid=$(cat "$dir/daemon.pid")
        # A session daemon leaves its QEMU guests running when it exits: stop them first.
        uri="qemu+unix:///session?socket=$dir/run/libvirt/libvirt-sock"
        if kill -0 "$pid" 2>/dev/null && command -v virsh >/dev/null; then
            for d in $(virsh -q -c "$uri" list --name 2>/dev/null); do
                virsh -q -c "$uri" destroy "$d" >/dev/null 2>&1 || true
            done
        fi
        if kill -TERM "$pid" 2>/dev/null; then
            i=0
            while kill -0 "$pid" 2>/dev/null && [ $i -lt 100 ]; do sleep 0.05; i=$((i + 1)); done
            kill -KILL "$pid" 2>/dev/null || true
        fi
        rm -f "$dir/daemon.pid"
    fi
    if [ -f "$dir/.created-by-libvirtd.sh" ]; then
        rm -rf "$dir"
    fi
}

cmd=${1:-}
[ $# -gt 0 ] && shift
case "$cmd" in
    start) start "$@" ;;
    stop) stop "$@" ;;
    *) die "usage: libvirtd.sh start [DIR] | stop DIR" ;;
esac
