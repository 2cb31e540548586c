# Sourced by the CI scripts that need the release build running: starts it on
# the quickstart configuration (plus any arguments and MESHRELEASE_*
# variables the caller sets) on a free loopback port, with a fresh data
# directory, and waits until it is ready. Sets $work, $port and $base; the
# server is stopped and $work removed when the calling script exits.
# Usage: start_quickstart_server [extra flags...]

work=$(mktemp -d)
server=""
cleanup() { [ -n "$server" ] && kill "$server" 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

start_quickstart_server() {
  cargo build --release --quiet
  port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
  base="http://127.0.0.1:$port"
  ./target/release/meshrelease --config examples/quickstart.toml \
    --listen "127.0.0.1:$port" --data-dir "$work/data" "$@" >"$work/log" 2>&1 &
  server=$!
  for _ in $(seq 1 300); do
    curl -sf "$base/readyz" >/dev/null 2>&1 && return 0
    kill -0 "$server" 2>/dev/null || { echo "the server exited:"; cat "$work/log"; exit 1; }
    sleep 0.1
  done
  echo "the server never became ready"; cat "$work/log"; exit 1
}
