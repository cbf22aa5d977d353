#!/usr/bin/env bash
# Static musl builds of the Scanbridge agent for gateway boxes, from one command:
#
#   ./cross/build.sh [aarch64|armv7|x86_64 ...]     # default: all three
#
# Installs its own toolchain pieces when missing: the rustup targets and Debian's cross C
# compilers (ring, the TLS crypto, compiles C and assembly for the target). Prints the stripped
# size of each binary; the budget is 10 MiB. Output: target/<triple>/release/scanbridge-agent.
set -euo pipefail
cd "$(dirname "$0")/.."

budget=$((10 * 1024 * 1024))
arches=("$@")
[ "${#arches[@]}" -gt 0 ] || arches=(aarch64 armv7 x86_64)

apt_install() {
    local sudo_cmd=()
    [ "$(id -u)" -eq 0 ] || sudo_cmd=(sudo)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

status=0
for arch in "${arches[@]}"; do
    case "$arch" in
        aarch64) triple=aarch64-unknown-linux-musl; cc=aarch64-linux-gnu-gcc; pkg="gcc-aarch64-linux-gnu libc6-dev-arm64-cross" ;;
        armv7) triple=armv7-unknown-linux-musleabihf; cc=arm-linux-gnueabihf-gcc; pkg="gcc-arm-linux-gnueabihf libc6-dev-armhf-cross" ;;
        x86_64) triple=x86_64-unknown-linux-musl; cc=gcc; pkg=gcc ;;
        *) echo "unknown architecture '$arch' (expected aarch64, armv7 or x86_64)" >&2; exit 64 ;;
    esac
    # shellcheck disable=SC2086 # pkg is a list of package names
    dpkg -s $pkg >/dev/null 2>&1 || apt_install $pkg
    rustup target list --installed | grep -qx "$triple" || rustup target add "$triple"

    env_triple=$(echo "$triple" | tr 'a-z-' 'A-Z_')
    export "CC_${triple//-/_}=$cc"
    export "CARGO_TARGET_${env_triple}_LINKER=$cc"
    cargo build --release --locked -p scanbridge-agent --target "$triple"

    bin="target/$triple/release/scanbridge-agent"
    size=$(stat -c %s "$bin")
    printf '%-34s %9d bytes  (%.2f MiB, budget 10 MiB)\n' "$triple" "$size" "$(echo "$size / 1048576" | bc -l)"
    if [ "$size" -ge "$budget" ]; then
        echo "  over budget" >&2
        status=1
    fi
done
exit "$status"
