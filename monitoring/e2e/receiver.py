#!/usr/bin/env python3
"""Webhook receiver standing in for the pager and the ticket system.

Listens on 127.0.0.1:PORT and appends one JSON line per POST to LOG:
  {"received_at": <unix seconds>, "path": "/page", "payload": {<Alertmanager webhook body>}}
Alertmanager's shipped config posts pages to /page, warnings to /ticket and
the watchdog to /heartbeat. GET /healthz answers 200. Stdlib only.

Usage: receiver.py PORT LOG
"""
import http.server, json, sys, time

port, log_path = int(sys.argv[1]), sys.argv[2]
log = open(log_path, "a", buffering=1)

class Handler(http.server.BaseHTTPRequestHandler):
    def do_POST(self):
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        try:
            payload = json.loads(body)
        except ValueError:
            payload = {"unparsed": body.decode(errors="replace")}
        log.write(json.dumps({"received_at": time.time(), "path": self.path,
                              "payload": payload}) + "\n")
        self.send_response(200)
        self.end_headers()

    def do_GET(self):
        self.send_response(200 if self.path == "/healthz" else 404)
        self.end_headers()

    def log_message(self, *args):
        pass

http.server.ThreadingHTTPServer(("127.0.0.1", port), Handler).serve_forever()
