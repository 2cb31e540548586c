#!/usr/bin/env bash
# The console in a real browser: Debian's Chromium (apt-get) driven by
# Playwright (PyPI), headless, against the service and two simulated
# clusters started here. `--shots DIR` also writes the screenshots of docs/tutorial.md.
set -euo pipefail
cd "$(dirname "$0")/.."

shots=""
[ "${1:-}" = "--shots" ] && shots=$(realpath "$2")

source .ci/tools.sh
ci_chromium
venv=$(ci_playwright)

# The strategy's metric checks read a real Prometheus (Debian's), scraping
# an exporter of Istio's series whose error rate the test sets.
ci_prometheus

# The build `cargo test` makes (the workspace, with the tests' dependencies'
# features): after it, nothing is compiled again.
cargo build --quiet --all-targets
work=$(mktemp -d)
pids=()
cleanup() {
  touch "$work/stop"
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  pkill -f "meshrelease --config $work/service.toml" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
wait_for() { for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 0.2; done; echo "no answer from $1"; return 1; }

port_a=$(free_port); port_b=$(free_port); port=$(free_port); port_exporter=$(free_port); port_prometheus=$(free_port)
echo '{}' >"$work/traffic.json"
python3 tests/console/istio_exporter.py "$port_exporter" "$work/traffic.json" &
pids+=($!)
printf '%s\n' "global: {scrape_interval: 1s, scrape_timeout: 1s, evaluation_interval: 1s}" \
  "scrape_configs: [{job_name: istio, static_configs: [{targets: ['127.0.0.1:$port_exporter']}]}]" >"$work/prometheus.yml"
prometheus --config.file="$work/prometheus.yml" --storage.tsdb.path="$work/tsdb" \
  --web.listen-address="127.0.0.1:$port_prometheus" --log.level=warn >"$work/prometheus.log" 2>&1 &
pids+=($!)
./target/debug/meshrelease-simcluster --listen "127.0.0.1:$port_a" --context cluster-a --kubeconfig "$work/a.kubeconfig" --ready-delay-ms 1500 >"$work/a.log" 2>&1 &
pids+=($!)
./target/debug/meshrelease-simcluster --listen "127.0.0.1:$port_b" --context cluster-b --kubeconfig "$work/b.kubeconfig" --ready-delay-ms 1500 >"$work/b.log" 2>&1 &
pids+=($!)
wait_for "http://127.0.0.1:$port_a/version"; wait_for "http://127.0.0.1:$port_b/version"
curl -sS --fail-with-body -X POST "http://127.0.0.1:$port_a/apis/apps/v1/namespaces/default/deployments" \
  -H 'Content-Type: application/json' -d @examples/clusters/reviews-v1.json >/dev/null
curl -sS --fail-with-body -X POST "http://127.0.0.1:$port_a/api/v1/namespaces/default/services" \
  -H 'Content-Type: application/json' -d @examples/clusters/reviews-service.json >/dev/null
# ratings: the service whose release runs itself.
sed 's/reviews/ratings/g' examples/clusters/reviews-v1.json | curl -sS --fail-with-body -X POST \
  "http://127.0.0.1:$port_a/apis/apps/v1/namespaces/default/deployments" -H 'Content-Type: application/json' -d @- >/dev/null
sed 's/reviews/ratings/g' examples/clusters/reviews-service.json | curl -sS --fail-with-body -X POST \
  "http://127.0.0.1:$port_a/api/v1/namespaces/default/services" -H 'Content-Type: application/json' -d @- >/dev/null
sed -e "s|^listen = .*|listen = \"127.0.0.1:$port\"|" \
    -e "s|/tmp/meshrelease-cluster-a.kubeconfig|$work/a.kubeconfig|" \
    -e "s|/tmp/meshrelease-cluster-b.kubeconfig|$work/b.kubeconfig|" \
    -e "s|^istio_config_cluster = .*|&\\nprometheus_url = \"http://127.0.0.1:$port_prometheus\"|" \
    examples/clusters.toml >"$work/service.toml"
grep -q "^prometheus_url" "$work/service.toml" || { echo "FAILED: prometheus_url not set in $work/service.toml"; exit 1; }
wait_for "http://127.0.0.1:$port_prometheus/-/ready"
# Restarted whenever it dies: the test kills it once to see the console's
# watch reconnect and resume.
# While "$work/hold" exists it stays down (an outage the page must show).
( while [ ! -e "$work/stop" ]; do
    while [ -e "$work/hold" ] && [ ! -e "$work/stop" ]; do sleep 0.2; done
    ./target/debug/meshrelease --config "$work/service.toml" --data-dir "$work/data" >>"$work/service.log" 2>&1 || true
    sleep 0.5
  done ) &
pids+=($!)
wait_for "http://127.0.0.1:$port/readyz"

BASE="http://127.0.0.1:$port" SIM_A="http://127.0.0.1:$port_a" TOKEN=demo-token SHOTS="$shots" \
  SERVICE_CONFIG="$work/service.toml" HOLD="$work/hold" TRAFFIC="$work/traffic.json" \
  timeout 300 "$venv/bin/python" tests/console/console_test.py || {
  echo "service log (last lines):"; tail -n 40 "$work/service.log"
  echo "prometheus log (last lines):"; tail -n 20 "$work/prometheus.log"; exit 1;
}
