#!/usr/bin/env bash
# Every fuzz target, coverage-guided, for SECONDS each (default 15) from the
# committed seeds, on the stable toolchain: the same instrumentation cargo
# fuzz asks for (sancov), without AddressSanitizer (which needs nightly).
# A panic or a timeout is a crash: libFuzzer exits non-zero and prints the
# input, and this script fails. `fuzz/run-all.sh` runs them longer.
# `fuzz.sh build` only builds them.
set -euo pipefail
cd "$(dirname "$0")/../fuzz"
seconds="${1:-15}"
export RUSTFLAGS="--cfg fuzzing -Cpasses=sancov-module \
  -Cllvm-args=-sanitizer-coverage-level=4 \
  -Cllvm-args=-sanitizer-coverage-inline-8bit-counters \
  -Cllvm-args=-sanitizer-coverage-pc-table \
  -Cllvm-args=-sanitizer-coverage-trace-compares \
  -Cdebug-assertions -Coverflow-checks"
# With --target, RUSTFLAGS reach the fuzzed code only, not build scripts.
host=$(rustc -vV | sed -n 's/^host: //p')
# At opt-level 1, not cargo fuzz's 3: the instrumented build of every
# dependency is shorter (5.1 min here, against 7.9 in the last CI run at 3),
# and a short run from the seeds looks for regressions, not for new inputs
# at top speed (FUZZ_OPT_LEVEL=3 for a long run).
export CARGO_PROFILE_RELEASE_OPT_LEVEL="${FUZZ_OPT_LEVEL:-1}"
cargo build --release --quiet --bins --target "$host" --target-dir target/ci
[ "$seconds" = build ] && exit 0
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
for target in rest_body grpc_message path_and_query patch_release; do
  mkdir -p "$work/$target" "seeds/$target"
  echo "== $target for ${seconds}s"
  ./target/ci/"$host"/release/"$target" "$work/$target" "seeds/$target" \
    -max_total_time="$seconds" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
    -artifact_prefix="$work/" 2>&1 | tail -n 3
done
