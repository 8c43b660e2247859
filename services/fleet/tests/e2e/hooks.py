"""Helpers of the notify end-to-end tests.

serve PORT LOG PLAN   A webhook receiver on 127.0.0.1:PORT. It answers the
                      statuses of PLAN (comma-separated) in turn, the last one
                      repeating, and appends each request to LOG as a JSON
                      line: headers, body and the status it answered.
verify SECRET LOG     Checks every request in LOG with the reference
                      Standard Webhooks library (standardwebhooks on PyPI);
                      prints "<webhook-id> ok" or "<webhook-id> bad: <why>".
"""

import json
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


def serve(port, log_path, plan):
    statuses = [int(s) for s in plan.split(",")]
    lock = threading.Lock()
    seen = [0]

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self):
            body = self.rfile.read(int(self.headers.get("content-length", "0"))).decode()
            with lock:
                status = statuses[min(seen[0], len(statuses) - 1)]
                seen[0] += 1
                with open(log_path, "a", encoding="utf-8") as log:
                    log.write(json.dumps({
                        "headers": {k.lower(): v for k, v in self.headers.items()},
                        "body": body,
                        "status": status,
                    }) + "\n")
            self.send_response(status)
            if status in (429, 503):
                self.send_header("retry-after", "1")
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args):
            pass

    ThreadingHTTPServer(("127.0.0.1", int(port)), Receiver).serve_forever()


def verify(secret, log_path):
    from standardwebhooks.webhooks import Webhook

    hook = Webhook(secret)
    with open(log_path, encoding="utf-8") as log:
        for line in log:
            request = json.loads(line)
            headers = request["headers"]
            try:
                hook.verify(request["body"], headers)
                print(headers.get("webhook-id"), "ok")
            except Exception as err:  # the verifier's own refusal, whatever its kind
                print(headers.get("webhook-id"), "bad:", err)


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(*sys.argv[2:5])
    elif sys.argv[1] == "verify":
        verify(*sys.argv[2:4])
    else:
        sys.exit(__doc__)
