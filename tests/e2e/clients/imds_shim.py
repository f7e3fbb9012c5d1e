"""A small HTTP hop run *inside a container's network namespace*, between a
client there and the proxy, for the client-matrix cases the real proxy cannot
stage on its own (tests/e2e/test_matrix.py):

  --refuse-token   answer `PUT /latest/api/token` with 403 itself, as an IMDS
                   without IMDSv2 (or with the token hop limit exceeded) would,
                   so the client has to fall back to IMDSv1; everything else is
                   forwarded to the proxy;
  --hold           forward everything, but hold the first GET that carries a
                   token until a line arrives on stdin (the test restarts the
                   proxy meanwhile), to show a token cached by the client from
                   before a restart is still accepted after it.

Because it runs in the container's namespace, its connections to the proxy
leave from the container's own address: the proxy identifies the caller
exactly as without the hop. The client still talks to 169.254.169.254:80; a
DNAT rule in that namespace sends it here instead of to the proxy.

Each exchange is appended to --log as one JSON line (method, path, whether a
token or TTL header was sent, status, the TTL header echoed). Token values are
never written, only a short hash, so requests can be matched up.
"""

from __future__ import annotations

import argparse
import hashlib
import http.client
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

TOKEN = "x-aws-ec2-metadata-token"
TTL = "x-aws-ec2-metadata-token-ttl-seconds"
HOP = {"connection", "keep-alive", "transfer-encoding", "proxy-connection", "te", "upgrade"}


def short(value: str | None) -> str | None:
    return hashlib.sha256(value.encode()).hexdigest()[:12] if value else None


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--listen", required=True, help="ip:port inside the namespace")
    ap.add_argument("--upstream", required=True, help="the proxy's ip:port")
    ap.add_argument("--log", required=True)
    ap.add_argument("--refuse-token", action="store_true")
    ap.add_argument("--hold", action="store_true")
    args = ap.parse_args()
    up_host, up_port = args.upstream.rsplit(":", 1)
    lock = threading.Lock()
    logf = open(args.log, "a", buffering=1)
    gate = threading.Event()  # --hold: set once the test says the proxy is back
    if not args.hold:
        gate.set()
    held = {"announced": False}

    def wait_for_go() -> None:
        sys.stdin.readline()
        gate.set()

    def record(**kw) -> None:
        with lock:
            logf.write(json.dumps(kw) + "\n")

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *a):
            pass

        def _body(self) -> bytes:
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n else b""

        def _reply(self, status: int, headers: list, body: bytes) -> None:
            self.send_response(status)
            for k, v in headers:
                if k.lower() not in HOP and k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _forward(self) -> None:
            body = self._body()
            token = self.headers.get(TOKEN)
            entry = dict(method=self.command, path=self.path, token=short(token),
                         ttl_sent=self.headers.get(TTL), ua=self.headers.get("User-Agent"))
            if args.refuse_token and self.command == "PUT" and \
                    self.path.split("?")[0] == "/latest/api/token":
                record(**entry, status=403, by="shim")
                self._reply(403, [("Content-Type", "text/plain")], b"")
                return
            if token and not gate.is_set():
                with lock:
                    first = not held["announced"]
                    held["announced"] = True
                if first:
                    threading.Thread(target=wait_for_go, daemon=True).start()
                    print(f"HOLD {self.command} {self.path} token={short(token)}", flush=True)
                t0 = time.monotonic()
                gate.wait(60)  # meanwhile the test restarts the proxy
                entry["held"] = True
                entry["held_ms"] = round((time.monotonic() - t0) * 1000)
            conn = http.client.HTTPConnection(up_host, int(up_port), timeout=20)
            try:
                conn.putrequest(self.command, self.path, skip_host=True,
                                skip_accept_encoding=True)
                for k, v in self.headers.items():
                    if k.lower() not in HOP and k.lower() != "content-length":
                        conn.putheader(k, v)
                if body or self.command == "PUT":
                    conn.putheader("Content-Length", str(len(body)))
                conn.endheaders(body or None)
                resp = conn.getresponse()
                data = resp.read()
                headers = resp.getheaders()
                if self.command == "PUT" and resp.status == 200:
                    entry["issued"] = short(data.decode(errors="replace"))
                record(**entry, status=resp.status, ttl_echo=resp.getheader(TTL))
                self._reply(resp.status, headers, data)
            except OSError as e:
                record(**entry, status=502, error=str(e))
                self._reply(502, [], b"")
            finally:
                conn.close()

        do_GET = do_HEAD = do_PUT = do_POST = do_DELETE = _forward

    host, port = args.listen.rsplit(":", 1)
    server = ThreadingHTTPServer((host, int(port)), Handler)
    server.daemon_threads = True
    print("READY", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
