#!/usr/bin/env bash
# Static builds of the Scanbridge agent for gateway boxes, from one command:
#
#   ./cross/build.sh [aarch64|armv7|x86_64 ...]     # default: all three
#
# Installs its own toolchain pieces when missing (cross/lib.sh): the rustup targets, Debian's
# cross C compilers and the target libc headers (ring, the TLS crypto, compiles C and assembly for
# the target). Needs root or sudo only for those installs.
#
# Targets: aarch64-unknown-linux-musl, x86_64-unknown-linux-musl, and
# armv7-unknown-linux-musleabihf — or, where rustup cannot fetch that one (it cannot on this
# project's build machines), armv7-unknown-linux-gnueabihf linked statically (+crt-static).
#
# Prints the stripped size of each binary (the release profile strips symbols), whether it is
# static, and its --version as it starts (ARM builds under qemu-user when installed); exits 1 when
# one is over the budget of 10 MiB, not static or does not start.
# Output: target/<triple>/release/scanbridge-agent (under $CARGO_TARGET_DIR when set).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=cross/lib.sh
. cross/lib.sh

budget=$((10 * 1024 * 1024))
arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(aarch64 armv7 x86_64)
cross_need_pkgs file

status=0
report=()
for arch in "${arches[@]}"; do
    cross_setup "$arch"
    echo "== cross: building scanbridge-agent for $TRIPLE" >&2
    cargo build --release --locked -p scanbridge-agent --target "$TRIPLE"

    bin="${CARGO_TARGET_DIR:-target}/$TRIPLE/release/scanbridge-agent"
    size=$(stat -c %s "$bin")
    kind=$(file -b "$bin")
    linkage=dynamic
    case "$kind" in *"statically linked"* | *"static-pie linked"*) linkage=static ;; esac
    stripped=stripped
    case "$kind" in *"not stripped"*) stripped="NOT stripped" ;; esac
    line=$(printf '%-32s %9d bytes  %5.2f MiB  %s, %s  (budget 10 MiB)' \
        "$TRIPLE" "$size" "$(awk -v s="$size" 'BEGIN { print s / 1048576 }')" "$linkage" "$stripped")
    if [ "$size" -ge "$budget" ]; then
        line+="  OVER BUDGET"
        status=1
    fi
    if [ "$linkage" != static ]; then
        line+="  NOT STATIC"
        status=1
    fi
    # Smoke test: the binary starts (under qemu-user when it is installed, for the ARM builds).
    case "$TRIPLE" in
        aarch64-*) runner=$(command -v qemu-aarch64 || command -v qemu-aarch64-static || true) ;;
        armv7-*) runner=$(command -v qemu-arm || command -v qemu-arm-static || true) ;;
        *) runner="env" ;;
    esac
    if [ -z "$runner" ]; then
        line+="  (not run: no qemu-user)"
    elif version=$("$runner" "$bin" --version 2>&1); then
        line+="  runs: $version"
    else
        line+="  DOES NOT START: $version"
        status=1
    fi
    echo "$line"
    report+=("$line")
done
echo "== cross: scanbridge-agent sizes"
printf '%s\n' "${report[@]}"
exit "$status"
