"""Real-container end-to-end harness for ec2metaproxy.

Shared by the pytest suite (tests/e2e/test_*.py) and the demo (scripts/demo.py).

One `Run` owns everything it creates, all named `ec2mp-e2e-<runid>-...` and
labelled `ec2metaproxy.e2e-run=<runid>`:
  * a user-defined Docker bridge network on a subnet checked to be free,
  * a `FROM scratch` test image holding a static `pause` binary built here,
  * containers of that image,
  * moto (STS/IAM) and a fake upstream IMDS, both bound to the network's gateway IP,
  * the proxy itself, listening on the gateway IP,
  * iptables DNAT rules inside container network namespaces, tagged with the
    comment `ec2mp-e2e-<runid>`,
  * a temp directory.
`Run.close()` removes all of it; it is called from pytest finalizers, atexit and
SIGTERM/SIGHUP/SIGINT handlers, and is idempotent. Nothing that this run did
not create is ever touched.

Clients run on the host, inside a container's network namespace
(`nsenter -t <pid> -n`), so the proxy sees the container's own source IP, and
reach the proxy through the real metadata address 169.254.169.254:80 (DNAT in
that namespace), exactly as a program in the container would.
"""

from __future__ import annotations

import atexit
import ctypes
import ipaddress
import json
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Callable

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PAUSE_SRC = HERE / "images" / "pause"
NETNS_HTTP = HERE / "netns_http.py"

RUN_LABEL = "ec2metaproxy.e2e-run"
ALIAS_LABEL = "ec2metaproxy.RoleAlias"
POLICY_LABEL = "ec2metaproxy.Policy"
ACCOUNT = "123456789012"  # moto's default account
IMDS_IP = "169.254.169.254"
TTL_HEADER = "X-aws-ec2-metadata-token-ttl-seconds"
TOKEN_HEADER = "X-aws-ec2-metadata-token"
CREDS_PATH = "/latest/meta-data/iam/security-credentials/"
CREDS_EXT_PATH = "/latest/meta-data/iam/security-credentials-extended/"
ASSUMED_ROLE_RE = re.compile(
    r"^arn:aws:sts::(?P<account>\d{12}):assumed-role/(?P<role>[^/]+)/(?P<session>.+)$"
)


def log(msg: str) -> None:
    print(f"[e2e {time.strftime('%H:%M:%S')}] {msg}", file=sys.stderr, flush=True)


# ---------------------------------------------------------------- processes

_PR_SET_PDEATHSIG = 1


def _die_with_parent() -> None:
    """preexec_fn: have the kernel SIGTERM the child if the harness dies (even SIGKILL)."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0)
    except Exception:  # pragma: no cover - best effort
        pass


def sh(args: list[str], *, check: bool = True, timeout: float = 60, env=None,
       input: str | None = None) -> subprocess.CompletedProcess:
    """Run a command, capture text output; raise with its output on failure."""
    try:
        cp = subprocess.run(args, capture_output=True, text=True, timeout=timeout,
                            env=env, input=input)
    except subprocess.TimeoutExpired as e:
        raise RuntimeError(f"timed out after {timeout}s: {' '.join(args)}\n"
                           f"stdout: {e.stdout}\nstderr: {e.stderr}") from None
    if check and cp.returncode != 0:
        raise RuntimeError(f"command failed (rc={cp.returncode}): {' '.join(args)}\n"
                           f"stdout: {cp.stdout}\nstderr: {cp.stderr}")
    return cp


def free_port(ip: str) -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def wait_tcp(ip: str, port: int, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not alive():
            return False
        try:
            with socket.create_connection((ip, port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def target_dir() -> Path:
    return Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))


def proxy_bin() -> Path:
    return Path(os.environ.get("EC2METAPROXY_BIN", target_dir() / "debug" / "ec2metaproxy"))


def imds_client_bin() -> Path:
    return Path(os.environ.get("EC2METAPROXY_IMDS_CLIENT_BIN",
                               target_dir() / "debug" / "examples" / "imds_client"))


def venv_bin(name: str) -> str:
    """A console script next to the running interpreter (the venv's), else from PATH."""
    cand = Path(sys.executable).parent / name
    return str(cand) if cand.exists() else (shutil.which(name) or name)


# ---------------------------------------------------------------- results

@dataclass
class HttpResult:
    """One raw HTTP exchange made from inside a container's network namespace."""
    method: str
    url: str
    req_headers: dict
    status: int | None = None
    headers: list = field(default_factory=list)
    body: str = ""
    error: str | None = None
    ms: float = 0.0
    sent_at: float = 0.0
    # The caller's port, for requests sent on one keep-alive connection.
    local_port: int | None = None

    def header(self, name: str) -> str | None:
        for k, v in self.headers:
            if k.lower() == name.lower():
                return v
        return None

    def json(self) -> dict:
        return json.loads(self.body)

    def describe(self) -> str:
        hdrs = "\n".join(f"    {k}: {v}" for k, v in self.headers)
        return (f"  request: {self.method} {self.url} headers={self.req_headers}\n"
                f"  status: {self.status} error: {self.error} ({self.ms:.0f} ms)\n"
                f"  response headers:\n{hdrs}\n  body: {redact(self.body)!r}")


@dataclass
class ClientResult:
    """An SDK/CLI client run inside a container's network namespace."""
    name: str
    argv: list
    rc: int
    stdout: str
    stderr: str
    arn: str | None = None
    access_key_id: str | None = None
    expiration: str | None = None

    @property
    def ok(self) -> bool:
        return self.rc == 0 and bool(self.arn)

    def role(self) -> str | None:
        m = ASSUMED_ROLE_RE.match(self.arn or "")
        return m.group("role") if m else None

    def session(self) -> str | None:
        m = ASSUMED_ROLE_RE.match(self.arn or "")
        return m.group("session") if m else None

    def describe(self) -> str:
        return (f"  client: {self.name}: {' '.join(self.argv)}\n  rc: {self.rc}\n"
                f"  stdout: {redact(self.stdout)[-3000:]}\n  stderr: {redact(self.stderr)[-3000:]}")


_SECRET_KEYS_RE = re.compile(r'("(?:SecretAccessKey|Token|secret_access_key|token)"\s*:\s*")([^"]*)(")')


def redact(text: str) -> str:
    """Hide secret values in text shown to people (failure messages, the demo)."""
    return _SECRET_KEYS_RE.sub(lambda m: m.group(1) + "<redacted>" + m.group(3), text or "")


# ---------------------------------------------------------------- pieces

@dataclass
class Network:
    name: str
    id: str
    subnet: ipaddress.IPv4Network
    gateway: str
    subnet6: ipaddress.IPv6Network | None = None   # an --ipv6 network's ULA /64
    gateway6: str | None = None


@dataclass
class Container:
    name: str      # docker name, e.g. ec2mp-e2e-<runid>-web
    short: str     # the test's own name for it, e.g. web
    id: str
    ip: str
    pid: int
    labels: dict
    redirected: bool = False


def stop_process(proc: subprocess.Popen, grace: float = 5) -> bool:
    """SIGTERM `proc`, wait up to `grace` seconds, then SIGKILL it.
    True when it had to be killed."""
    if proc.poll() is not None:
        return False
    proc.terminate()
    try:
        proc.wait(grace)
        return False
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
        return True


class LogFile:
    """A process whose output goes to the file at `self.log_path`."""
    log_path: Path

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def tail(self, n: int = 40) -> str:
        return "\n".join(self.log_text().splitlines()[-n:])


class Moto:
    def __init__(self, run: "Run", ip: str):
        self.ip = ip
        self.port = free_port(ip)
        self.url = f"http://{ip}:{self.port}"
        self.log_path = run.tmp / "moto.log"
        self._log = open(self.log_path, "wb")
        self.proc = subprocess.Popen(
            [venv_bin("moto_server"), "-H", ip, "-p", str(self.port)],
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            preexec_fn=_die_with_parent)
        run.cleanup.push(self.stop, "stop moto")
        if not wait_tcp(ip, self.port, 60, lambda: self.proc.poll() is None):
            raise RuntimeError(f"moto_server did not start on {self.url}:\n"
                               + self.log_path.read_text(errors="replace")[-3000:])

    def client(self, service: str):
        import boto3
        return boto3.client(service, endpoint_url=self.url, region_name="us-east-1",
                            aws_access_key_id="testing", aws_secret_access_key="testing")

    def create_role(self, name: str) -> str:
        trust = {"Version": "2012-10-17", "Statement": [{
            "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
            "Action": "sts:AssumeRole"}]}
        iam = self.client("iam")
        arn = iam.create_role(RoleName=name, AssumeRolePolicyDocument=json.dumps(trust),
                              MaxSessionDuration=3600)["Role"]["Arn"]
        iam.put_role_policy(RoleName=name, PolicyName="e2e-whoami", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}))
        return arn

    def stop(self) -> None:
        stop_process(self.proc)
        self._log.close()


class FakeUpstream:
    """A tiny stand-in for the host's real IMDS (the proxy's `metadataURL`).

    `routes` maps exact request paths to bodies. It answers the token PUT too.
    Every request it receives is recorded in `seen` as (method, path)."""

    def __init__(self, run: "Run", ip: str, routes: dict[str, str]):
        self.routes = dict(routes)
        self.seen: list[tuple[str, str]] = []
        upstream = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):  # quiet
                pass

            def _send(self, status: int, body: str, extra: dict | None = None):
                data = body.encode()
                self.send_response(status)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (extra or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def do_PUT(self):
                upstream.seen.append(("PUT", self.path))
                n = int(self.headers.get("Content-Length") or 0)
                if n:
                    self.rfile.read(n)
                if self.path == "/latest/api/token":
                    ttl = self.headers.get(TTL_HEADER, "21600")
                    self._send(200, "fake-upstream-token", {TTL_HEADER: ttl})
                else:
                    self._send(403, "")

            def do_GET(self):
                upstream.seen.append(("GET", self.path))
                if self.path in upstream.routes:
                    self._send(200, upstream.routes[self.path])
                else:
                    self._send(404, "")

            do_HEAD = do_GET

        self.port = free_port(ip)
        self.url = f"http://{ip}:{self.port}"
        self.server = ThreadingHTTPServer((ip, self.port), Handler)
        self.server.daemon_threads = True
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        run.cleanup.push(self.stop, "stop fake upstream IMDS")

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


class Proxy(LogFile):
    """The ec2metaproxy daemon under test, on the host, listening on the gateway IP."""

    def __init__(self, run: "Run", listen_ip: str, config: dict, env: dict, name: str = "proxy",
                 also_ips: list[str] = (), mapped: bool = False):
        self.run = run
        self.name = name
        self.ip = listen_ip
        self.port = free_port(listen_ip)
        # `also_ips` (IPv6 ones, say): the same port there too, a `listen` list.
        # `mapped`: the IPv4 address spelt as IPv6 (::ffff:a.b.c.d), so the
        # proxy's socket is an IPv6 one, as a dual-stack [::] listener is.
        first = f"[::ffff:{listen_ip}]:{self.port}" if mapped else f"{listen_ip}:{self.port}"
        self.listen = [first] + [
            f"[{ip}]:{self.port}" if ":" in ip else f"{ip}:{self.port}" for ip in also_ips]
        self.config = dict(config, listen=self.listen[0] if len(self.listen) == 1 else self.listen)
        self.config_path = run.tmp / f"{name}.json"
        self.config_path.write_text(json.dumps(self.config, indent=2))
        self.log_path = run.tmp / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.argv = [str(proxy_bin()), "-c", str(self.config_path)]
        self.env = env
        self.killed = False  # had to SIGKILL it: it ignored SIGTERM for 10 s
        self.last_exit: int | None = None
        self._spawn()
        run.cleanup.push(self.stop, "stop proxy")

    def _spawn(self) -> None:
        if self._log.closed:
            self._log = open(self.log_path, "ab")
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=self.env,
                                     preexec_fn=_die_with_parent)
        if not wait_tcp(self.ip, self.port, 30, lambda: self.proc.poll() is None):
            raise RuntimeError(
                f"proxy did not start listening on {self.ip}:{self.port} "
                f"(exit code {self.proc.poll()}); argv={self.argv}\nconfig={json.dumps(self.config)}\n"
                f"log tail:\n{self.tail()}")

    def rewrite_config(self, config: dict) -> None:
        """Replace the config file the way editors and config managers do: write a
        new file beside it and rename it over the old one. `listen` is kept."""
        self.config = dict(config, listen=self.listen[0] if len(self.listen) == 1 else self.listen)
        tmp = self.config_path.with_suffix(".json.new")
        tmp.write_text(json.dumps(self.config, indent=2))
        os.replace(tmp, self.config_path)

    def reload(self) -> None:
        """Ask the running proxy to re-read its config (SIGHUP)."""
        self.proc.send_signal(signal.SIGHUP)

    def restart(self) -> float:
        """SIGTERM the proxy, wait for it to exit, start it again with the same
        config, port and stateDir. Returns how long the old process took to exit (s)."""
        t0 = time.monotonic()
        self.stop()
        took = time.monotonic() - t0
        self._spawn()
        return took

    def wait_log(self, needle: str, timeout: float = 3.0) -> bool:
        """True once `needle` is in the log (lines may be written just after the response)."""
        deadline = time.monotonic() + timeout
        while True:
            if needle in self.log_text():
                return True
            if time.monotonic() > deadline:
                return False
            time.sleep(0.05)

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self) -> None:
        if stop_process(self.proc, grace=10):  # the proxy drains for up to 10 s
            self.killed = True
        self.last_exit = self.proc.returncode
        self._log.close()


class Cleanup:
    """A LIFO stack of undo actions, run once, from any thread or signal handler."""

    def __init__(self):
        self._stack: list[tuple[Callable[[], None], str]] = []
        self._lock = threading.RLock()

    def push(self, fn: Callable[[], None], what: str) -> None:
        with self._lock:
            self._stack.append((fn, what))

    def run_all(self) -> list[str]:
        errors = []
        while True:
            with self._lock:
                if not self._stack:
                    break
                fn, what = self._stack.pop()
            try:
                fn()
            except Exception as e:  # keep going: undo as much as possible
                errors.append(f"{what}: {e}")
        return errors


# ---------------------------------------------------------------- the run

class Run:
    def __init__(self, kind: str = "e2e", handle_signals: bool = True):
        self.runid = time.strftime("%H%M%S") + "%04x" % random.randrange(0x10000)
        self.prefix = f"ec2mp-{kind}-{self.runid}"
        self.comment = self.prefix  # iptables comment
        self.cleanup = Cleanup()
        self.closed = False
        self.keep_tmp = False
        self.tmp = Path(tempfile.mkdtemp(prefix=f"{self.prefix}-"))
        self.cleanup.push(self._remove_tmp, "remove temp dir")
        self.image = f"{self.prefix}-pause:latest"
        self.network: Network | None = None
        self.moto: Moto | None = None
        self.upstream: FakeUpstream | None = None
        self.proxy: Proxy | None = None
        self.containers: dict[str, Container] = {}
        self.seen_secrets: set[str] = set()
        self._client_home: Path | None = None
        atexit.register(self.close)
        if handle_signals:
            for sig in (signal.SIGTERM, signal.SIGHUP):
                signal.signal(sig, self._on_signal)
        log(f"run {self.runid}: prefix {self.prefix}, temp dir {self.tmp}")

    # -- lifecycle

    def _on_signal(self, signum, _frame):
        log(f"signal {signum}: cleaning up run {self.runid}")
        self.close()
        os._exit(128 + signum)

    def _remove_tmp(self) -> None:
        if self.keep_tmp:
            log(f"keeping {self.tmp} (proxy log: {self.tmp / 'proxy.log'})")
            return
        shutil.rmtree(self.tmp, ignore_errors=True)

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        # A second Ctrl-C (or a TERM) must not abandon the cleanup half way.
        saved = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
                saved[sig] = signal.signal(sig, signal.SIG_IGN)
        try:
            self._close()
        finally:
            for sig, handler in saved.items():
                signal.signal(sig, handler)

    def _close(self) -> None:
        errors = self.cleanup.run_all()
        # Belt and braces: anything still carrying this run's label.
        errors += self._sweep_own()
        for e in errors:
            log(f"cleanup error: {e}")
        log(f"run {self.runid}: cleaned up")

    def _sweep_own(self) -> list[str]:
        errors = []
        flt = f"label={RUN_LABEL}={self.runid}"
        try:
            ids = sh(["docker", "ps", "-aq", "--filter", flt]).stdout.split()
            if ids:
                sh(["docker", "rm", "-f", *ids], check=False)
            nets = sh(["docker", "network", "ls", "-q", "--filter", flt]).stdout.split()
            for n in nets:
                sh(["docker", "network", "rm", n], check=False)
            imgs = sh(["docker", "images", "-q", "--filter", flt]).stdout.split()
            for i in set(imgs):
                sh(["docker", "rmi", "-f", i], check=False)
        except Exception as e:
            errors.append(f"sweep: {e}")
        return errors

    # -- image

    def build_image(self, extra: dict[str, Path] | None = None, tag: str | None = None) -> str:
        """A FROM scratch image with /pause, built static here, as its entrypoint,
        and for each name in `extra` that C source built static as /name beside
        it. The run's test image (`self.image`) unless `tag` names another."""
        tag = tag or self.image
        extra = extra or {}
        ctx = Path(tempfile.mkdtemp(prefix="image-", dir=self.tmp))
        dockerfile = (PAUSE_SRC / "Dockerfile").read_text()
        sh(["gcc", "-static", "-O2", "-o", str(ctx / "pause"), str(PAUSE_SRC / "pause.c")])
        for name, src in extra.items():
            sh(["gcc", "-static", "-O2", "-Wall", "-Wextra", "-o", str(ctx / name), str(src)])
            dockerfile += f"COPY {name} /{name}\n"
        (ctx / "Dockerfile").write_text(dockerfile)
        self.cleanup.push(lambda: sh(["docker", "rmi", "-f", tag], check=False),
                          f"remove image {tag}")
        env = dict(os.environ, DOCKER_BUILDKIT="0")
        cp = sh(["docker", "build", "-q", "-t", tag, "--label", f"{RUN_LABEL}={self.runid}",
                 str(ctx)], env=env, timeout=120, check=False)
        if cp.returncode != 0:
            # A CLI without the legacy builder: the image is a few files, so import them.
            log(f"docker build failed ({cp.stderr.strip()[:200]}); using docker import")
            tar = subprocess.run(["tar", "-C", str(ctx), "-c", "pause", *extra], capture_output=True,
                                 check=True).stdout
            subprocess.run(["docker", "import", "--change", 'ENTRYPOINT ["/pause"]',
                            "--change", f"LABEL {RUN_LABEL}={self.runid}", "-", tag],
                           input=tar, capture_output=True, check=True, timeout=120)
        return tag

    # -- network

    @staticmethod
    def _used_subnets(version: int = 4) -> list:
        """Every IPv`version` subnet a Docker network, a route or an address
        of this machine uses."""
        used = []
        ids = sh(["docker", "network", "ls", "-q"]).stdout.split()
        if ids:
            out = sh(["docker", "network", "inspect", "--format",
                      "{{range .IPAM.Config}}{{.Subnet}} {{end}}", *ids]).stdout
            used += out.split()
        pattern = (r"\b(\d+\.\d+\.\d+\.\d+(?:/\d+)?)\b" if version == 4
                   else r"\b([0-9a-f]{1,4}(?::[0-9a-f]{0,4}){2,7}/\d+)")
        for cmd in (["ip", f"-{version}", "route", "show", "table", "all"],
                    ["ip", f"-{version}", "-o", "addr"]):
            used += re.findall(pattern, sh(cmd, check=False).stdout)
        nets = []
        for tok in used:
            try:
                net = ipaddress.ip_network(tok, strict=False)
            except ValueError:
                continue
            if net.version == version:
                nets.append(net)
        return nets

    def create_network(self, suffix: str = "net", ipv6: bool = False) -> Network:
        """A bridge network on a free /24 (and, with `ipv6`, a free random ULA
        /64 too: `docker network create --ipv6`); the first one made is
        `self.network` (where the proxy, moto and the fake upstream listen)."""
        name = f"{self.prefix}-{suffix}"
        last_err = ""
        for _attempt in range(20):
            used = self._used_subnets()
            subnet = ipaddress.ip_network(
                f"10.{random.randrange(160, 250)}.{random.randrange(0, 256)}.0/24")
            if any(subnet.overlaps(u) for u in used):
                continue
            gateway = str(subnet.network_address + 1)
            extra: list[str] = []
            subnet6 = gateway6 = None
            if ipv6:
                subnet6 = ipaddress.ip_network(
                    f"fd{random.randrange(0, 256):02x}:{random.randrange(0, 65536):x}:"
                    f"{random.randrange(0, 65536):x}:{random.randrange(0, 65536):x}::/64")
                if any(subnet6.overlaps(u) for u in self._used_subnets(6)):
                    continue
                gateway6 = str(subnet6.network_address + 1)
                extra = ["--ipv6", "--subnet", str(subnet6), "--gateway", gateway6]
            cp = sh(["docker", "network", "create", "--driver", "bridge",
                     "--subnet", str(subnet), "--gateway", gateway, *extra,
                     "--label", f"{RUN_LABEL}={self.runid}", name], check=False)
            if cp.returncode == 0:
                net = Network(name, cp.stdout.strip(), subnet, gateway, subnet6, gateway6)
                if self.network is None:
                    self.network = net
                self.cleanup.push(lambda: sh(["docker", "network", "rm", name], check=False),
                                  "remove network")
                # Runs before the network removal (LIFO): containers first.
                self.cleanup.push(self.remove_all_containers, "remove containers")
                log(f"network {name} {subnet} gateway {gateway}"
                    + (f", {subnet6} gateway {gateway6}" if ipv6 else ""))
                return net
            last_err = cp.stderr  # e.g. a concurrent run took the pool: try another
        raise RuntimeError(f"could not create a test network: {last_err}")

    # -- services

    def start_moto(self) -> Moto:
        self.moto = Moto(self, self.network.gateway)
        log(f"moto at {self.moto.url}")
        return self.moto

    def start_upstream(self, routes: dict[str, str]) -> FakeUpstream:
        self.upstream = FakeUpstream(self, self.network.gateway, routes)
        log(f"fake upstream IMDS at {self.upstream.url}")
        return self.upstream

    def proxy_env(self) -> dict:
        env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
        env.update({
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_REGION": "us-east-1",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_STS": self.moto.url,
            "AWS_ENDPOINT_URL_IAM": self.moto.url,
            "AWS_EC2_METADATA_DISABLED": "true",  # the proxy's own creds come from env only
            "AWS_CONFIG_FILE": str(self._empty_file("proxy-aws-config")),
            "AWS_SHARED_CREDENTIALS_FILE": str(self._empty_file("proxy-aws-credentials")),
        })
        return env

    def proxy_config(self, name: str, alias_to_arn: dict, default_alias: str, **extra) -> dict:
        """The config of a proxy called `name`: local Docker, debug logging, the
        fake upstream (if any) and a stateDir of its own; `extra` keys on top."""
        state = self.tmp / f"{name}-state"
        state.mkdir(mode=0o700, exist_ok=True)
        config = {
            "aliasToARN": alias_to_arn,
            "defaultAlias": default_alias,
            "dockerHost": "unix:///var/run/docker.sock",
            "verbose": True,
            "metadataURL": self.upstream.url if self.upstream else None,
            "stateDir": str(state),
        }
        config.update(extra)
        return config

    def start_proxy(self, alias_to_arn: dict[str, str], default_alias: str,
                    name: str = "proxy", **extra) -> Proxy:
        """Start a proxy on the gateway IP. The first one (name "proxy") is
        `self.proxy`, the one containers reach through 169.254.169.254; others
        (another name, their own log and stateDir) are reached by address."""
        config = self.proxy_config(name, alias_to_arn, default_alias, **extra)
        proxy = Proxy(self, self.network.gateway, config, self.proxy_env(), name=name)
        if self.proxy is None:
            self.proxy = proxy
        log(f"{name} at {proxy.ip}:{proxy.port} (pid {proxy.proc.pid})")
        return proxy

    # -- containers

    def run_container(self, short: str, alias: str | None = None, policy: str | None = None,
                      ip: str | None = None, labels: dict | None = None,
                      redirect: bool | Proxy = True, start: bool = True,
                      network: Network | None = None, image: str | None = None) -> Container:
        """A container of `image` (default: the run's pause image) on `network`
        (default: the run's), named and labelled as the run's own."""
        name = f"{self.prefix}-{short}"
        all_labels = {RUN_LABEL: self.runid}
        if alias is not None:
            all_labels[ALIAS_LABEL] = alias
        if policy is not None:
            all_labels[POLICY_LABEL] = policy
        all_labels.update(labels or {})
        args = ["docker", "create", "--name", name, "--network", (network or self.network).name]
        if ip:
            args += ["--ip", ip]
        for k, v in all_labels.items():
            args += ["--label", f"{k}={v}"]
        cid = sh(args + [image or self.image]).stdout.strip()
        c = Container(name, short, cid, ip or "", 0, all_labels)
        self.containers[name] = c
        if start:
            self.start_container(c, redirect=redirect)
        return c

    def start_container(self, c: Container, redirect: bool | Proxy = True) -> Container:
        """Start `c`; `redirect` True points its 169.254.169.254 at the main proxy,
        a Proxy at that one, False leaves it alone."""
        sh(["docker", "start", c.id])
        self.refresh(c)
        if redirect:
            self.redirect_imds(c, redirect if isinstance(redirect, Proxy) else None)
        return c

    def refresh(self, c: Container) -> Container:
        out = sh(["docker", "inspect", "--format",
                  "{{.State.Pid}} {{range .NetworkSettings.Networks}}{{.IPAddress}} {{end}}",
                  c.id]).stdout.split()
        c.pid = int(out[0])
        c.ip = out[1] if len(out) > 1 else ""
        return c

    def redirect_imds(self, c: Container, proxy: Proxy | None = None,
                      dest: str | None = None) -> None:
        """DNAT 169.254.169.254:80 to the proxy (default: the main one) inside the
        container's netns only; `dest` ("ip:port") sends it elsewhere instead, e.g.
        to a helper listening in that same namespace."""
        proxy = proxy or self.proxy
        sh(["nsenter", "-t", str(c.pid), "-n", "--", "iptables", "-w", "5", "-t", "nat",
            "-A", "OUTPUT", "-d", f"{IMDS_IP}/32", "-p", "tcp", "--dport", "80",
            "-m", "comment", "--comment", self.comment,
            "-j", "DNAT", "--to-destination", dest or f"{proxy.ip}:{proxy.port}"])
        c.redirected = True

    def _unredirect(self, c: Container) -> None:
        if not c.redirected or not c.pid:
            return
        cp = sh(["nsenter", "-t", str(c.pid), "-n", "--", "iptables", "-w", "5", "-t", "nat",
                 "-S", "OUTPUT"], check=False)
        for line in cp.stdout.splitlines():
            if line.startswith("-A ") and self.comment in line:
                rule = line.split()[1:]
                sh(["nsenter", "-t", str(c.pid), "-n", "--", "iptables", "-w", "5", "-t", "nat",
                    "-D", *[a.strip('"') for a in rule]], check=False)
        c.redirected = False

    def remove_container(self, c: Container) -> None:
        try:
            self._unredirect(c)
        finally:
            sh(["docker", "rm", "-f", c.id], check=False)
            self.containers.pop(c.name, None)

    def remove_all_containers(self) -> None:
        for c in list(self.containers.values()):
            self.remove_container(c)

    # -- clients (each runs inside the container's network namespace)

    def _empty_file(self, name: str) -> Path:
        p = self.tmp / name
        if not p.exists():
            p.write_text("")
        return p

    def client_env(self) -> dict:
        if self._client_home is None:
            self._client_home = self.tmp / "client-home"
            self._client_home.mkdir()
        return {
            "PATH": os.environ.get("PATH", "/usr/sbin:/usr/bin:/sbin:/bin"),
            "HOME": str(self._client_home),
            "LANG": "C.UTF-8",
            "PYTHONDONTWRITEBYTECODE": "1",
            "AWS_CONFIG_FILE": str(self._empty_file("client-aws-config")),
            "AWS_SHARED_CREDENTIALS_FILE": str(self._empty_file("client-aws-credentials")),
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_REGION": "us-east-1",
            "AWS_ENDPOINT_URL_STS": self.moto.url,
            "AWS_METADATA_SERVICE_NUM_ATTEMPTS": "2",
            "AWS_METADATA_SERVICE_TIMEOUT": "2",
        }

    def in_netns(self, c: Container, argv: list[str], timeout: float = 60,
                 env: dict | None = None) -> subprocess.CompletedProcess:
        full = ["nsenter", "-t", str(c.pid), "-n", "--", *argv]
        try:
            return subprocess.run(full, capture_output=True, text=True, timeout=timeout,
                                  env=env if env is not None else self.client_env(),
                                  stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired as e:
            return subprocess.CompletedProcess(full, 124, e.stdout or "",
                                               (e.stderr or "") + f"\n[timed out after {timeout}s]")

    def http(self, c: Container, requests: list[dict], timeout: float = 5) -> list[HttpResult]:
        """Raw HTTP from inside `c`'s netns, one connection per request. Each request is a
        dict: method, path, headers, and optionally host/port (default: the real metadata
        address, port 80, which the netns DNATs to the proxy)."""
        reqs = [dict({"host": IMDS_IP, "port": 80, "headers": {}, "timeout": timeout}, **r)
                for r in requests]
        env = dict(self.client_env(), E2E_HTTP_REQUESTS=json.dumps(reqs))
        cp = self.in_netns(c, [sys.executable, str(NETNS_HTTP)],
                           timeout=timeout * 2 * len(reqs) + 10, env=env)
        if cp.returncode != 0:
            raise RuntimeError(f"netns_http failed rc={cp.returncode}: {cp.stderr}")
        results = []
        for r, out in zip(reqs, json.loads(cp.stdout)):
            url = f"http://{r['host']}:{r['port']}{r.get('path', '')}"
            if "raw" in r:
                url += f" raw={r['raw'][:200]!r}"
            results.append(self._http_result(r.get("method", "RAW"), url, r["headers"], out))
        return results

    def _http_result(self, method: str, url: str, headers: dict, out: dict) -> HttpResult:
        """One of netns_http's results, its body's secrets noted for the log check."""
        hr = HttpResult(method, url, headers, out.get("status"), out.get("headers", []),
                        out.get("body", ""), out.get("error"), out.get("ms", 0.0),
                        out.get("sent_at", 0.0), out.get("local_port"))
        self._collect_secrets_from_body(hr.body)
        return hr

    def keepalive(self, c: Container, steps: list[dict], timeout: float = 10) -> list[HttpResult]:
        """Requests from inside `c`'s netns on one keep-alive connection, as SDKs send
        them (see netns_http.keepalive: a step may pause until a file exists). Each
        result's `local_port` is the connection's, to show it stayed the same."""
        spec = [{"host": IMDS_IP, "port": 80, "timeout": timeout, "steps": steps}]
        env = dict(self.client_env(), E2E_HTTP_REQUESTS=json.dumps(spec))
        cp = self.in_netns(c, [sys.executable, str(NETNS_HTTP)],
                           timeout=timeout * (len(steps) + 2) + 10, env=env)
        if cp.returncode != 0:
            raise RuntimeError(f"netns_http failed rc={cp.returncode}: {cp.stderr}")
        requests = [s for s in steps if "wait_for" not in s]
        return [self._http_result(step["method"], f"http://{IMDS_IP}:80{step['path']}",
                                  step.get("headers", {}), out)
                for step, out in zip(requests, json.loads(cp.stdout))]

    def request(self, c: Container, method: str, path: str, headers: dict | None = None,
                **kw) -> HttpResult:
        return self.http(c, [dict(method=method, path=path, headers=headers or {}, **kw)])[0]

    def slow_loris(self, c: Container, count: int, seconds: float) -> subprocess.Popen:
        """Start a caller in `c`'s netns holding `count` unfinished requests open to
        the proxy for up to `seconds`. Read its two JSON lines with finish_slow_loris."""
        env = dict(self.client_env(), E2E_HOLD=json.dumps(
            {"host": self.proxy.ip, "port": self.proxy.port, "count": count, "seconds": seconds}))
        return subprocess.Popen(["nsenter", "-t", str(c.pid), "-n", "--", sys.executable,
                                 str(NETNS_HTTP)], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True, stdin=subprocess.DEVNULL)

    @staticmethod
    def finish_slow_loris(p: subprocess.Popen, timeout: float) -> dict:
        try:
            out, err = p.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            p.kill()
            out, err = p.communicate()
        lines = [json.loads(x) for x in out.splitlines() if x.startswith("{")]
        return lines[-1] if lines else {"error": err}

    _SECRET_VALUE_RE = re.compile(r'"(?:SecretAccessKey|Token)"\s*:\s*"([^"]+)"')

    def _collect_secrets_from_body(self, body: str) -> None:
        """Remember every secret a client was handed (JSON bodies and raw HTTP alike),
        for the log-hygiene check."""
        for value in self._SECRET_VALUE_RE.findall(body or ""):
            self.seen_secrets.add(value)

    def aws_cli(self, c: Container, timeout: float = 60) -> ClientResult:
        argv = [venv_bin("aws"), "sts", "get-caller-identity", "--output", "json"]
        cp = self.in_netns(c, argv, timeout=timeout)
        res = ClientResult("aws-cli", argv, cp.returncode, cp.stdout, cp.stderr)
        if cp.returncode == 0:
            try:
                res.arn = json.loads(cp.stdout).get("Arn")
            except ValueError:
                pass
        return res

    BOTO3_SCRIPT = r"""
import json, sys, boto3
s = boto3.Session()
c = s.get_credentials()
if c is None:
    print(json.dumps({"error": "NoCredentials"})); sys.exit(3)
f = c.get_frozen_credentials()
arn = s.client("sts").get_caller_identity()["Arn"]
exp = getattr(c, "_expiry_time", None)
print(json.dumps({"arn": arn, "access_key_id": f.access_key, "secret_access_key": f.secret_key,
                  "token": f.token, "expiration": exp.isoformat() if exp else None,
                  "method": c.method}))
"""

    def boto3(self, c: Container, timeout: float = 60, env: dict | None = None) -> ClientResult:
        """`env`: variables added to the client's environment."""
        argv = [sys.executable, "-c", self.BOTO3_SCRIPT]
        cp = self.in_netns(c, argv, timeout=timeout, env=dict(self.client_env(), **(env or {})))
        stdout = cp.stdout
        res = ClientResult("boto3", [sys.executable, "-c", "<boto3 get_caller_identity>"],
                           cp.returncode, stdout, cp.stderr)
        if cp.returncode == 0:
            try:
                doc = json.loads(stdout)
                for k in ("secret_access_key", "token"):
                    if doc.get(k):
                        self.seen_secrets.add(doc[k])
                        doc[k] = "<redacted>"
                res.stdout = json.dumps(doc)
                res.arn = doc.get("arn")
                res.access_key_id = doc.get("access_key_id")
                res.expiration = doc.get("expiration")
            except ValueError:
                pass
        return res

    def rust_client(self, c: Container, imds_only: bool = False, timeout: float = 60,
                    env: dict | None = None) -> ClientResult:
        argv = [str(imds_client_bin())] + (["--imds"] if imds_only else [])
        cp = self.in_netns(c, argv, timeout=timeout, env=dict(self.client_env(), **(env or {})))
        res = ClientResult("imds_client", argv, cp.returncode, cp.stdout, cp.stderr)
        kv = dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)
        res.arn = kv.get("arn") or None
        res.access_key_id = kv.get("access_key_id")
        res.expiration = kv.get("expiration")
        return res

    # -- diagnostics

    def context(self, *items) -> str:
        """Text for an assertion message: the exchanges and the proxy log tail."""
        parts = []
        for it in items:
            if hasattr(it, "describe"):
                parts.append(it.describe())
            else:
                parts.append(str(it))
        if self.proxy:
            parts.append(f"proxy alive: {self.proxy.alive()}; proxy log tail:\n"
                         + redact(self.proxy.tail(40)))
        return "\n" + "\n".join(parts)


def assumed_role(arn: str | None) -> tuple[str, str] | None:
    """(role name, session name) of an assumed-role ARN, or None."""
    m = ASSUMED_ROLE_RE.match(arn or "")
    return (m.group("role"), m.group("session")) if m else None
