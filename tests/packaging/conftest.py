"""pytest wiring for the packaging tests (the image, the host firewall script).

They reuse the real-container e2e harness (tests/e2e/harness.py) by import:
one session-wide `Run` (kind "pkg": every name `ec2mp-pkg-<runid>-...`, every
object labelled `ec2metaproxy.e2e-run=<runid>`) holds the scratch pause image,
a bridge network on a free subnet, and moto with the test roles. Each test
module adds its own proxy (the image, or target/debug/ec2metaproxy) and its own
host iptables rules, tagged with a comment unique to the run, and removes them
when it ends, pass or fail. The Run removes everything else.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO / "tests" / "e2e"))

import harness  # noqa: E402

# alias -> IAM role name created in moto
ROLES = {"a": "pkg-role-a", "b": "pkg-role-b", "default": "pkg-role-default"}
DEFAULT_ALIAS = "default"
FIREWALL = REPO / "scripts" / "setup-firewall.sh"


@dataclass
class Pkg:
    run: harness.Run
    role_of: dict = field(default_factory=dict)   # alias -> role name
    arn_of: dict = field(default_factory=dict)    # alias -> role ARN


_failed = {"any": False}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    if outcome.get_result().failed:
        _failed["any"] = True


@pytest.fixture(scope="session")
def pkg(request) -> Pkg:
    if os.geteuid() != 0:
        pytest.exit("the packaging tests need root (docker, nsenter, iptables)", returncode=2)
    run = harness.Run(kind="pkg")

    def finish():
        if _failed["any"] or os.environ.get("EC2MP_E2E_KEEP"):
            run.keep_tmp = True
        run.close()

    request.addfinalizer(finish)
    run.build_image()
    run.create_network()
    moto = run.start_moto()
    env = Pkg(run)
    for alias, role in ROLES.items():
        env.arn_of[alias] = moto.create_role(role)
        env.role_of[alias] = role
    return env


def bridge_iface(net: harness.Network) -> str:
    """The host interface of a user-defined bridge network (br-<id12> unless named)."""
    cp = harness.sh(["docker", "network", "inspect", "-f",
                     '{{index .Options "com.docker.network.bridge.name"}}', net.id])
    name = cp.stdout.strip()
    return name if name and name != "<no value>" else f"br-{net.id[:12]}"


def firewall(*args: str, check: bool = True) -> subprocess.CompletedProcess:
    """scripts/setup-firewall.sh with `args`; its output is kept for messages."""
    return harness.sh(["bash", str(FIREWALL), *args], check=check, timeout=60)


def tagged_rules(tag: str) -> list[str]:
    """Every host iptables rule (any table this script uses) whose comment is `tag`."""
    rules = []
    for table in ("nat", "filter", "mangle"):
        out = harness.sh(["iptables", "-w", "5", "-t", table, "-S"], check=False).stdout
        for line in out.splitlines():
            words = line.split()
            if "--comment" in words and words[words.index("--comment") + 1].strip('"') == tag:
                rules.append(f"{table}: {line}")
    return rules


class HostRules:
    """The host rules one test module applies with the firewall script, under a
    comment unique to this run; `remove()` deletes exactly those (idempotent,
    registered with the Run's cleanup so a failure or signal removes them too)."""

    def __init__(self, run: harness.Run, tag: str):
        self.run = run
        self.tag = tag
        self.applied = False
        run.cleanup.push(self.remove, f"remove host iptables rules tagged {tag}")

    def apply(self, *args: str) -> subprocess.CompletedProcess:
        self.applied = True
        return firewall("--force", "--comment", self.tag, *args)

    def remove(self) -> None:
        if not self.applied:
            return
        firewall("--force", "--remove", "--comment", self.tag, check=False)
        left = tagged_rules(self.tag)
        if left:  # a rule the script could not parse: delete it by hand, then say so
            raise RuntimeError(f"rules tagged {self.tag} left after --remove: {left}")
        self.applied = False


@pytest.fixture
def make_plain(pkg):
    """Factory: a container on the run's network with NO metadata redirect of its own
    (the host's rules must do it). Removed when the test ends, pass or fail."""
    made = []

    def make(short: str, **kw) -> harness.Container:
        c = pkg.run.run_container(short, redirect=False, **kw)
        made.append(c)
        return c

    yield make
    for c in made:
        pkg.run.remove_container(c)
