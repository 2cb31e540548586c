#!/usr/bin/env bash
# Runs every fuzz target for SECONDS (default 600) each, one after another,
# from the committed seeds plus what earlier runs found (corpus/, not
# committed). Crashes land in artifacts/<target>/. Needs `cargo install cargo-fuzz`.
set -euo pipefail
cd "$(dirname "$0")"
seconds="${1:-600}"
export RUSTC_BOOTSTRAP=1   # cargo fuzz needs nightly flags; the stable toolchain takes them so
for target in rest_body grpc_message path_and_query patch_release; do
  mkdir -p "corpus/$target"
  echo "== $target for ${seconds}s"
  cargo fuzz run -O "$target" "corpus/$target" "seeds/$target" -- \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 2>&1 | tail -n 4
done
