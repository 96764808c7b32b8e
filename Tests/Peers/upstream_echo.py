"""A tiny upstream event handler for the Swift client tests (the emulator POSTs CloudEvents here).

Prints `LISTENING <port>` when ready. User event `echo` answers 200 with the same body and
Content-Type (the service turns it into a server message, or an invokeResponse, for the caller);
`fail` answers 500; `slow` answers 204 after 3 s; `slow1` answers 204 after 1 s; `calls` answers
200 with a JSON object counting the events received so far by name; other events get 204.
Abuse-protection OPTIONS requests are allowed for any origin.
"""
import http.server
import json
import sys
import threading
import time

CALLS = {}
CALLS_LOCK = threading.Lock()


class Handler(http.server.BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_OPTIONS(self):
        self.send_response(200)
        self.send_header("WebHook-Allowed-Origin", "*")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        event = self.headers.get("ce-eventName", "")
        with CALLS_LOCK:
            CALLS[event] = CALLS.get(event, 0) + 1
            counts = json.dumps(CALLS).encode()
        if event == "calls":
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(counts)))
            self.end_headers()
            self.wfile.write(counts)
        elif event == "slow1":
            time.sleep(1)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif event == "fail":
            self.send_response(500)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif event == "slow":
            time.sleep(3)
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()
        elif event == "echo":
            self.send_response(200)
            self.send_header("Content-Type", self.headers.get("Content-Type", "application/octet-stream"))
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        else:
            self.send_response(204)
            self.send_header("Content-Length", "0")
            self.end_headers()


server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
print(f"LISTENING {server.server_address[1]}", flush=True)
try:
    server.serve_forever()
except KeyboardInterrupt:
    pass
sys.exit(0)
