#!/usr/bin/env bash
# A bounded mixed load (create, get, list, update, delete, watch) on the
# release build for SECONDS (default 600), on loopback; reports errors,
# resident memory and open descriptors at the start, every minute and the end.
# Fails if any request failed.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --quiet --workspace
./target/release/meshrelease-bench --soak "${1:-600}"
