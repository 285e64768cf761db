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
