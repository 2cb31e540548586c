#!/usr/bin/env bash
# Runs the README's run command and then every curl and grpcurl example of
# the README, docs/api.md and docs/operations.md, exactly as written, each file against a
# fresh server on a free port, and compares the answers with the ones the
# pages show (.ci/examples.py says how).
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/tools.sh
if ! command -v grpcurl >/dev/null; then
  export PATH="$PATH:$(ci_grpcurl)"
fi

run_command=$(grep -m1 '^cargo run' README.md | sed 's/ *#.*$//')
echo "run command: $run_command"
cargo build --release --quiet
python3 .ci/examples.py "$run_command" README.md docs/api.md docs/operations.md
