#!/usr/bin/env bash
# The whole Scanbridge test suite, exactly as CI runs it (.ci/run calls this script).
#
#   ./tests/run.sh
#
# Installs mosquitto when missing, builds every binary (the end-to-end tests run them as separate
# processes), then runs every test of the workspace: unit, property, TLS, broker and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."

./tests/ensure-deps.sh

echo "== format check"
cargo fmt --all -- --check

echo "== lints"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== build all binaries"
cargo build --workspace --bins --locked

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one summary per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "workspace: %d passed, %d failed\n", p, f }' "$log"
exit "$status"
