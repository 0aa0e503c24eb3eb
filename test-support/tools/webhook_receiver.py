"""A webhook receiver that verifies every request with the Standard Webhooks reference library
(PyPI `standardwebhooks`), as a customer's receiver would (test_support::WebhookReceiver runs it).

    python3 webhook_receiver.py [--port P] [--fail-first N] [--answer S] [--hold-first H]
        SECRET [SECRET ...]

Listens on 127.0.0.1 (port P, or a free one), prints `PORT <n>`, then one JSON line per request:
{"id": <webhook-id>, "verified_by": [indexes of the secrets that verify it], "errors": [...],
"status": <the answer>, "body": <the parsed body, when verified>}. Answers 204 when a secret
verifies it (or S, with --answer S), else 400; with --fail-first N, the first N requests get 503
whatever they are; with --hold-first H, the first H requests are reported (status "held") and
then left unanswered for a minute, as a receiver that hangs. --fail-status and --retry-after set
the failures' status and Retry-After header. Each line says when the request came ("at", Unix
seconds).
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from standardwebhooks import Webhook

ARGS = argparse.ArgumentParser()
ARGS.add_argument("--port", type=int, default=0)
ARGS.add_argument("--fail-first", type=int, default=0)
ARGS.add_argument("--answer", type=int, default=204)
ARGS.add_argument("--hold-first", type=int, default=0)
ARGS.add_argument("--fail-status", type=int, default=503)
ARGS.add_argument("--retry-after", default=None)
ARGS.add_argument("secrets", nargs="*")
OPTIONS = ARGS.parse_args()
SECRETS = [Webhook(secret) for secret in OPTIONS.secrets]
SEEN = {"requests": 0}
LOCK = threading.Lock()
OUTPUT = threading.Lock()


def report(line):
    """One whole line per request: requests are handled on several threads, and print() writes
    the text and its newline separately, so two reports could otherwise run together."""
    with OUTPUT:
        sys.stdout.write(json.dumps(line) + "\n")
        sys.stdout.flush()


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
        with LOCK:
            SEEN["requests"] += 1
            held = SEEN["requests"] <= OPTIONS.hold_first
            failing = SEEN["requests"] <= OPTIONS.hold_first + OPTIONS.fail_first
        if held:
            line = {"id": headers.get("webhook-id"), "verified_by": verified_by, "status": "held"}
            report(line)
            time.sleep(60)
            return
        status = OPTIONS.fail_status if failing else OPTIONS.answer if verified_by else 400
        line = {
            "id": headers.get("webhook-id"),
            "verified_by": verified_by,
            "errors": errors,
            "status": status,
            "at": time.time(),
        }
        if verified_by:
            line["body"] = payload
        report(line)
        self.send_response(status)
        if failing and OPTIONS.retry_after is not None:
            self.send_header("Retry-After", OPTIONS.retry_after)
        self.end_headers()

    def log_message(self, *args):
        pass


server = ThreadingHTTPServer(("127.0.0.1", OPTIONS.port), Receiver)
print(f"PORT {server.server_address[1]}", flush=True)
server.serve_forever()
