"""A promotion gate, as a release's confirm-promotion webhook calls it:
each POST is answered 200 (yes: go on) once OPEN_FILE exists, and 403 (no:
hold) before; every call is printed. For docs/tutorial.md.

Usage: python3 examples/gate.py PORT OPEN_FILE
"""

import json
import os
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def main():
    port, open_file = int(sys.argv[1]), sys.argv[2]

    class Gate(BaseHTTPRequestHandler):
        def do_POST(self):
            length = int(self.headers.get("Content-Length") or 0)
            call = json.loads(self.rfile.read(length) or b"{}")
            yes = os.path.exists(open_file)
            print(f"gate: {call.get('type')} for {call.get('name')} at step {call.get('step')}, weight {call.get('weight')}: {'yes' if yes else 'no'}", flush=True)
            self.send_response(200 if yes else 403)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", port), Gate).serve_forever()


if __name__ == "__main__":
    main()
