#!/usr/bin/env bash
# Runs the agent's unit tests as aarch64 code under qemu-user, the way a gateway box runs them:
#
#   ./cross/qemu-test.sh [-- <test harness args, e.g. a test name filter>]
#
# Installs its own pieces when missing (cross/lib.sh, plus Debian's qemu-user), builds the
# agent's library tests for aarch64-unknown-linux-musl and runs them with
# CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER=qemu-aarch64 (no binfmt_misc registration needed,
# so it also works in containers). Needs root or sudo only for the installs.
#
# Built with --release: the test binary then reuses the aarch64 dependencies that
# `cross/build.sh aarch64` compiled (the release profile keeps panic = "unwind"), which halves the
# CI cost; what the tests check does not depend on debug assertions.
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/lib.sh
. cross/lib.sh

[ "${1:-}" != "--" ] || shift

cross_setup aarch64
qemu=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true)
if [ -z "$qemu" ]; then
    cross_need_pkgs qemu-user
    qemu=$(command -v qemu-aarch64)
fi
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_MUSL_RUNNER="$qemu"

echo "== cross: agent unit tests on $TRIPLE under $("$qemu" --version | head -n1)" >&2
cargo test --release --locked -p scanbridge-agent --lib --target "$TRIPLE" -- --test-threads=2 "$@"
