"""pytest wiring for the real-container e2e suite.

One session-wide `Run` (network, image, moto, fake upstream IMDS, proxy) is
shared by every test; each test makes its own containers through `make_container`,
which removes them when the test ends. Everything is removed at session end,
on failure, on Ctrl-C (pytest finalizers) and on SIGTERM/SIGHUP (the Run's
own handlers), and from atexit as a last resort.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import harness  # noqa: E402

# alias -> IAM role name created in moto
ROLES = {
    "a": "e2e-role-a",
    "b": "e2e-role-b",
    "default": "e2e-role-default",
}
DEFAULT_ALIAS = "default"

INSTANCE_ID = "i-0e2e0000000000001"
CANARY = "CANARY-HOST-SECRET-must-never-reach-a-container"
CANARY_DOC = ('{"Code":"Success","LastUpdated":"2026-01-01T00:00:00Z","Type":"AWS-HMAC",'
              '"AccessKeyId":"ASIACANARY","SecretAccessKey":"%s","Token":"%s",'
              '"Expiration":"2099-01-01T00:00:00Z"}' % (CANARY, CANARY))
# What the fake upstream (the host's "real" IMDS) serves.
UPSTREAM_ROUTES = {
    "/latest/meta-data/instance-id": INSTANCE_ID,
    "/latest/meta-data/placement/availability-zone": "us-east-1a",
    "/latest/meta-data/iam/security-credentials/": "HostRole",
    "/latest/meta-data/iam/security-credentials": "HostRole",
    "/latest/meta-data/iam/security-credentials/HostRole": CANARY_DOC,
    "/latest/meta-data/iam/security-credentials-extended/HostRole": CANARY_DOC,
    "/latest/meta-data/iam/info": '{"Code":"Success","InstanceProfileArn":"%s"}' % CANARY,
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance": CANARY_DOC,
    "/latest/meta-data/identity-credentials/ec2/info": CANARY,
    "/latest/dynamic/instance-identity/document": '{"canary":"%s"}' % CANARY,
}


@dataclass
class E2E:
    run: harness.Run
    role_of: dict = field(default_factory=dict)   # alias -> role name
    arn_of: dict = field(default_factory=dict)    # alias -> role ARN
    metrics_addr: tuple = ("127.0.0.1", 0)         # the proxy's metricsListen

    @property
    def proxy(self) -> harness.Proxy:
        return self.run.proxy

    def ctx(self, *items) -> str:
        return self.run.context(*items)


_failed = {"any": False}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    rep = outcome.get_result()
    if rep.failed:
        _failed["any"] = True


def pytest_collection_modifyitems(session, config, items):
    """Tests marked `last` (the whole-log checks) run after every other test."""
    items.sort(key=lambda it: 1 if it.get_closest_marker("last") else 0)


def pytest_configure(config):
    config.addinivalue_line("markers", "last: run after all other e2e tests (whole-log checks)")


def _preflight() -> None:
    missing = [p for p in (harness.proxy_bin(), harness.imds_client_bin()) if not p.exists()]
    if missing:
        pytest.exit(f"missing binaries {missing}: run `cargo build && cargo build --example "
                    f"imds_client` (scripts/e2e.sh does)", returncode=2)
    if os.geteuid() != 0:
        pytest.exit("the e2e suite needs root (nsenter, iptables in container netns)", returncode=2)


@pytest.fixture(scope="session")
def e2e(request) -> E2E:
    _preflight()
    run = harness.Run(kind="e2e")

    def finish():
        if _failed["any"] or os.environ.get("EC2MP_E2E_KEEP"):
            run.keep_tmp = True
        run.close()

    request.addfinalizer(finish)
    run.build_image()
    net = run.create_network()
    moto = run.start_moto()
    env = E2E(run)
    for alias, role in ROLES.items():
        env.arn_of[alias] = moto.create_role(role)
        env.role_of[alias] = role
    run.start_upstream(UPSTREAM_ROUTES)
    env.metrics_addr = ("127.0.0.1", harness.free_port("127.0.0.1"))
    run.start_proxy(dict(env.arn_of), DEFAULT_ALIAS,
                    metricsListen="%s:%d" % env.metrics_addr)
    harness.log(f"proxy log: {run.proxy.log_path}; network {net.name}")
    return env


@pytest.fixture
def make_container(e2e):
    """Factory: make_container(short, alias=None, policy=None, ip=None, ...) -> Container.
    Containers are removed when the test ends, pass or fail."""
    made = []

    def make(short: str, **kw) -> harness.Container:
        c = e2e.run.run_container(short, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        e2e.run.remove_container(c)
