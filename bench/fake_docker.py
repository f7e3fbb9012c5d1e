#!/usr/bin/env python3
"""A fake Docker Engine API on a unix socket, for the benchmark (stdlib only).

It speaks enough of the real API (v1.41 shapes) that bollard (ec2metaproxy)
and docker-py (lyft's metadataproxy) both work against it:

  GET  /_ping, /version                  (any /vX.Y prefix is accepted)
  GET  /containers/json                  N running containers, newest first
  GET  /containers/{id}/json             inspect; 404 {"message": ...} if unknown
  GET  /events                           chunked stream, kept open; emits `start`
                                         when the bench starts a container

Bench-only control routes (not Docker's):
  POST /bench/start   body {"id", "name", "ip", "alias", "role"}: add a running
                      container and emit its `start` event to every subscriber
  GET  /bench/stats   request counts by route

Containers: `--count N` of them at 127.10.x.y (so a load generator can send
from those addresses on loopback), each with labels
`ec2metaproxy.RoleAlias=<alias>` and env `IAM_ROLE=<role>` (lyft's variable).
`--extra-ip IP` adds one more container at IP (e.g. 127.0.0.1).

Usage: fake_docker.py --socket PATH --count N [--aliases a=Role@acct,...]
"""

import argparse
import json
import os
import re
import signal
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

API_VERSION = "1.41"
VERSION_PREFIX = re.compile(r"^/v\d+\.\d+(?=/)")


def container_ip(i):
    """The i-th container's address: 127.10.0.1, ..., 127.10.0.250, 127.10.1.1, ..."""
    return "127.10.%d.%d" % (i // 250, i % 250 + 1)


class State:
    def __init__(self, aliases):
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self.containers = []  # newest first, as Docker lists them
        self.by_id = {}
        self.events = []  # (seq, bytes); subscribers read from their own seq
        self.aliases = aliases  # [(alias, role_for_lyft)]
        self.stats = {}
        self.list_body = None
        self.stopping = False

    def count(self, route):
        with self.lock:
            self.stats[route] = self.stats.get(route, 0) + 1

    def add(self, cid, name, ip, alias, role, emit):
        created = int(time.time())
        summary = {
            "Id": cid,
            "Names": ["/" + name],
            "Image": "bench:latest",
            "ImageID": "sha256:" + "0" * 64,
            "Command": "/pause",
            "Created": created,
            "State": "running",
            "Status": "Up 1 second",
            "Ports": [],
            "Labels": {"ec2metaproxy.RoleAlias": alias, "bench": "1"},
            "HostConfig": {"NetworkMode": "bench"},
            "NetworkSettings": {
                "Networks": {
                    "bench": {
                        "NetworkID": "f" * 64,
                        "EndpointID": "e" * 64,
                        "Gateway": "127.10.255.254",
                        "IPAddress": ip,
                        "IPPrefixLen": 8,
                        "MacAddress": "02:42:7f:0a:00:01",
                    }
                }
            },
            "Mounts": [],
        }
        inspect = {
            "Id": cid,
            "Created": time.strftime("%Y-%m-%dT%H:%M:%S.000000000Z", time.gmtime(created)),
            "Name": "/" + name,
            "State": {
                "Status": "running",
                "Running": True,
                "Paused": False,
                "Restarting": False,
                "OOMKilled": False,
                "Dead": False,
                "Pid": 4242,
                "ExitCode": 0,
                "Error": "",
                "StartedAt": "2026-01-01T00:00:00.000000000Z",
                "FinishedAt": "0001-01-01T00:00:00Z",
            },
            "Image": "sha256:" + "0" * 64,
            "Config": {
                "Hostname": cid[:12],
                "Domainname": "",
                "User": "",
                "Env": ["IAM_ROLE=" + role, "PATH=/usr/bin:/bin"],
                "Cmd": ["/pause"],
                "Image": "bench:latest",
                "Labels": {"ec2metaproxy.RoleAlias": alias, "bench": "1"},
            },
            "HostConfig": {"NetworkMode": "bench"},
            "NetworkSettings": {
                "Bridge": "",
                "IPAddress": "",
                "Gateway": "",
                "Networks": summary["NetworkSettings"]["Networks"],
            },
            "Mounts": [],
        }
        with self.lock:
            self.containers.insert(0, summary)
            self.by_id[cid] = json.dumps(inspect).encode()
            self.by_id[cid[:12]] = self.by_id[cid]
            self.list_body = None
            if emit:
                now = time.time()
                event = {
                    "status": "start",
                    "id": cid,
                    "from": "bench:latest",
                    "Type": "container",
                    "Action": "start",
                    "Actor": {"ID": cid, "Attributes": {"image": "bench:latest", "name": name}},
                    "scope": "local",
                    "time": int(now),
                    "timeNano": int(now * 1e9),
                }
                self.events.append(json.dumps(event).encode() + b"\n")
                self.changed.notify_all()

    def listing(self):
        with self.lock:
            if self.list_body is None:
                self.list_body = json.dumps(self.containers).encode()
            return self.list_body


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "fake-dockerd"
    sys_version = ""

    def log_message(self, *args):  # quiet
        pass

    def address_string(self):
        return "unix"

    def send_json(self, status, body, extra=None):
        if not isinstance(body, bytes):
            body = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def route(self):
        path = self.path.split("?", 1)[0]
        return VERSION_PREFIX.sub("", path)

    def do_HEAD(self):
        self.do_GET()

    def do_GET(self):
        state = self.server.state
        path = self.route()
        if path == "/_ping":
            state.count("ping")
            body = b"OK"
            self.send_response(200)
            self.send_header("Content-Type", "text/plain; charset=utf-8")
            self.send_header("Api-Version", API_VERSION)
            self.send_header("Content-Length", "2")
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)
        elif path == "/version":
            state.count("version")
            self.send_json(
                200,
                {
                    "Platform": {"Name": "fake-dockerd (ec2metaproxy bench)"},
                    "Version": "20.10.24",
                    "ApiVersion": API_VERSION,
                    "MinAPIVersion": "1.12",
                    "GitCommit": "bench",
                    "GoVersion": "go1.20",
                    "Os": "linux",
                    "Arch": "amd64",
                    "KernelVersion": os.uname().release,
                },
            )
        elif path == "/containers/json":
            state.count("list")
            self.send_json(200, state.listing())
        elif path.startswith("/containers/") and path.endswith("/json"):
            state.count("inspect")
            cid = path[len("/containers/"):-len("/json")]
            with state.lock:
                body = state.by_id.get(cid)
            if body is None:
                self.send_json(404, {"message": "No such container: " + cid})
            else:
                self.send_json(200, body)
        elif path == "/events":
            state.count("events")
            self.stream_events()
        elif path == "/bench/stats":
            with state.lock:
                stats = dict(state.stats)
                stats["containers"] = len(state.containers)
            self.send_json(200, stats)
        else:
            state.count("other")
            self.send_json(404, {"message": "page not found"})

    def do_POST(self):
        state = self.server.state
        path = self.route()
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        if path == "/bench/start":
            spec = json.loads(body)
            state.add(spec["id"], spec["name"], spec["ip"], spec["alias"], spec["role"], emit=True)
            self.send_json(201, {"Id": spec["id"]})
        else:
            self.send_json(404, {"message": "page not found"})

    def stream_events(self):
        state = self.server.state
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Api-Version", API_VERSION)
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        self.wfile.flush()
        with state.lock:
            seq = len(state.events)  # only events from now on, as Docker does
        try:
            while True:
                with state.lock:
                    # Bounded wait: re-check for shutdown every second.
                    if seq == len(state.events) and not state.stopping:
                        state.changed.wait(timeout=1.0)
                    if state.stopping:
                        break
                    pending = state.events[seq:]
                    seq = len(state.events)
                for event in pending:
                    self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
                self.wfile.flush()
        except (BrokenPipeError, ConnectionResetError):
            pass
        self.close_connection = True


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True
    request_queue_size = 128


def _interrupt(*_):
    raise KeyboardInterrupt


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--socket", required=True)
    parser.add_argument("--count", type=int, required=True)
    parser.add_argument("--extra-ip", action="append", default=[])
    parser.add_argument(
        "--aliases",
        default="default=BenchRole@111111111111",
        help="comma-separated alias=lyft_role; containers take them in turn",
    )
    args = parser.parse_args()
    aliases = [tuple(a.split("=", 1)) for a in args.aliases.split(",")]
    state = State(aliases)
    # Containers are added oldest first, so the list is newest first and
    # container 0 (the first address) is the newest, as `docker ps` shows it.
    everything = [(container_ip(i), i) for i in range(args.count)]
    everything += [(ip, args.count + k) for k, ip in enumerate(args.extra_ip)]
    for ip, i in reversed(everything):
        alias, role = aliases[i % len(aliases)]
        cid = "%064x" % (0xB0000000 + i)
        state.add(cid, "bench-%d" % i, ip, alias, role, emit=False)
    if os.path.exists(args.socket):
        os.unlink(args.socket)
    server = Server(args.socket, Handler)
    server.state = state
    signal.signal(signal.SIGTERM, _interrupt)
    print("fake docker: %d containers on unix://%s" % (len(everything), args.socket), flush=True)
    try:
        server.serve_forever(poll_interval=0.2)
    except KeyboardInterrupt:
        pass
    finally:
        with state.lock:
            state.stopping = True
            state.changed.notify_all()
        server.server_close()
        try:
            os.unlink(args.socket)
        except OSError:
            pass


if __name__ == "__main__":
    sys.exit(main())
