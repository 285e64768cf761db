#!/bin/sh
# Installs qubes-admin-call as the dom0 qrexec service for every Admin API method it serves.
# usage: install.sh [BIN] [RPC_DIR]
#   BIN      the installed qubes-admin-call (default /usr/lib/qubes-admin/qubes-admin-call)
#   RPC_DIR  the qrexec service directory (default /etc/qubes-rpc)
# Each name in services.list (generated from the dispatch table) becomes a symlink to BIN,
# replacing qubesd's socket symlink for that method. qrexec then runs BIN once per call as an
# executable service (QREXEC_SERVICE_FULL_NAME etc. in the environment).
set -eu
here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-/usr/lib/qubes-admin/qubes-admin-call}
dir=${2:-/etc/qubes-rpc}
[ -x "$bin" ] || { echo "install.sh: $bin is not an executable" >&2; exit 1; }
mkdir -p "$dir"
n=0
while read -r name; do
    case $name in ''|'#'*) continue ;; esac
    ln -sfn "$bin" "$dir/$name"
    n=$((n + 1))
done < "$here/services.list"
echo "install.sh: linked $n services in $dir to $bin"
