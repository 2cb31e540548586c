#!/usr/bin/env bash
# Signs real REST requests with the cloud's official Python SDK core
# (huaweicloudsdkcore, from PyPI) against the release build, and expects 200s
# (and a 401 for a wrong secret key).
set -euo pipefail
cd "$(dirname "$0")/.."
source .ci/quickstart-server.sh

source .ci/tools.sh
venv=$(ci_sdk)

ak="QTWAOYTTINDUT2QVKYUC"
sk=$(python3 -c 'import secrets; print(secrets.token_hex(20))')
(umask 077; printf '%s\n' "$sk" >"$work/sdk-client.sk")
MESHRELEASE_CREDENTIALS="[{ subject = \"sdk-client\", access_key = \"$ak\", secret_key_file = \"$work/sdk-client.sk\", allow = [{ actions = [\"asm:mesh:*\"], meshes = [\"*\"] }] }]" \
  start_quickstart_server

"$venv/bin/python" tests/sdk/sign_with_sdk.py "$base" "$ak" "$sk" || {
  echo "server log:"; cat "$work/log"; exit 1;
}
