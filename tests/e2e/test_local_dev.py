"""Running the proxy outside EC2 (issue 7): a laptop or CI host with no metadata service.

The shape under test is the one docs/local-development.md describes: a Docker
bridge network on 169.254.169.0/24 (the "metadata network"), the proxy as a
container on it at 169.254.169.254 with `metadataURL: null` and `localMetadata`,
and application containers on the same network that reach 169.254.169.254
directly: no iptables rule anywhere, the address simply is the proxy's.

The proxy "container" is a pause container from the harness's scratch image,
started with `--ip 169.254.169.254`; the host's proxy binary runs inside its
network namespace (`nsenter -t PID -n`). That is exactly the network shape of a
proxy container (the packaged image itself is tested in tests/packaging). Moto
listens on the metadata network's gateway, 169.254.169.1, which the proxy and
the clients reach over the bridge.

This module has its own `Run` (image, network, moto, containers, temp dir),
separate from the session-wide one in conftest.py, because it needs a fixed
subnet and a proxy at a fixed address. A shared engine may already have
169.254.169.0/24 in use (another run, another engineer): the module then skips
and says so, rather than touch what it did not create.
"""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

import harness
from harness import ACCOUNT, CREDS_PATH, IMDS_IP, RUN_LABEL, TOKEN_HEADER, TTL_HEADER, assumed_role

METADATA_SUBNET = ipaddress.ip_network("169.254.169.0/24")
GATEWAY = "169.254.169.1"
REGION = "eu-west-1"  # what localMetadata says; the proxy's own region stays us-east-1
ROLES = {"app": "ec2mp-local-app", "default": "ec2mp-local-default"}
PROXY_SELF_ROLE = "ec2mp-local-proxy-self"
BROKEN_SOURCE = "ec2mp-no-such-source-profile"
PROFILE_REGION = "ap-southeast-2"  # the proxy's own region, from its profile
STARTUP_TIMEOUT = 30.0


# ---------------------------------------------------------------- helpers


def _subnet_in_use() -> str | None:
    """Why 169.254.169.0/24 cannot be ours on this engine, or None when it is free."""
    for used in harness.Run._used_subnets():
        if used.overlaps(METADATA_SUBNET) and used.prefixlen > 0:
            return (f"{used} (a Docker network, route or address on this host) overlaps "
                    f"{METADATA_SUBNET}; the engine is shared, so this run leaves it alone")
    return None


class NetnsProxy(harness.LogFile):
    """The host's proxy binary run inside the pause container's network namespace,
    listening on 169.254.169.254:80: the network shape of a proxy container."""

    def __init__(self, run: harness.Run, holder: harness.Container, name: str,
                 config: dict, env: dict):
        self.name = name
        self.config = config
        self.config_path = run.tmp / f"{name}.json"
        self.config_path.write_text(json.dumps(config, indent=2))
        self.log_path = run.tmp / f"{name}.log"
        self._log = open(self.log_path, "ab")
        self.argv = ["nsenter", "-t", str(holder.pid), "-n", "--",
                     str(harness.proxy_bin()), "-c", str(self.config_path)]
        # nsenter without --fork execs the proxy: this pid is the proxy's.
        self.proc = subprocess.Popen(self.argv, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, env=env,
                                     preexec_fn=harness._die_with_parent)
        self.killed = False
        run.cleanup.push(self.stop, f"stop {name}")

    def alive(self) -> bool:
        return self.proc.poll() is None

    def wait_log(self, needle: str, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while True:
            if needle in self.log_text():
                return True
            if time.monotonic() > deadline or not self.alive():
                return needle in self.log_text()
            time.sleep(0.1)

    def wait_started(self) -> None:
        # The startup line is written after the listener is bound.
        if not self.wait_log(f"listen={IMDS_IP}:80", STARTUP_TIMEOUT):
            raise AssertionError(f"{self.name} did not start within {STARTUP_TIMEOUT:.0f} s "
                                 f"(alive: {self.alive()}):\n{harness.redact(self.tail())}")

    def stop(self) -> None:
        if harness.stop_process(self.proc, grace=12):  # the proxy drains for up to 10 s
            self.killed = True
        if not self._log.closed:
            self._log.close()


@dataclass
class Local:
    run: harness.Run
    net: harness.Network
    holder: harness.Container          # the pause container at 169.254.169.254
    arn_of: dict                       # alias -> role ARN
    self_arn: str                      # the role the proxy assumes for itself (profile test)
    state_dir: Path
    proxy: NetnsProxy | None = None

    def start_proxy(self, name: str, env: dict, **extra) -> NetnsProxy:
        """Stop the running proxy (one listener on 169.254.169.254:80), start another."""
        if self.proxy is not None:
            self.proxy.stop()
        config = {
            "aliasToARN": dict(self.arn_of),
            "defaultAlias": "default",
            "dockerHost": "unix:///var/run/docker.sock",
            "listen": f"{IMDS_IP}:80",
            "metadataURL": None,
            "localMetadata": {"region": REGION},
            "stateDir": str(self.state_dir),
            "verbose": True,
        }
        config.update(extra)
        self.proxy = NetnsProxy(self.run, self.holder, name, config, env)
        self.proxy.wait_started()
        harness.log(f"{name} in the netns of {self.holder.name} (pid {self.proxy.proc.pid})")
        return self.proxy

    def container(self, short: str, alias: str | None = None) -> harness.Container:
        """An application container on the metadata network, with no DNAT rule."""
        return self.run.run_container(short, alias=alias, redirect=False, network=self.net)

    def client_env(self, region: bool = True) -> dict:
        env = self.run.client_env()
        if not region:
            env.pop("AWS_REGION", None)
            env.pop("AWS_DEFAULT_REGION", None)
        return env

    def ctx(self, *items) -> str:
        parts = [it.describe() if hasattr(it, "describe") else str(it) for it in items]
        if self.proxy is not None:
            parts.append(f"{self.proxy.name} alive: {self.proxy.alive()}; log tail:\n"
                         + harness.redact(self.proxy.tail(40)))
        return "\n" + "\n".join(parts)


def _chain_signal_handlers(run: harness.Run) -> dict:
    """Close this module's run on SIGTERM/SIGHUP, then do what was done before (the
    session run's handler, which exits), so neither run is abandoned."""
    saved = {}
    for sig in (signal.SIGTERM, signal.SIGHUP):
        previous = signal.getsignal(sig)
        saved[sig] = previous

        def handler(signum, frame, previous=previous):
            run.close()
            if callable(previous):
                previous(signum, frame)
            os._exit(128 + signum)

        signal.signal(sig, handler)
    return saved


@pytest.fixture(scope="module")
def local(request) -> Local:
    for p in (harness.proxy_bin(), harness.imds_client_bin()):
        if not p.exists():
            pytest.skip(f"missing {p}: run scripts/e2e.sh, which builds it")
    if os.geteuid() != 0:
        pytest.skip("needs root (nsenter into container network namespaces)")
    busy = _subnet_in_use()
    if busy:
        pytest.skip(busy)

    run = harness.Run(kind="local", handle_signals=False)
    saved = _chain_signal_handlers(run)
    failed_before = request.session.testsfailed

    def finish():
        if request.session.testsfailed > failed_before or os.environ.get("EC2MP_E2E_KEEP"):
            run.keep_tmp = True
        run.close()
        for sig, handler in saved.items():
            signal.signal(sig, handler)

    request.addfinalizer(finish)
    run.build_image()

    name = f"{run.prefix}-metadata"
    cp = harness.sh(["docker", "network", "create", "-d", "bridge",
                     "--subnet", str(METADATA_SUBNET), "--gateway", GATEWAY,
                     "--label", f"{RUN_LABEL}={run.runid}", name], check=False)
    if cp.returncode != 0:
        # Taken between the check and now, by another user of the engine.
        pytest.skip(f"cannot create the metadata network {METADATA_SUBNET}: {cp.stderr.strip()}")
    net = harness.Network(name, cp.stdout.strip(), METADATA_SUBNET, GATEWAY)
    run.network = net
    run.cleanup.push(lambda: harness.sh(["docker", "network", "rm", name], check=False),
                     "remove metadata network")
    run.cleanup.push(run.remove_all_containers, "remove containers")
    harness.log(f"metadata network {name} {METADATA_SUBNET} gateway {GATEWAY}")

    # The proxy's address is taken first, so no other container can get it.
    holder = run.run_container("imds", ip=IMDS_IP, redirect=False, network=net)
    assert holder.ip == IMDS_IP, f"pause container got {holder.ip}, not {IMDS_IP}"

    moto = run.start_moto()  # on the gateway, 169.254.169.1
    arn_of = {alias: moto.create_role(role) for alias, role in ROLES.items()}
    self_arn = moto.create_role(PROXY_SELF_ROLE)
    state = run.tmp / "local-state"
    state.mkdir(mode=0o700)
    return Local(run, net, holder, arn_of, self_arn, state)


@pytest.fixture
def fresh(local):
    """Factory for application containers removed when the test ends."""
    made = []

    def make(short: str, alias: str | None = None) -> harness.Container:
        c = local.container(short, alias=alias)
        made.append(c)
        return c

    yield make
    for c in made:
        local.run.remove_container(c)


def _assumed_roles(moto: harness.Moto) -> list[tuple[str, str]]:
    """(role ARN, session name) of every AssumeRole moto has answered, oldest first.
    (moto's state dump also holds the secrets: only these two fields are kept.)"""
    with urllib.request.urlopen(f"{moto.url}/moto-api/data.json", timeout=10) as resp:
        data = json.load(resp)
    return [(r.get("role_arn"), r.get("session_name"))
            for r in data.get("sts", {}).get("AssumedRole", [])]


def _check_role(local: Local, res: harness.ClientResult, alias: str,
                c: harness.Container) -> None:
    assert res.ok, f"{res.name} got no identity" + local.ctx(res)
    parsed = assumed_role(res.arn)
    assert parsed, f"{res.name}: not an assumed-role ARN: {res.arn}" + local.ctx(res)
    role, session = parsed
    assert res.arn.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/"), local.ctx(res)
    assert role == ROLES[alias], (f"{res.name} in {c.name} (alias {alias!r}) got role "
                                  f"{role!r}, want {ROLES[alias]!r}" + local.ctx(res))
    assert c.short in session, f"session {session!r} should name {c.name}" + local.ctx(res)


BOTOCORE_REGION = r"""
import json, os
import botocore.utils
assert "AWS_REGION" not in os.environ and "AWS_DEFAULT_REGION" not in os.environ
fetcher = botocore.utils.InstanceMetadataRegionFetcher(timeout=2, num_attempts=2)
print(json.dumps({"region": fetcher.retrieve_region()}))
"""


# ---------------------------------------------------------------- tests


def test_sdk_clients_on_the_metadata_network_get_their_role_and_region_with_no_upstream(
        local, fresh):
    """The whole point of issue 7: on a host with no metadata service, a container
    on the metadata network finds the proxy at 169.254.169.254 with no DNAT rule,
    and the AWS CLI, botocore and aws-config all get the container's role from it;
    SDKs that look for a region in IMDS find the one `localMetadata` names."""
    run = local.run
    proxy = local.start_proxy("proxy-keys", run.proxy_env())
    assert "metadata=none" in proxy.log_text(), local.ctx("startup line should say metadata=none")
    c = fresh("app", alias="app")

    nat = run.in_netns(c, ["iptables", "-w", "5", "-t", "nat", "-S", "OUTPUT"])
    assert "DNAT" not in nat.stdout, f"the client netns must have no DNAT rule:\n{nat.stdout}"

    cli = run.aws_cli(c)
    _check_role(local, cli, "app", c)

    # botocore's own IMDS region lookup, with no region anywhere in the environment.
    cp = run.in_netns(c, [sys.executable, "-c", BOTOCORE_REGION], timeout=60,
                      env=local.client_env(region=False))
    assert cp.returncode == 0, f"botocore region fetch failed:\n{cp.stdout}\n{cp.stderr}" + local.ctx()
    assert json.loads(cp.stdout)["region"] == REGION, cp.stdout + local.ctx()

    # aws-config (Rust) through its default chain; with no AWS_REGION it must take
    # the region from IMDS too, or it could not sign the STS call.
    argv = [str(harness.imds_client_bin())]
    cp = run.in_netns(c, argv, timeout=60, env=local.client_env(region=False))
    rust = harness.ClientResult("imds_client (no AWS_REGION)", argv, cp.returncode,
                                cp.stdout, cp.stderr)
    kv = dict(line.split("=", 1) for line in cp.stdout.splitlines() if "=" in line)
    rust.arn = kv.get("arn") or None
    _check_role(local, rust, "app", c)
    imds_only = run.rust_client(c, imds_only=True)
    _check_role(local, imds_only, "app", c)

    # The synthesised tree: region and identity document, over IMDSv2.
    tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
    assert tok.status == 200, local.ctx(tok)
    h = {TOKEN_HEADER: tok.body}
    region, doc, listing = run.http(c, [
        dict(method="GET", path="/latest/meta-data/placement/region", headers=h),
        dict(method="GET", path="/latest/dynamic/instance-identity/document", headers=h),
        dict(method="GET", path=CREDS_PATH, headers=h),
    ])
    assert (region.status, region.body) == (200, REGION), local.ctx(region)
    assert doc.status == 200 and doc.json()["region"] == REGION, local.ctx(doc)
    assert doc.json()["availabilityZone"] == REGION + "a", local.ctx(doc)
    assert (listing.status, listing.body) == (200, ROLES["app"]), local.ctx(listing)

    # The proxy saw the container's own address (no NAT in between) and named it.
    rid = listing.header("X-Request-Id")
    assert proxy.wait_log(rid, 3), local.ctx(listing)
    lines = [line for line in proxy.log_text().splitlines() if rid in line]
    assert any(f"remote={c.ip}" in line for line in lines), "\n".join(lines)
    assert any(f"container={c.name}" in line and "alias=app" in line and "status=200" in line
               for line in lines), "\n".join(lines)


def test_proxy_own_credentials_from_a_role_arn_source_profile_profile(local, fresh):
    """A developer's ~/.aws/config profile with role_arn + source_profile is enough
    for the proxy's own credentials (aws-config's chain): with no AWS_ACCESS_KEY_ID
    in its environment it assumes its own role first, then each container's."""
    run = local.run
    cfg = run.tmp / "profile-aws-config"
    creds = run.tmp / "profile-aws-credentials"
    session = f"ec2mp-proxy-self-{run.runid}"
    cfg.write_text(
        "[profile ec2mp-dev]\n"
        f"role_arn = {local.self_arn}\n"
        "source_profile = ec2mp-base\n"
        f"role_session_name = {session}\n"
        f"region = {PROFILE_REGION}\n"
        "\n[profile ec2mp-base]\nregion = us-east-1\n")
    creds.write_text("[ec2mp-base]\naws_access_key_id = testing\n"
                     "aws_secret_access_key = testing\n")
    env = {k: v for k, v in run.proxy_env().items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN",
                        "AWS_REGION", "AWS_DEFAULT_REGION")}
    env.update(AWS_CONFIG_FILE=str(cfg), AWS_SHARED_CREDENTIALS_FILE=str(creds),
               AWS_PROFILE="ec2mp-dev")
    before = _assumed_roles(run.moto)
    # No localMetadata: the synthesised region defaults to the proxy's own.
    proxy = local.start_proxy("proxy-profile", env, localMetadata={})
    assert f"sts_region={PROFILE_REGION}" in proxy.log_text(), local.ctx("region from the profile")

    c = fresh("app-profile", alias="app")
    cli = run.aws_cli(c)
    _check_role(local, cli, "app", c)
    region = run.request(c, "GET", "/latest/meta-data/placement/region")
    assert (region.status, region.body) == (200, PROFILE_REGION), local.ctx(region)

    calls = _assumed_roles(run.moto)[len(before):]
    own = [i for i, (arn, name) in enumerate(calls) if arn == local.self_arn and name == session]
    app = [i for i, (arn, name) in enumerate(calls)
           if arn == local.arn_of["app"] and c.short in (name or "")]
    assert own, f"moto saw no AssumeRole of {local.self_arn} as {session}: {calls}" + local.ctx()
    assert app and own[0] < app[0], (
        f"the proxy must assume its own role before the container's: {calls}" + local.ctx())
    assert proxy.alive(), local.ctx()


def _broken_profile_proxy(local: Local, name: str, **extra) -> NetnsProxy:
    """A proxy whose profile names a source_profile that does not exist."""
    run = local.run
    cfg = run.tmp / f"{name}-aws-config"
    cfg.write_text("[profile ec2mp-broken]\n"
                   f"role_arn = {local.self_arn}\n"
                   f"source_profile = {BROKEN_SOURCE}\n"
                   "region = us-east-1\n")
    env = {k: v for k, v in run.proxy_env().items()
           if k not in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")}
    env.update(AWS_CONFIG_FILE=str(cfg), AWS_PROFILE="ec2mp-broken")
    return local.start_proxy(name, env, **extra)


def _http_get_in_netns(local: Local, c: harness.Container, url: str) -> tuple[int, str]:
    script = ("import sys, urllib.request, urllib.error\n"
              "try:\n"
              "    r = urllib.request.urlopen(sys.argv[1], timeout=5); print(r.status); print(r.read().decode())\n"
              "except urllib.error.HTTPError as e:\n"
              "    print(e.code); print(e.read().decode())\n")
    cp = local.run.in_netns(c, [sys.executable, "-c", script, url], timeout=20)
    assert cp.returncode == 0, f"GET {url} failed: {cp.stderr}"
    status, _, body = cp.stdout.partition("\n")
    return int(status), body.strip()


def test_a_failing_credential_source_is_named_in_the_log(local, fresh):
    """When the proxy's own credentials cannot be had, the operator must learn which
    source failed: here a profile whose source_profile does not exist. The container
    gets a 503 (never someone else's credentials), the proxy keeps running, and the
    log names the missing profile and the provider."""
    proxy = _broken_profile_proxy(local, "proxy-broken")
    c = fresh("app-broken", alias="app")
    r = local.run.request(c, "GET", CREDS_PATH + ROLES["app"], timeout=30)
    assert r.status == 503, local.ctx(r)
    assert "SecretAccessKey" not in r.body, local.ctx(r)
    assert proxy.wait_log(r.header("X-Request-Id") or "-", 3), local.ctx(r)
    named = [line for line in proxy.log_text().splitlines()
             if f"profile `{BROKEN_SOURCE}` was not defined" in line]
    assert named, f"no log line names the missing profile {BROKEN_SOURCE!r}" + local.ctx(r)
    assert "Profile:" in named[0] and "ec2mp-broken" in named[0], named[0]
    assert proxy.alive(), "a failing credential source must not stop the proxy" + local.ctx()


def test_readyz_is_not_ready_while_the_proxy_has_no_credentials_of_its_own(local, fresh):
    """/readyz is documented as "STS answers, or credentials are cached to serve
    meanwhile". With no credentials of its own the proxy has neither: every
    AssumeRole fails and nothing is cached, so it should not report ready."""
    proxy = _broken_profile_proxy(local, "proxy-broken-ready", metricsListen=f"{IMDS_IP}:9100")
    c = fresh("app-broken-ready", alias="app")
    r = local.run.request(c, "GET", CREDS_PATH + ROLES["app"], timeout=30)
    assert r.status == 503, local.ctx(r)
    status, body = _http_get_in_netns(local, c, f"http://{IMDS_IP}:9100/readyz")
    harness.log(f"/readyz with no credentials to be had: {status} {body!r}")
    assert status == 503 and body.startswith("not ready: "), (status, body, proxy.tail(5))


def test_every_failure_of_the_credential_source_names_it(local, fresh):
    """Not only the first failure: the response line of a container's failed request
    (the line an operator finds by the request ID) should name the failing source."""
    proxy = _broken_profile_proxy(local, "proxy-broken-again")
    c = fresh("app-broken-again", alias="app")
    first = local.run.request(c, "GET", CREDS_PATH + ROLES["app"], timeout=30)
    second = local.run.request(c, "GET", CREDS_PATH + ROLES["app"], timeout=30)
    assert first.status == 503 and second.status == 503, local.ctx(first, second)
    for r in (first, second):
        rid = r.header("X-Request-Id") or "-"
        assert proxy.wait_log(rid, 3), local.ctx(r)
        lines = [line for line in proxy.log_text().splitlines()
                 if rid in line and " response " in line]
        assert lines and BROKEN_SOURCE in lines[0], "\n".join(lines) + local.ctx()


# ---------------------------------------------------------------- the compose example
#
# Last in this module on purpose: it takes 169.254.169.254 from the pause container.

COMPOSE_FILE = harness.REPO / "contrib" / "docker-compose.local.yml"
COMPOSE_UID = 4321  # "you": not root, not the image's 65532


def _compose_cli() -> list[str] | None:
    for argv in (["docker", "compose"], ["docker-compose"]):
        cp = subprocess.run(argv + ["version"], capture_output=True, text=True)
        if cp.returncode == 0:
            return argv
    return None


def _host_binary_image(run: harness.Run) -> str:
    """An image of the host's proxy binary and the libraries it links, shaped like
    Dockerfile.run's (user 65532, `ENTRYPOINT ["ec2metaproxy", "-c"]`), made with
    `docker import` so that no registry and no compiler in Docker are needed."""
    root = run.tmp / "proxy-rootfs"
    (root / "usr/local/bin").mkdir(parents=True)
    binary = harness.proxy_bin()
    harness.sh(["cp", str(binary), str(root / "usr/local/bin/ec2metaproxy")])
    for line in harness.sh(["ldd", str(binary)]).stdout.splitlines():
        parts = line.split()
        lib = parts[2] if "=>" in parts and len(parts) > 2 else parts[0]
        if lib.startswith("/"):
            dest = root / lib.lstrip("/")
            dest.parent.mkdir(parents=True, exist_ok=True)
            harness.sh(["cp", "-L", lib, str(dest)])
    # Like Dockerfile.run: aws-config's HTTPS client panics without any root certificate.
    (root / "etc/ssl/certs").mkdir(parents=True)
    harness.sh(["cp", "-L", "/etc/ssl/certs/ca-certificates.crt",
                str(root / "etc/ssl/certs/ca-certificates.crt")])
    image = f"{run.prefix}-proxy-image:latest"
    tar = subprocess.run(["tar", "-C", str(root), "-c", "."], capture_output=True,
                         check=True).stdout
    run.cleanup.push(lambda: harness.sh(["docker", "rmi", "-f", image], check=False),
                     "remove proxy image")
    subprocess.run(["docker", "import",
                    "--change", "USER 65532:65532",
                    "--change", 'ENTRYPOINT ["/usr/local/bin/ec2metaproxy", "-c"]',
                    "--change", 'CMD ["/etc/ec2metaproxy/config.json"]',
                    "--change", f"LABEL {RUN_LABEL}={run.runid}",
                    "-", image], input=tar, capture_output=True, check=True, timeout=120)
    return image


def test_the_compose_example_runs_the_proxy_as_the_user_with_their_aws_profile(local, fresh):
    """contrib/docker-compose.local.yml, unchanged, with an override file only for
    what a test must change (names unique to this run, the image, moto's STS):
    the proxy runs as the developer's uid with the Docker socket's group, binds
    169.254.169.254:80 as that user, reads a 0600 role_arn profile from the
    mounted ~/.aws, writes token.key into the state directory, and a labelled
    container on the network gets its role."""
    compose = _compose_cli()
    if compose is None:
        pytest.skip("neither `docker compose` nor `docker-compose` is installed")
    run = local.run
    if local.proxy is not None:
        local.proxy.stop()
        local.proxy = None
    run.remove_container(local.holder)  # frees 169.254.169.254 for the compose service
    image = _host_binary_image(run)

    home = run.tmp / "compose-home"
    aws = home / ".aws"
    state = home / ".local" / "state" / "ec2metaproxy"
    aws.mkdir(parents=True)
    state.mkdir(parents=True, mode=0o700)
    session = f"ec2mp-compose-self-{run.runid}"
    (aws / "config").write_text(
        "[profile ec2mp-dev]\n"
        f"role_arn = {local.self_arn}\n"
        "source_profile = ec2mp-base\n"
        f"role_session_name = {session}\n"
        "region = us-east-1\n")
    (aws / "credentials").write_text("[ec2mp-base]\naws_access_key_id = testing\n"
                                     "aws_secret_access_key = testing\n")
    for p in (home, home / ".local", aws, state, aws / "config", aws / "credentials"):
        os.chown(p, COMPOSE_UID, COMPOSE_UID)
    for p in (aws / "config", aws / "credentials"):
        p.chmod(0o600)
    config = run.tmp / "compose-config.json"
    config.write_text(json.dumps({
        "aliasToARN": dict(local.arn_of), "defaultAlias": "default",
        "listen": f"{IMDS_IP}:80", "metadataURL": None,
        "localMetadata": {"region": REGION}, "stateDir": "/var/lib/ec2metaproxy",
        # As docs/local-development.md says: run as the user, in a container
        # of its own, it cannot prove callers and serves them by address.
        "requireCallerProof": False, "verbose": True}, indent=2))
    config.chmod(0o644)
    container = f"{run.prefix}-compose-proxy"
    override = run.tmp / "compose-override.yml"
    override.write_text(json.dumps({  # JSON is YAML
        "services": {"ec2metaproxy": {
            "image": image,
            "container_name": container,
            "labels": {RUN_LABEL: run.runid},
            "environment": [f"AWS_ENDPOINT_URL_STS={run.moto.url}"],
        }},
        "networks": {"metadata": {"name": local.net.name, "external": True}},
    }))
    project = f"{run.prefix}-compose".replace(".", "-")
    argv = compose + ["-p", project, "-f", str(COMPOSE_FILE), "-f", str(override)]
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(HOME=str(home), EC2MP_CONFIG=str(config), EC2MP_UID=str(COMPOSE_UID),
               EC2MP_GID=str(COMPOSE_UID), AWS_PROFILE="ec2mp-dev",
               DOCKER_GID=str(os.stat("/var/run/docker.sock").st_gid))
    run.cleanup.push(lambda: harness.sh(argv + ["down", "--timeout", "15"], env=env,
                                        check=False, timeout=60), "compose down")
    run.cleanup.push(lambda: harness.sh(["docker", "rm", "-f", container], check=False),
                     "remove compose proxy")
    up = harness.sh(argv + ["up", "-d"], env=env, check=False, timeout=120)
    assert up.returncode == 0, f"compose up failed:\n{up.stdout}\n{up.stderr}"

    def logs() -> str:
        cp = harness.sh(["docker", "logs", container], check=False)
        return harness.redact(cp.stdout + cp.stderr)

    deadline = time.monotonic() + STARTUP_TIMEOUT
    while f"listen={IMDS_IP}:80" not in logs() and time.monotonic() < deadline:
        time.sleep(0.2)
    inspect = harness.sh(["docker", "inspect", "--format",
                          "{{.Config.User}} {{.State.Running}}", container]).stdout.split()
    assert f"listen={IMDS_IP}:80" in logs(), f"the compose proxy did not start:\n{logs()}"
    assert inspect == [f"{COMPOSE_UID}:{COMPOSE_UID}", "true"], inspect

    c = fresh("compose-app", alias="app")
    cli = run.aws_cli(c)
    assert cli.ok and assumed_role(cli.arn) and assumed_role(cli.arn)[0] == ROLES["app"], (
        cli.describe() + "\ncompose proxy log:\n" + logs()[-4000:])
    key = state / "token.key"
    assert key.exists() and (key.stat().st_mode & 0o777) == 0o600, "token.key in the state dir"
    assert key.stat().st_uid == COMPOSE_UID, "token.key written by the user the proxy runs as"
    assert any(arn == local.self_arn and name == session
               for arn, name in _assumed_roles(run.moto)), "the proxy assumed its own role"
