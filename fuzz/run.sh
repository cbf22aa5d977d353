#!/usr/bin/env bash
# Runs every fuzz target for a short time (CI), or one target for longer.
#
#   ./fuzz/run.sh [SECONDS] [TARGET...]     default: 20 seconds, every target
#
# Needs the nightly toolchain (libFuzzer instrumentation) and cargo-fuzz; installs cargo-fuzz
# when missing. Sanitizer: none — the workspace forbids unsafe code, so AddressSanitizer finds
# nothing the Rust checks do not, and costs build time; the target hunts panics, hangs, OOMs.
# The corpus in fuzz/corpus/<target>/ is read and grown; crashes land in fuzz/artifacts/<target>/
# and must become regression inputs in fuzz/regressions/<target>/ (replayed by `cargo test`).
set -euo pipefail
cd "$(dirname "$0")"
secs=${1:-20}
shift || true

if ! cargo +nightly --version >/dev/null 2>&1; then
    rustup toolchain install nightly --profile minimal
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
    cargo install cargo-fuzz --locked --version 0.13.2
fi

targets=("$@")
if [ "${#targets[@]}" -eq 0 ]; then
    mapfile -t targets < <(cargo +nightly fuzz list)
fi

log=$(mktemp)
trap 'rm -f "$log"' EXIT
for t in "${targets[@]}"; do
    mkdir -p "corpus/$t"
    echo "== fuzz $t for ${secs}s"
    status=0
    cargo +nightly fuzz run --sanitizer none "$t" "corpus/$t" -- \
        -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
        >"$log" 2>&1 || status=$?
    grep -E '^(stat::number_of_executed_units|stat::peak_rss_mb|#[0-9]+ +DONE)' "$log" || true
    if [ "$status" -ne 0 ]; then
        tail -n 40 "$log" >&2
        echo "fuzz/run.sh: target $t failed (exit $status); the crashing input is in fuzz/artifacts/$t/" >&2
        exit 1
    fi
done
