#!/usr/bin/env bash
# Local demo on embedded defaults: a mosquitto broker, the Odoo simulator, a CA and a WH01 site
# bundle, the relay, the agent, and a scanner simulator publishing a realistic stream (with a few
# malformed payloads and unknown barcodes). Prints what happens and where to look; Ctrl-C stops
# everything cleanly. State and logs go to ./demo-state (wiped at each start).
#
#   ./tests/demo.sh            # extra arguments are passed to scanbridge-demo (see --help)
set -euo pipefail
cd "$(dirname "$0")/.."

./tests/ensure-deps.sh
cargo build --release --workspace --bins --locked
exec ./target/release/scanbridge-demo "$@"
