#!/usr/bin/env python3
"""A counting reverse proxy in front of moto_server (stdlib only).

Every request is forwarded to the upstream unchanged; requests are counted
by their AWS query `Action` (AssumeRole, GetCallerIdentity, ...), read from
the form body or the query string. `GET /__bench/counts` returns the counts
as JSON; it is answered here and never forwarded.

Usage: sts_counter.py --listen-port P --upstream-port Q
"""

import argparse
import http.client
import json
import signal
import sys
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

COUNTS = {}
LOCK = threading.Lock()
LOCAL = threading.local()
HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade"}


def upstream():
    conn = getattr(LOCAL, "conn", None)
    if conn is None:
        conn = http.client.HTTPConnection("127.0.0.1", ARGS.upstream_port, timeout=30)
        LOCAL.conn = conn
    return conn


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def forward(self):
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if self.path == "/__bench/counts":
            with LOCK:
                data = json.dumps(COUNTS).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)
            return
        fields = parse_qs(urlsplit(self.path).query)
        if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
            fields.update(parse_qs(body.decode("utf-8", "replace")))
        action = (fields.get("Action") or [self.headers.get("X-Amz-Target") or "other"])[0]
        with LOCK:
            COUNTS[action] = COUNTS.get(action, 0) + 1
        headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
        for attempt in (1, 2):
            conn = upstream()
            try:
                conn.request(self.command, self.path, body=body, headers=headers)
                response = conn.getresponse()
                data = response.read()
                break
            except (http.client.HTTPException, OSError):
                conn.close()
                LOCAL.conn = None
                if attempt == 2:
                    self.send_error(502, "moto did not answer")
                    return
        self.send_response(response.status)
        for k, v in response.getheaders():
            if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                self.send_header(k, v)
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward


def _interrupt(*_):
    raise KeyboardInterrupt


def main():
    global ARGS
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--listen-port", type=int, required=True)
    parser.add_argument("--upstream-port", type=int, required=True)
    ARGS = parser.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", ARGS.listen_port), Handler)
    server.daemon_threads = True
    signal.signal(signal.SIGTERM, _interrupt)
    print("sts counter: 127.0.0.1:%d -> 127.0.0.1:%d" % (ARGS.listen_port, ARGS.upstream_port), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    sys.exit(main())
