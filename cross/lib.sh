# shellcheck shell=bash
# Shared by cross/build.sh and cross/qemu-test.sh (sourced, not run): installs and selects the
# toolchain pieces for one target architecture of the agent.
#
#   cross_setup aarch64|armv7|x86_64
#
# sets TRIPLE (the Rust target used) and exports the C compiler and linker variables cargo and
# the cc crate read (ring, the TLS crypto, compiles C and assembly for the target). Installs, only
# when missing: the rustup target, Debian's cross gcc and the target's libc headers.
#
# armv7: the preferred target is armv7-unknown-linux-musleabihf. Where rustup cannot fetch its
# standard library (this project's build machines reach only package registries, and rustup's
# mirror here serves aarch64 and x86_64 musl but not armv7 musl), cross_setup falls back to
# armv7-unknown-linux-gnueabihf linked statically against Debian's armhf glibc
# (`-C target-feature=+crt-static`): still one self-contained binary, and it says so.

cross_apt_install() {
    local sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        command -v sudo >/dev/null 2>&1 || { echo "cross: need root or sudo to install $*" >&2; return 1; }
        sudo_cmd=(sudo)
    fi
    echo "cross: installing $* (Debian packages)" >&2
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

# Installs the Debian packages named when any of them is missing.
cross_need_pkgs() {
    local missing=() p
    for p in "$@"; do
        dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'install ok installed' || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] || cross_apt_install "${missing[@]}"
}

# Adds a rustup target when missing; returns non-zero when rustup cannot fetch it.
cross_rustup_target() {
    rustup target list --installed | grep -qx "$1" && return 0
    rustup target add "$1" >/dev/null 2>&1
}

cross_setup() {
    local arch=$1 cc pkgs=()
    case "$arch" in
        aarch64)
            TRIPLE=aarch64-unknown-linux-musl; cc=aarch64-linux-gnu-gcc
            pkgs=(gcc-aarch64-linux-gnu libc6-dev-arm64-cross) ;;
        armv7)
            TRIPLE=armv7-unknown-linux-musleabihf; cc=arm-linux-gnueabihf-gcc
            pkgs=(gcc-arm-linux-gnueabihf libc6-dev-armhf-cross) ;;
        x86_64)
            TRIPLE=x86_64-unknown-linux-musl; cc=gcc
            pkgs=(gcc libc6-dev) ;;
        *)
            echo "cross: unknown architecture '$arch' (expected aarch64, armv7 or x86_64)" >&2
            return 64 ;;
    esac
    cross_need_pkgs "${pkgs[@]}"
    if ! cross_rustup_target "$TRIPLE"; then
        if [ "$arch" != armv7 ]; then
            echo "cross: rustup could not add the target $TRIPLE (rustup target add $TRIPLE)" >&2
            return 1
        fi
        echo "cross: rustup cannot fetch $TRIPLE here; building armv7-unknown-linux-gnueabihf" \
            "statically linked against glibc instead (+crt-static)" >&2
        TRIPLE=armv7-unknown-linux-gnueabihf
        cross_rustup_target "$TRIPLE" || {
            echo "cross: rustup could not add $TRIPLE either" >&2
            return 1
        }
        export CARGO_TARGET_ARMV7_UNKNOWN_LINUX_GNUEABIHF_RUSTFLAGS="-C target-feature=+crt-static"
    fi
    local env_triple
    env_triple=$(echo "$TRIPLE" | tr 'a-z-' 'A-Z_')
    export "CC_${TRIPLE//-/_}=$cc"
    export "CARGO_TARGET_${env_triple}_LINKER=$cc"
}
