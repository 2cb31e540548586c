#!/usr/bin/env bash
# Runs the sections "Try it with two simulated clusters", "A release
# pipeline with mrctl" and "A release that runs itself" of docs/tutorial.md
# exactly as written: their ```bash blocks, in order, each section as one
# script that stops at the first failing command (the later sections after
# the first section's set-up block, as the page says). Background processes a script starts are stopped at its end.
set -euo pipefail
cd "$(dirname "$0")/.."

# The ```bash blocks of the docs/tutorial.md section titled $1 (only the first with $2 = first).
blocks() {
  awk -v title="## $1" -v only_first="${2:-}" '
    $0 == title { section = 1; next }
    /^## / { section = 0 }
    section && /^```bash/ { inside = 1; next }
    section && inside && /^```/ { inside = 0; if (only_first) exit; next }
    section && inside { print }
  ' docs/tutorial.md
}

run_section() {
  local name=$1 script=$2 out=$3
  [ -n "$script" ] || { echo "docs/tutorial.md has no section '$name'"; exit 1; }
  echo "$script"
  echo "-- running it"
  bash -c "set -euo pipefail; trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT
$script" >"$out" 2>&1 || { cat "$out"; echo "FAILED: '$name'"; exit 1; }
  tail -n 3 "$out"
}

out=/tmp/readme-clusters.out
run_section "Try it with two simulated clusters" "$(blocks 'Try it with two simulated clusters')" "$out"
grep -q '"reason":"NotFound"' "$out" || { cat "$out"; echo "FAILED: the original Deployment was not deleted"; exit 1; }
grep -q '"weight":30' "$out" || { echo "FAILED: the VirtualService never showed weight 30"; exit 1; }
echo "tutorial cluster walk-through: passed"

out=/tmp/readme-mrctl.out
setup=$(blocks 'Try it with two simulated clusters' first)
pipeline=$(blocks 'A release pipeline with mrctl')
[ -n "$pipeline" ] || { echo "docs/tutorial.md has no mrctl section"; exit 1; }
run_section "A release pipeline with mrctl" "$setup
$pipeline" "$out"
grep -q 'step 3/3: 100% of requests go to the gray version' "$out" || { cat "$out"; echo "FAILED: promote did not reach 100%"; exit 1; }
grep -Eq '^reviews-canary +reviews +canary +v2 +Ended +100%' "$out" || { cat "$out"; echo "FAILED: the release did not end at 100%"; exit 1; }
echo "tutorial mrctl pipeline: passed"

out=/tmp/readme-strategy.out
strategy=$(blocks 'A release that runs itself')
[ -n "$strategy" ] || { echo "docs/tutorial.md has no section 'A release that runs itself'"; exit 1; }
run_section "A release that runs itself" "$setup
$strategy" "$out"
grep -q '^Running .* HeldByWebhook: promotion-gate$' "$out" || { cat "$out"; echo "FAILED: the gate did not hold the release"; exit 1; }
grep -q 'promotion-gate confirm-promotion Pass answered 200 (yes)$' "$out" || { cat "$out"; echo "FAILED: the gate's yes is not in the record"; exit 1; }
grep -q ': yes$' "$out" || { cat "$out"; echo "FAILED: the gate was never asked once open"; exit 1; }
echo "tutorial release that runs itself: passed"
