#!/usr/bin/env bash
# Signs real REST requests with the cloud's official Python SDK core
# (huaweicloudsdkcore, from PyPI) against the release build, and expects 200s
# (and a 401 for a wrong secret key).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TMPDIR:-/tmp}/meshrelease-sdk-venv"
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/pip" install --quiet --disable-pip-version-check huaweicloudsdkcore requests

cargo build --release --quiet
work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

ak="QTWAOYTTINDUT2QVKYUC"
sk=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
(umask 077; printf '%s\n' "$sk" >"$work/sdk-client.sk")
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

MESHRELEASE_CREDENTIALS="[{ subject = \"sdk-client\", access_key = \"$ak\", secret_key_file = \"$work/sdk-client.sk\", allow = [{ actions = [\"asm:mesh:*\"], meshes = [\"*\"] }] }]" \
  ./target/release/meshrelease --config examples/quickstart.toml \
  --listen "127.0.0.1:$port" --data-dir "$work/data" >"$work/log" 2>&1 &
server=$!
for _ in $(seq 1 300); do
  curl -sf "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "the server exited:"; cat "$work/log"; exit 1; }
  sleep 0.1
done

"$venv/bin/python" tests/sdk/sign_with_sdk.py "http://127.0.0.1:$port" "$ak" "$sk" || {
  echo "server log:"; cat "$work/log"; exit 1;
}
