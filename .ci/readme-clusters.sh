#!/usr/bin/env bash
# Runs the README's section "Try it with two simulated clusters" exactly as
# written: its ```bash blocks, in order, as one script that stops at the
# first failing command. Background processes it starts are stopped at the end.
set -euo pipefail
cd "$(dirname "$0")/.."

script=$(awk '
  /^## Try it with two simulated clusters/ { section = 1; next }
  /^## / { section = 0 }
  section && /^```bash/ { inside = 1; next }
  section && /^```/ { inside = 0; next }
  section && inside { print }
' README.md)
[ -n "$script" ] || { echo "the README has no such section"; exit 1; }
echo "$script"
echo "-- running it"
bash -c "set -euo pipefail; trap 'jobs -p | xargs -r kill 2>/dev/null || true' EXIT
$script" >/tmp/readme-clusters.out 2>&1 || { cat /tmp/readme-clusters.out; echo "FAILED"; exit 1; }
tail -n 3 /tmp/readme-clusters.out
grep -q '"reason":"NotFound"' /tmp/readme-clusters.out || { cat /tmp/readme-clusters.out; echo "FAILED: the original Deployment was not deleted"; exit 1; }
grep -q '"weight":30' /tmp/readme-clusters.out || { echo "FAILED: the VirtualService never showed weight 30"; exit 1; }
echo "README cluster walk-through: passed"
