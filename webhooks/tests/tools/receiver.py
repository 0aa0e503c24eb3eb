"""A webhook receiver that verifies every request with the Standard Webhooks reference library
(PyPI `standardwebhooks`), as a customer's receiver would.

    python3 receiver.py SECRET [SECRET ...]

Listens on 127.0.0.1 (a free port), prints `PORT <n>`, then one JSON line per request:
{"id": <webhook-id>, "verified_by": [indexes of the secrets that verify it], "errors": [...],
"body": <the parsed body, when verified>}. Answers 204 when a secret verifies it, else 400.
"""

import json
import sys
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

SECRETS = [Webhook(secret) for secret in sys.argv[1:]]


class Receiver(BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("content-length", "0")))
        headers = {name: value for name, value in self.headers.items()}
        verified_by, errors, payload = [], [], None
        for index, webhook in enumerate(SECRETS):
            try:
                payload = webhook.verify(body, headers)
                verified_by.append(index)
            except Exception as error:  # the library's verification error, or a bad body
                errors.append(str(error))
        line = {"id": headers.get("webhook-id"), "verified_by": verified_by, "errors": errors}
        if verified_by:
            line["body"] = payload
        print(json.dumps(line), flush=True)
        self.send_response(204 if verified_by else 400)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
