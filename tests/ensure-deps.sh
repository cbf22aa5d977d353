#!/usr/bin/env bash
# Installs what the test suite and the demo need beyond the Rust toolchain, when missing:
# mosquitto (Debian package) and libfaketime (Debian `faketime`, for the wall-clock jump scenario
# in tests/e2e/tests/scenarios.rs). Never assumes a broker service is running: the tests start their own
# brokers on free ports. Safe to run repeatedly.
set -euo pipefail

need_pkgs=()
if ! command -v mosquitto >/dev/null 2>&1 && [ ! -x /usr/sbin/mosquitto ]; then
    need_pkgs+=(mosquitto mosquitto-clients)
fi
if ! ls /usr/lib/*/faketime/libfaketime.so.1 >/dev/null 2>&1; then
    need_pkgs+=(faketime)
fi

if [ "${#need_pkgs[@]}" -gt 0 ]; then
    echo "tests/ensure-deps.sh: installing ${need_pkgs[*]} (Debian packages)" >&2
    sudo_cmd=()
    if [ "$(id -u)" -ne 0 ]; then
        if command -v sudo >/dev/null 2>&1; then
            sudo_cmd=(sudo)
        else
            echo "tests/ensure-deps.sh: need root or sudo to install ${need_pkgs[*]}" >&2
            exit 1
        fi
    fi
    export DEBIAN_FRONTEND=noninteractive
    "${sudo_cmd[@]}" apt-get update -qq
    "${sudo_cmd[@]}" apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >/dev/null
fi
