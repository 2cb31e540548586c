#!/usr/bin/env bash
# The deployment files: the Kubernetes manifests against the Kubernetes API
# schemas (kubernetes-validate from PyPI, strict: an unknown or misspelt
# field fails), and the configuration the ConfigMap carries through
# `meshrelease --check-config` (with the mounted files stood in for).
set -euo pipefail
cd "$(dirname "$0")/.."

venv="${TMPDIR:-/tmp}/meshrelease-kubernetes-validate-venv"
if [ ! -x "$venv/bin/kubernetes-validate" ]; then
  python3 -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check kubernetes-validate==1.34.1
fi
"$venv/bin/kubernetes-validate" --strict --quiet -k 1.34.0 deploy/kubernetes/*.yaml

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
"$venv/bin/python" - deploy/kubernetes/meshrelease.yaml "$work/meshrelease.toml" <<'PY'
import sys, yaml
for doc in yaml.safe_load_all(open(sys.argv[1])):
    if doc and doc.get("kind") == "ConfigMap":
        open(sys.argv[2], "w").write(doc["data"]["meshrelease.toml"])
PY
printf 'stand-in\n' > "$work/password"; chmod 600 "$work/password"
cargo build --release --quiet -p meshrelease
MESHRELEASE_CLUSTERS='[]' MESHRELEASE_CREDENTIALS='[]' \
  ./target/release/meshrelease --config "$work/meshrelease.toml" \
  --database-password-file "$work/password" --check-config
