#!/bin/bash
# Runs every test: formatting, lints, unit tests, integration tests (front ends, golden replies
# against fixtures written by the real qubesd, libvirt runtime state through a private
# libvirtd, multi-process concurrency). Installs what it needs on Debian 12 first.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup-debian.sh
cargo fmt --all -- --check
cargo clippy --workspace --all-targets --locked -- -D warnings
cargo build --workspace --locked --release
cargo test --workspace --locked --release
# The installed per-call binary is a static build of the same code (scripts/build-call.sh): the
# byte-exact suites run again on it.
scripts/build-call.sh
QUBES_ADMIN_CALL_BIN=$PWD/target/static/release/qubes-admin-call \
  cargo test --locked --release -p qubes-admin-services \
  --test cli --test golden --test hostile --test sockets --test migrations --test index
scripts/fuzz-ci.sh                    # short fuzz run, ~20 s per target (docs/testing-fuzz.md)
# Crash suite (docs/testing-crash.md), short mode: every fail point × 5 write methods and 150
# SIGKILL trials. The binary needs the test-only `failpoints` feature; its own target dir keeps
# that build from replacing target/release/qubes-admin-call.
cargo test --release --locked -p qubes-admin-services --features failpoints --test crash \
  --target-dir target/failpoints
