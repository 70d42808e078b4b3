"""A webhook receiver for imgate's alerts, as a firm would write one: it checks each request's
HMAC-SHA256 signature (over the timestamp, a dot and the body) and its age, and appends each
alert it accepts to a JSON-lines file.

usage: alert_webhook.py PORT SECRET_FILE OUT_FILE MODE_FILE

With SECRET_FILE `-` it checks no signature and keeps each alert of any JSON body with an
`alerts` list (Alertmanager's own notifications, for instance).

MODE_FILE holds how it answers, read at each request, so a test can change it while it
runs: `ok`, `500` (an error), `hang` (never answers), `garbage` (bytes that are not HTTP),
`refuse:WORD` (400 to a request whose body holds WORD, as a receiver that will never take
it; the rest as `ok`).
Requests that fail the signature check are answered 401 and counted in OUT_FILE.rejected.
"""

import hashlib
import hmac
import http.server
import json
import sys
import time

PORT, SECRET_FILE, OUT, MODE_FILE = int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4]
SECRET = None if SECRET_FILE == "-" else open(SECRET_FILE, "rb").read()
TOLERANCE = 300


def mode():
    try:
        return open(MODE_FILE).read().strip() or "ok"
    except FileNotFoundError:
        return "ok"


class Handler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
        behaviour = mode()
        if behaviour == "hang":
            time.sleep(3600)
            return
        if behaviour == "garbage":
            self.wfile.write(b"\x00\xffnot http at all\r\n\r\n")
            self.wfile.flush()
            self.close_connection = True
            return
        if behaviour.startswith("refuse:") and behaviour[len("refuse:"):].encode() in body:
            self.answer(400, b"this receiver does not take that alert")
            return
        if behaviour == "500":
            self.answer(500, b"receiver broken")
            return
        if SECRET is None:
            self.keep(json.loads(body))
            return
        timestamp = self.headers.get("X-Imgate-Timestamp", "")
        signature = self.headers.get("X-Imgate-Signature", "")
        expected = "v1=" + hmac.new(SECRET, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()
        fresh = timestamp.isdigit() and abs(time.time() - int(timestamp)) <= TOLERANCE
        if not (fresh and hmac.compare_digest(expected, signature)):
            with open(OUT + ".rejected", "a") as out:
                out.write("rejected\n")
            self.answer(401, b"bad signature")
            return
        self.keep(json.loads(body))

    def keep(self, document):
        with open(OUT, "a") as out:
            for alert in document["alerts"]:
                alert.setdefault("tenant", document.get("tenant"))
                out.write(json.dumps(alert) + "\n")
        self.answer(200, b"ok")

    def answer(self, status, text):
        self.send_response(status)
        self.send_header("Content-Length", str(len(text)))
        self.end_headers()
        self.wfile.write(text)


http.server.ThreadingHTTPServer(("127.0.0.1", PORT), Handler).serve_forever()
