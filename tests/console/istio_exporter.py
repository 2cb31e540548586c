"""Istio's standard series for workloads, as their sidecars would report
them to Prometheus: istio_requests_total and the request duration
histogram (reporter="destination"), at the request rates, error rates and
latencies named in a JSON file that the console test rewrites as it goes:

  {"default/ratings-v1-v2": {"rps": 20, "errors": 0.3, "latency_ms": 20}, ...}

Usage: istio_exporter.py PORT STATE_FILE
"""

import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

BUCKETS = [0.5, 1, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000]
LOCK = threading.Lock()
COUNTERS = {}  # "namespace/workload" -> dict of running totals


def exposition(state_file):
    try:
        with open(state_file, encoding="utf-8") as f:
            wanted = json.load(f)
    except (OSError, ValueError):
        wanted = {}
    now = time.monotonic()
    lines = ["# TYPE istio_requests_total counter", "# TYPE istio_request_duration_milliseconds histogram"]
    with LOCK:
        for key, traffic in wanted.items():
            c = COUNTERS.setdefault(key, {"ok": 0.0, "failed": 0.0, "buckets": [0.0] * (len(BUCKETS) + 1), "sum": 0.0, "last": now})
            requests = traffic.get("rps", 0) * (now - c["last"])
            c["last"] = now
            errors = traffic.get("errors", 0)
            latency = traffic.get("latency_ms", 20)
            c["failed"] += requests * errors
            c["ok"] += requests * (1 - errors)
            for i, le in enumerate(BUCKETS):
                if latency <= le:
                    c["buckets"][i] += requests
            c["buckets"][-1] += requests
            c["sum"] += requests * latency
            namespace, workload = key.split("/", 1)
            labels = f'reporter="destination",destination_workload_namespace="{namespace}",destination_workload="{workload}"'
            lines.append(f'istio_requests_total{{{labels},response_code="200"}} {c["ok"]}')
            lines.append(f'istio_requests_total{{{labels},response_code="503"}} {c["failed"]}')
            for i, le in enumerate(BUCKETS):
                lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="{le}"}} {c["buckets"][i]}')
            lines.append(f'istio_request_duration_milliseconds_bucket{{{labels},le="+Inf"}} {c["buckets"][-1]}')
            lines.append(f'istio_request_duration_milliseconds_sum{{{labels}}} {c["sum"]}')
            lines.append(f'istio_request_duration_milliseconds_count{{{labels}}} {c["buckets"][-1]}')
    return ("\n".join(lines) + "\n").encode()


def main():
    port, state_file = int(sys.argv[1]), sys.argv[2]

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self):
            body = exposition(state_file)
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; version=0.0.4")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()


if __name__ == "__main__":
    main()
