"""The Docker image: built by `make docker` (two stages, local base images), run
as the docs say (host network, the Docker socket, a mounted config, moto's STS
through AWS_ENDPOINT_URL_STS), and a container on a test bridge gets its role's
credentials through it.

Env:
  EC2MP_PKG_IMAGE    test this existing image (repo:tag) instead of building one
  EC2MP_PKG_GIT_REF  the ref to build (default HEAD; "." for the work tree)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import time

import pytest

import harness
from conftest import DEFAULT_ALIAS, REPO

RUNTIME_USER = "65532:65532"


@pytest.fixture(scope="module")
def image(pkg) -> dict:
    given = os.environ.get("EC2MP_PKG_IMAGE")
    if given:
        harness.sh(["docker", "image", "inspect", given])
        return {"name": given, "built": False, "seconds": 0.0}
    run = pkg.run
    repo = f"{run.prefix}/ec2metaproxy"
    tag = "test"
    name = f"{repo}:{tag}"
    builder = f"{repo}-builder:{tag}"
    run.cleanup.push(lambda: harness.sh(["docker", "rmi", "-f", name, builder], check=False),
                     "remove the test images")
    ref = os.environ.get("EC2MP_PKG_GIT_REF", "HEAD")
    if ref != ".":
        # Pin the commit now: others may commit while the image builds.
        ref = harness.sh(["git", "-C", str(REPO), "rev-parse", "--verify",
                          f"{ref}^{{commit}}"]).stdout.strip()
    log_path = run.tmp / "make-docker.log"
    argv = ["make", "-C", str(REPO), "--no-print-directory", "docker",
            f"GIT_REF={ref}", f"TAG={tag}", f"IMAGE={repo}"]
    harness.log(f"building {name}: LOCAL_BASES=1 {' '.join(argv)} (log: {log_path})")
    t0 = time.monotonic()
    with open(log_path, "wb") as log:
        try:
            cp = subprocess.run(argv, stdout=log, stderr=subprocess.STDOUT,
                                stdin=subprocess.DEVNULL, timeout=3600,
                                env=dict(os.environ, LOCAL_BASES="1"))
            rc = cp.returncode
        except subprocess.TimeoutExpired:
            rc = "timeout (3600 s)"
    seconds = time.monotonic() - t0
    if rc != 0:
        tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-60:])
        pytest.fail(f"make docker failed ({rc}) after {seconds:.0f} s:\n{tail}")
    harness.log(f"built {name} in {seconds:.0f} s")
    return {"name": name, "built": True, "seconds": seconds, "ref": ref}


class ImageProxy:
    """The image running as the proxy, on the host network, listening on the
    run's bridge gateway (as a real host's proxy would listen on docker0's)."""

    def __init__(self, run: harness.Run, image: str, alias_to_arn: dict, default_alias: str):
        self.run = run
        self.ip = run.network.gateway
        self.port = harness.free_port(self.ip)
        self.name = f"{run.prefix}-image-proxy"
        self.config_path = run.tmp / "image-proxy.json"
        self.config_path.write_text(json.dumps({
            "aliasToARN": alias_to_arn, "defaultAlias": default_alias,
            "listen": f"{self.ip}:{self.port}", "metadataURL": None, "verbose": True,
        }, indent=2))
        self.config_path.chmod(0o644)
        run.cleanup.push(lambda: harness.sh(["docker", "rm", "-f", self.name], check=False),
                         "remove the image proxy")
        harness.sh([
            "docker", "run", "-d", "--name", self.name,
            "--label", f"{harness.RUN_LABEL}={run.runid}",
            "--network", "host", "--pid", "host",
            # As docs/host-setup.md says: what proving callers needs.
            "--user", "0:0", "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
            "-v", "/var/run/docker.sock:/var/run/docker.sock",
            "-v", f"{self.config_path}:/etc/ec2metaproxy/config.json:ro",
            "-e", f"AWS_ENDPOINT_URL_STS={run.moto.url}",
            "-e", "AWS_ACCESS_KEY_ID=testing", "-e", "AWS_SECRET_ACCESS_KEY=testing",
            "-e", "AWS_REGION=us-east-1", "-e", "AWS_EC2_METADATA_DISABLED=true",
            image])
        if not harness.wait_tcp(self.ip, self.port, 30, self.alive):
            raise RuntimeError(f"the image did not start listening on {self.ip}:{self.port}:\n"
                               + self.tail())

    def alive(self) -> bool:
        cp = harness.sh(["docker", "inspect", "-f", "{{.State.Running}}", self.name], check=False)
        return cp.stdout.strip() == "true"

    def pid(self) -> int:
        return int(harness.sh(["docker", "inspect", "-f", "{{.State.Pid}}", self.name]).stdout)

    def tail(self, n: int = 40) -> str:
        cp = harness.sh(["docker", "logs", "--tail", str(n), self.name], check=False)
        return harness.redact(cp.stdout + cp.stderr)

    def context(self, *items) -> str:
        parts = [it.describe() if hasattr(it, "describe") else str(it) for it in items]
        parts.append(f"image proxy alive: {self.alive()}; log tail:\n{self.tail()}")
        return "\n" + "\n".join(parts)

    def redirect(self, c: harness.Container) -> None:
        """169.254.169.254:80 -> this proxy inside `c`'s netns only (the harness's
        comment, so its container removal deletes the rule)."""
        harness.sh(["nsenter", "-t", str(c.pid), "-n", "--", "iptables", "-w", "5", "-t", "nat",
                    "-A", "OUTPUT", "-d", f"{harness.IMDS_IP}/32", "-p", "tcp", "--dport", "80",
                    "-m", "comment", "--comment", self.run.comment,
                    "-j", "DNAT", "--to-destination", f"{self.ip}:{self.port}"])
        c.redirected = True


@pytest.fixture(scope="module")
def proxy(pkg, image) -> ImageProxy:
    return ImageProxy(pkg.run, image["name"], dict(pkg.arn_of), DEFAULT_ALIAS)


@pytest.fixture
def container(pkg, proxy):
    made = []

    def make(short: str, **kw) -> harness.Container:
        c = pkg.run.run_container(short, redirect=False, **kw)
        made.append(c)
        proxy.redirect(c)
        return c

    yield make
    for c in made:
        pkg.run.remove_container(c)


def test_image_is_the_two_stage_runtime_image(pkg, image):
    name = image["name"]
    info = json.loads(harness.sh(["docker", "image", "inspect", name]).stdout)[0]
    cfg = info["Config"]
    assert cfg["Entrypoint"] == ["ec2metaproxy", "-c"], cfg
    assert cfg["Cmd"] == ["/etc/ec2metaproxy/config.json"], cfg
    assert cfg["User"] == RUNTIME_USER, cfg
    labels = cfg.get("Labels") or {}
    if image["built"] and image.get("ref") != ".":
        assert labels.get("org.opencontainers.image.revision") == image["ref"], labels
    harness.log(f"{name}: {info['Size'] / 1e6:.1f} MB, built in {image['seconds']:.0f} s")
    # No rust toolchain in it: the runtime stage holds the binary, not the builder.
    assert info["Size"] < 250e6, info["Size"]

    version = harness.sh(["docker", "run", "--rm", "--network", "none",
                          "--label", f"{harness.RUN_LABEL}={pkg.run.runid}",
                          "--entrypoint", "ec2metaproxy", name, "--version"])
    assert re.match(r"^ec2metaproxy \d+\.\d+\.\d+", version.stdout), version.stdout
    check = harness.sh(["docker", "run", "--rm", "--network", "none",
                        "--label", f"{harness.RUN_LABEL}={pkg.run.runid}",
                        name, "/usr/share/doc/ec2metaproxy/config.example.json", "--check"])
    assert ": OK:" in check.stdout, check.stdout


def test_image_carries_ca_certificates(pkg, image):
    # docker cp works whatever the base (no shell needed in the image).
    cid = harness.sh(["docker", "create", "--label", f"{harness.RUN_LABEL}={pkg.run.runid}",
                      image["name"]]).stdout.strip()
    try:
        dest = pkg.run.tmp / "ca.crt"
        harness.sh(["docker", "cp", f"{cid}:/etc/ssl/certs/ca-certificates.crt", str(dest)])
        assert dest.read_text().count("BEGIN CERTIFICATE") > 100
    finally:
        harness.sh(["docker", "rm", "-f", cid], check=False)


def test_proxy_has_only_the_capabilities_it_asks_for_and_a_private_token_key(proxy):
    pid = proxy.pid()
    status = open(f"/proc/{pid}/status").read()
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    # Docker's defaults and the two that prove callers; never NET_ADMIN or
    # the like.
    eff = int(fields["CapEff"], 16)
    assert eff & (1 << 21) and eff & (1 << 19), fields["CapEff"]
    assert not eff & (1 << 12), fields["CapEff"]  # CAP_NET_ADMIN
    key_dir = f"/proc/{pid}/root/var/lib/ec2metaproxy"
    st = os.stat(key_dir)
    assert st.st_uid == 65532 and (st.st_mode & 0o777) == 0o700, oct(st.st_mode)
    keys = os.listdir(key_dir)
    assert keys, "no token key written in stateDir"
    for k in keys:
        ks = os.stat(f"{key_dir}/{k}")
        assert (ks.st_mode & 0o077) == 0, (k, oct(ks.st_mode))


def test_labelled_container_gets_its_role_through_the_image(pkg, proxy, container):
    run = pkg.run
    c = container("img-b", alias="b")
    listing = run.request(c, "GET", harness.CREDS_PATH)
    assert listing.status == 200 and listing.body == pkg.role_of["b"], proxy.context(listing)
    token = run.request(c, "PUT", "/latest/api/token", {harness.TTL_HEADER: "300"})
    assert token.status == 200 and token.body, proxy.context(token)
    doc = run.request(c, "GET", harness.CREDS_PATH + pkg.role_of["b"],
                      {harness.TOKEN_HEADER: token.body})
    assert doc.status == 200, proxy.context(doc)
    body = doc.json()
    assert body["Code"] == "Success" and body["AccessKeyId"], proxy.context(doc)
    # STS (moto) was reached from inside the image with its own CA bundle and env.
    cli = run.aws_cli(c)
    assert cli.ok and cli.role() == pkg.role_of["b"], proxy.context(cli)
    # With --pid host and its two capabilities it watches the containers'
    # processes (pidfd, /proc/<pid>/cgroup) and proves their connections.
    log = proxy.tail(500)
    assert "watching containers' init processes" in log, proxy.context()
    assert "cannot watch container processes" not in log, proxy.context()
    assert "only once it is found in that container's network namespace" in log, proxy.context()
    assert "cannot prove" not in log and "cannot be proven" not in log, proxy.context()


def test_unlabelled_and_unknown_alias_containers(pkg, proxy, container):
    run = pkg.run
    plain = container("img-plain")
    r = run.request(plain, "GET", harness.CREDS_PATH)
    assert r.status == 200 and r.body == pkg.role_of[DEFAULT_ALIAS], proxy.context(r)
    stranger = container("img-unknown", alias="no-such-alias")
    r = run.request(stranger, "GET", harness.CREDS_PATH)
    assert r.status == 404, proxy.context(r)
