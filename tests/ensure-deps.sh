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
# Headless Chromium + chromedriver for the fleet page test (cloud-relay/tests/fleet_page_browser.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
    need_pkgs+=(chromium chromium-driver)
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

# promtool (checks deploy/monitoring/scanbridge-alerts.yml in cloud-relay/tests/admin_monitoring.rs).
# Only the binary is taken out of Debian's `prometheus` package (no server, no service):
# target/tools/promtool.
repo_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
if ! command -v promtool >/dev/null 2>&1 && [ ! -x "$repo_root/target/tools/promtool" ]; then
    echo "tests/ensure-deps.sh: extracting promtool from Debian's prometheus package into target/tools/" >&2
    tmp="$(mktemp -d)"
    (
        cd "$tmp"
        if ! apt-get download prometheus >/dev/null 2>&1; then
            apt-get update -qq >/dev/null 2>&1 || true
            apt-get download prometheus >/dev/null
        fi
        dpkg-deb -x prometheus_*.deb extracted
    )
    mkdir -p "$repo_root/target/tools"
    cp "$tmp/extracted/usr/bin/promtool" "$repo_root/target/tools/promtool"
    rm -rf "$tmp"
fi
