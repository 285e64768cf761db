#!/bin/bash
# Short fuzz run (CI): builds the cargo-fuzz targets in fuzz/ and runs each for a bounded time
# on its seed corpus plus the kept regression inputs; fails on any crash. docs/testing-fuzz.md.
#
#   scripts/fuzz-ci.sh                 # every target, FUZZ_SECONDS (default 20) each
#   scripts/fuzz-ci.sh xml_codec       # some targets
#   FUZZ_SECONDS=1200 scripts/fuzz-ci.sh dispatch   # a long run (one target at a time)
#
# cargo fuzz needs nightly compiler flags (-Zsanitizer, sancov passes); the machine has the
# stable toolchain only, so RUSTC_BOOTSTRAP=1 unlocks them. No sanitizer: the library denies
# unsafe code, so what the runs look for are panics (debug assertions and overflow checks are
# on) and the targets' asserts; ASan would cost ~4x the executions for nothing to find.
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_EACH=${FUZZ_SECONDS:-20}
TARGETS=("$@")
[ ${#TARGETS[@]} -gt 0 ] || TARGETS=(dispatch xml_codec framing)
export RUSTC_BOOTSTRAP=1
export PATH="$HOME/.cargo/bin:$PATH"

if ! cargo fuzz --version >/dev/null 2>&1; then
    echo "fuzz-ci: installing cargo-fuzz"
    cargo install cargo-fuzz --locked --quiet
fi
# fuzz/ is its own workspace with its own committed lock file: refuse to run on a stale one
# (cargo fuzz has no --locked of its own).
cargo metadata --locked --format-version 1 --manifest-path fuzz/Cargo.toml >/dev/null

start=$(date +%s)
(cd fuzz && cargo fuzz build -s none)
BIN=fuzz/target/x86_64-unknown-linux-gnu/release
echo "fuzz-ci: build took $(( $(date +%s) - start )) s"

[ -d fuzz/corpus/dispatch ] || fuzz/seed.sh
OUT=${FUZZ_OUT:-fuzz/artifacts}
mkdir -p "$OUT"
fail=0
for t in "${TARGETS[@]}"; do
    mkdir -p "fuzz/corpus/$t" "fuzz/regressions/$t"
    args=(-max_total_time="$SECONDS_EACH" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1
          -artifact_prefix="$OUT/$t-")
    case $t in
        dispatch) args+=(-max_len=8192 -dict=fuzz/corpus/dispatch.dict) ;;
        framing) args+=(-max_len=8192) ;;
        xml_codec) args+=(-max_len=65536) ;;
    esac
    log="$OUT/$t.log"
    echo "fuzz-ci: $t for ${SECONDS_EACH}s (log: $log)"
    # Regression inputs first, each on its own (a crash names the file).
    if compgen -G "fuzz/regressions/$t/*" >/dev/null; then
        if ! "$BIN/$t" fuzz/regressions/$t/* >"$log.regressions" 2>&1; then
            echo "fuzz-ci: $t FAILED on a kept regression input:"; tail -40 "$log.regressions"
            fail=1; continue
        fi
    fi
    if "$BIN/$t" "${args[@]}" "fuzz/corpus/$t" "fuzz/regressions/$t" >"$log" 2>&1; then
        grep -a -E '^(#[0-9]+\s+DONE|stat::number_of_executed_units|stat::peak_rss_mb)' "$log" || true
    else
        echo "fuzz-ci: $t FAILED (crash input under $OUT/):"; grep -a -A12 -E 'panicked|ERROR' "$log" | head -60
        fail=1
    fi
done
echo "fuzz-ci: total $(( $(date +%s) - start )) s"
exit $fail
