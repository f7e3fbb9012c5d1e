"""A recording HTTP proxy in front of moto's STS, for tests/e2e/test_migration.py.

moto does not check `ExternalId` (nor enforce `Policy` or `DurationSeconds`), so
a test cannot see in moto's answers that the proxy sent them. The proxy under
test is started with `AWS_ENDPOINT_URL_STS` pointing here instead; every request
is forwarded unchanged to moto and, for each STS call, the form parameters and
the SigV4 credential scope (which names the signing region) are recorded.

Stdlib only; runs as a thread in the pytest process. Compare bench/sts_counter.py,
which only counts actions.
"""

from __future__ import annotations

import http.client
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Callable
from urllib.parse import parse_qs, urlsplit

HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade",
              "proxy-connection", "expect"}
SCOPE_RE = re.compile(r"Credential=[^/,\s]+/(\d{8}/[^/]+/[^/]+/aws4_request)")
# The AssumeRole parameters the migration features set.
FIELDS = ("RoleArn", "RoleSessionName", "ExternalId", "Policy", "DurationSeconds",
          "SourceIdentity")


@dataclass
class StsCall:
    action: str
    params: dict            # first value of every form / query parameter
    scope: str | None       # SigV4 scope: DATE/REGION/SERVICE/aws4_request
    status: int | None = None
    at: float = field(default_factory=time.time)

    def get(self, name: str) -> str | None:
        return self.params.get(name)

    def tags(self) -> dict:
        """Session tags as sent: Tags.member.N.Key / .Value (awsQuery lists)."""
        out, n = {}, 1
        while f"Tags.member.{n}.Key" in self.params:
            out[self.params[f"Tags.member.{n}.Key"]] = self.params.get(f"Tags.member.{n}.Value")
            n += 1
        return out

    def transitive_tag_keys(self) -> list:
        out, n = [], 1
        while f"TransitiveTagKeys.member.{n}" in self.params:
            out.append(self.params[f"TransitiveTagKeys.member.{n}"])
            n += 1
        return out

    def region(self) -> str | None:
        return self.scope.split("/")[1] if self.scope else None

    def describe(self) -> str:
        shown = {k: self.params.get(k) for k in FIELDS if k in self.params}
        if self.tags():
            shown["Tags"] = self.tags()
        if self.transitive_tag_keys():
            shown["TransitiveTagKeys"] = self.transitive_tag_keys()
        return f"{self.action} status={self.status} scope={self.scope} {shown}"


class StsRecorder:
    """Listens on (ip, free port), forwards to `upstream` ("http://host:port")."""

    def __init__(self, ip: str, port: int, upstream: str):
        up = urlsplit(upstream)
        self.up_host, self.up_port = up.hostname, up.port or 80
        self.calls: list[StsCall] = []
        self._lock = threading.Lock()
        # A stand-in's answer instead of moto's: (status, body) for the calls
        # it returns one for (an STS refusal moto would not make), else None.
        self.refuse: Callable[[StsCall], tuple[int, bytes] | None] | None = None
        recorder = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                params = {k: v[0] for k, v in parse_qs(urlsplit(self.path).query).items()}
                if body and "x-www-form-urlencoded" in (self.headers.get("Content-Type") or ""):
                    params.update({k: v[0] for k, v in
                                   parse_qs(body.decode("utf-8", "replace"),
                                            keep_blank_values=True).items()})
                m = SCOPE_RE.search(self.headers.get("Authorization") or "")
                call = StsCall(params.get("Action") or "other", params, m.group(1) if m else None)
                refusal = recorder.refuse(call) if recorder.refuse else None
                if refusal is not None:
                    call.status, data = refusal
                    recorder._add(call)
                    self.send_response(call.status)
                    self.send_header("Content-Type", "text/xml")
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
                try:
                    conn = http.client.HTTPConnection(recorder.up_host, recorder.up_port,
                                                      timeout=30)
                    conn.request(self.command, self.path, body=body, headers=headers)
                    resp = conn.getresponse()
                    data = resp.read()
                    conn.close()
                except (http.client.HTTPException, OSError) as e:
                    call.status = 502
                    recorder._add(call)
                    msg = f"recorder: upstream failed: {e}".encode()
                    self.send_response(502)
                    self.send_header("Content-Length", str(len(msg)))
                    self.end_headers()
                    self.wfile.write(msg)
                    return
                call.status = resp.status
                recorder._add(call)
                self.send_response(resp.status)
                for k, v in resp.getheaders():
                    if k.lower() not in HOP_BY_HOP and k.lower() != "content-length":
                        self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            do_GET = do_POST = do_PUT = do_DELETE = do_HEAD = forward

        self.server = ThreadingHTTPServer((ip, port), Handler)
        self.server.daemon_threads = True
        self.url = f"http://{ip}:{port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def _add(self, call: StsCall) -> None:
        with self._lock:
            self.calls.append(call)

    def assume_roles(self, pred: Callable[[StsCall], bool] = lambda c: True) -> list[StsCall]:
        with self._lock:
            return [c for c in self.calls if c.action == "AssumeRole" and pred(c)]

    def wait_assume_role(self, pred: Callable[[StsCall], bool], timeout: float = 10.0
                         ) -> StsCall | None:
        """The first recorded AssumeRole matching `pred`, waiting up to `timeout` s."""
        deadline = time.monotonic() + timeout
        while True:
            found = self.assume_roles(pred)
            if found:
                return found[0]
            if time.monotonic() > deadline:
                return None
            time.sleep(0.1)

    def describe(self, pred: Callable[[StsCall], bool] = lambda c: True, n: int = 15) -> str:
        with self._lock:
            shown = [c for c in self.calls if pred(c)][-n:]
        return "recorded STS calls:\n" + "\n".join("  " + c.describe() for c in shown)

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
