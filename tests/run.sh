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

echo "== build all binaries"
cargo build --workspace --bins --locked

echo "== tests"
cargo test --workspace --locked -- --test-threads=2
