"""A webhook receiver that checks every delivery with the Standard Webhooks reference library
(`standardwebhooks` on PyPI), independently of GenGate's own signing code.

    python3 receiver.py PORT_FILE FAIL_FIRST [--delay=SECONDS] SECRET [SECRET ...]

Listens on 127.0.0.1 (a free port, written to PORT_FILE), answers 500 to the first FAIL_FIRST
deliveries and 200 after (each SECONDS after it arrived, with --delay), and prints one JSON line
per delivery: its webhook-id, which of the SECRETs verified it, the status answered, and the body.
"""
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks.webhooks import Webhook, WebhookVerificationError

port_file, fail_first = sys.argv[1], int(sys.argv[2])
delay = sum(float(arg.split("=", 1)[1]) for arg in sys.argv[3:] if arg.startswith("--delay="))
secrets = [arg for arg in sys.argv[3:] if not arg.startswith("--delay=")]
seen = 0
printing = threading.Lock()


class Handler(BaseHTTPRequestHandler):
    def do_POST(self):
        global seen
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        headers = {name.lower(): value for name, value in self.headers.items()}
        verified = []
        for secret in secrets:
            try:
                Webhook(secret).verify(body, headers)
                verified.append(True)
            except WebhookVerificationError:
                verified.append(False)
        with printing:
            seen += 1
            status = 500 if seen <= fail_first else 200
        time.sleep(delay)
        self.send_response(status)
        self.send_header("Content-Length", "0")
        self.end_headers()
        line = json.dumps({
            "id": headers.get("webhook-id"), "signatures": headers.get("webhook-signature", "").count("v1,"),
            "verified": verified, "status": status, "path": self.path, "body": json.loads(body),
        })
        # Deliveries arrive on several threads at once: one whole line each.
        with printing:
            sys.stdout.write(line + "\n")
            sys.stdout.flush()

    def log_message(self, *args):
        pass


# Many deliveries may connect at once: a listen backlog that takes them all.
ThreadingHTTPServer.request_queue_size = 128
server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
with open(port_file + ".tmp", "w") as handle:
    handle.write(str(server.server_address[1]))
import os
os.replace(port_file + ".tmp", port_file)
server.serve_forever()
