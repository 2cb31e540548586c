#!/usr/bin/env bash
# Schemathesis (from PyPI), with all its checks, against the OpenAPI
# description the release build serves at /openapi.json, with a token.
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TMPDIR:-/tmp}/meshrelease-schemathesis-venv"
[ -x "$venv/bin/st" ] || { python3 -m venv "$venv"; "$venv/bin/pip" install --quiet --disable-pip-version-check schemathesis; }

cargo build --release --quiet
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/release/meshrelease --config examples/quickstart.toml \
  --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "the server exited:"; cat "$work/log"; exit 1; }
  sleep 0.1
done

curl -sS --fail-with-body -H "X-Auth-Token: demo-token" "http://127.0.0.1:$port/openapi.json" >"$work/openapi.json"
"$venv/bin/st" --config-file .ci/schemathesis.toml run "$work/openapi.json" \
  --url "http://127.0.0.1:$port" -H "X-Auth-Token: demo-token" \
  --checks all --max-examples "${SCHEMATHESIS_MAX_EXAMPLES:-100}" --seed 1 || {
  echo "server log (last lines):"; tail -n 50 "$work/log"; exit 1;
}
