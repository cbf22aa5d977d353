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

# ---- packaging and cross builds (owner: packaging, issue 6) ------------------------------------
# The static aarch64 agent (size budget), the agent's unit tests as aarch64 code under qemu-user,
# and the Debian packages: built, installed on this machine, checked and purged. Each script
# installs what it needs. SCANBRIDGE_SKIP_PACKAGING=1 skips this on a developer machine
# (tests/packaging/check.sh installs packages and needs root).
if [ "${SCANBRIDGE_SKIP_PACKAGING:-0}" != 1 ]; then
    echo "== cross: static aarch64 agent"
    ./cross/build.sh aarch64
    echo "== cross: agent unit tests on aarch64 under qemu-user"
    ./cross/qemu-test.sh
    echo "== packaging: Debian packages, container file"
    ./tests/packaging/check.sh
fi
# ---- end packaging -------------------------------------------------------------------------------

echo "== tests"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
cargo test --workspace --locked --no-fail-fast -- --test-threads=2 2>&1 | tee "$log"
status=${PIPESTATUS[0]}
set -e
# One closing line for the whole workspace (cargo prints one summary per test binary).
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i+1) ~ /^passed/) p += $i; if ($(i+1) ~ /^failed/) f += $i } }
     END { printf "workspace: %d passed, %d failed\n", p, f }' "$log"

# ---- fuzzing (issue 7) ---------------------------------------------------------------------------
# A short libFuzzer run of every target in fuzz/ (nightly toolchain; cargo-fuzz installed when
# missing). The committed corpora are also replayed by `cargo test` above on stable.
if [ "${SCANBRIDGE_SKIP_FUZZ:-0}" != 1 ]; then
    echo "== fuzz: every target for ${SCANBRIDGE_FUZZ_SECS:-15}s"
    ./fuzz/run.sh "${SCANBRIDGE_FUZZ_SECS:-15}" || status=1
fi
exit "$status"
