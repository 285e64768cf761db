#!/bin/bash
# Builds the per-call binary that gets installed: qubes-admin-call linked statically
# (glibc static-pie, no libvirt). A call is one short process, so start-up is most of its
# cost: without the dynamic loader (mapping libc and libgcc_s, resolving symbols) a call
# starts about 0.3 ms sooner, below even /bin/true (BENCHMARKS.md). Same code, same
# behaviour: scripts/test.sh runs the byte-exact suites on this build too.
# Output: target/static/release/qubes-admin-call
set -euo pipefail
cd "$(dirname "$0")/.."
cargo rustc --release --locked -p qubes-admin-services --no-default-features \
    --bin qubes-admin-call --target-dir target/static -- -C target-feature=+crt-static
# As installed, the helper sits beside it (a call with no helper running starts
# `qubes-admin-eventd --once` from its own directory): link cargo's build there.
ln -sfn ../../release/qubes-admin-eventd target/static/release/qubes-admin-eventd
echo target/static/release/qubes-admin-call
