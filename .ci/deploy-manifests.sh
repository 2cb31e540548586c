#!/usr/bin/env bash
# The deployment files: the Kubernetes manifests against the Kubernetes API
# schemas (kubernetes-validate from PyPI, strict: an unknown or misspelt
# field fails), and the configuration the ConfigMap carries through
# `meshrelease --check-config` (with the mounted files stood in for).
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/tools.sh
venv=$(ci_kubernetes_validate)
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
# The whole workspace, as the README's steps build it: one set of features,
# so that no later release build compiles a dependency again.
cargo build --release --quiet
MESHRELEASE_CLUSTERS='[]' MESHRELEASE_CREDENTIALS='[]' \
  ./target/release/meshrelease --config "$work/meshrelease.toml" \
  --database-password-file "$work/password" --check-config
