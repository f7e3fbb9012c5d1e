"""Containers on an IPv6 Docker network, asking [fd00:ec2::254] as SDKs in
IPv6 endpoint mode do (AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE=IPv6).

The module makes a network with `docker network create --ipv6` on a free ULA
/64, and a proxy of its own that listens on the run's IPv4 gateway and on that
network's IPv6 gateway (a `listen` list). Inside each container's namespace,
ip6tables DNATs [fd00:ec2::254]:80 to the proxy's IPv6 address and REJECTs
everything else to fd00:ec2::254 (and to 169.254.169.254): the test checks
those rules are in place before any client starts, as the address is not on
this machine. Where this kernel or Docker cannot make an IPv6 network, each
test is an xfail with the reason: not proven here.
"""

from __future__ import annotations

import json
import os

import pytest

import harness
from conftest import CANARY, DEFAULT_ALIAS, E2E
from harness import CREDS_PATH, assumed_role

IMDS6 = "fd00:ec2::254"
IPV6_MODE = {"AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE": "IPv6"}


class Six:
    def __init__(self, e2e: E2E, net: harness.Network, proxy: harness.Proxy):
        self.e2e, self.net, self.proxy = e2e, net, proxy
        self.run = e2e.run

    def ctx(self, *items) -> str:
        return self.run.context(*items) + "\nproxy6 log tail:\n" + harness.redact(self.proxy.tail(30))


@pytest.fixture(scope="module")
def six(e2e) -> Six:
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.xfail("IPv6 not proven: this kernel has no IPv6")
    run = e2e.run
    try:
        net = run.create_network("v6", ipv6=True)
    except RuntimeError as error:
        pytest.xfail(f"IPv6 not proven: Docker cannot make an --ipv6 network here: {error}")
    config = run.proxy_config("proxy6", dict(e2e.arn_of), DEFAULT_ALIAS)
    proxy = harness.Proxy(run, run.network.gateway, config, run.proxy_env(), name="proxy6",
                          also_ips=[net.gateway6])
    harness.log(f"proxy6 listening on {proxy.listen}")
    return Six(e2e, net, proxy)


def ipv6_address(c: harness.Container) -> str:
    return harness.sh(["docker", "inspect", "--format",
                       "{{range .NetworkSettings.Networks}}{{.GlobalIPv6Address}}{{end}}",
                       c.id]).stdout.strip()


def netns(c: harness.Container, *argv: str) -> str:
    return harness.sh(["nsenter", "-t", str(c.pid), "-n", "--", *argv]).stdout


def contained(six: Six, make_container, short: str, alias: str | None = None) -> harness.Container:
    """A container on the IPv6 network whose [fd00:ec2::254]:80 is the proxy's
    IPv6 address and whose every other packet to a metadata address is
    rejected; the rules are checked before it is returned."""
    c = make_container(short, alias=alias, network=six.net, redirect=False)
    tag = six.run.comment
    netns(c, "ip6tables", "-w", "5", "-t", "nat", "-A", "OUTPUT", "-d", f"{IMDS6}/128", "-p", "tcp",
          "--dport", "80", "-m", "comment", "--comment", tag,
          "-j", "DNAT", "--to-destination", f"[{six.net.gateway6}]:{six.proxy.port}")
    netns(c, "ip6tables", "-w", "5", "-A", "OUTPUT", "-d", f"{IMDS6}/128", "-m", "comment",
          "--comment", tag, "-j", "REJECT")
    netns(c, "iptables", "-w", "5", "-A", "OUTPUT", "-d", f"{harness.IMDS_IP}/32", "-m", "comment",
          "--comment", tag, "-j", "REJECT")
    nat = netns(c, "ip6tables", "-w", "5", "-t", "nat", "-S", "OUTPUT")
    filt = netns(c, "ip6tables", "-w", "5", "-S", "OUTPUT") + netns(c, "iptables", "-w", "5", "-S", "OUTPUT")
    assert f"--to-destination [{six.net.gateway6}]:{six.proxy.port}" in nat, nat
    assert filt.count("-j REJECT") == 2, f"refusing to send traffic: {filt}"
    assert ipv6_address(c), "the container has no GlobalIPv6Address"
    return c


def assert_role(six: Six, res, alias: str, c: harness.Container) -> None:
    assert res.ok, f"{res.name} got no identity" + six.ctx(res)
    parsed = assumed_role(res.arn)
    assert parsed and parsed[0] == six.e2e.role_of[alias], \
        f"{res.name} in {c.name}: {res.arn}, want role {six.e2e.role_of[alias]}" + six.ctx(res)


def test_sdks_in_ipv6_endpoint_mode_get_their_containers_roles(six, make_container):
    labelled = contained(six, make_container, "v6-a", alias="a")
    plain = contained(six, make_container, "v6-plain")
    for c, alias in ((labelled, "a"), (plain, DEFAULT_ALIAS)):
        assert_role(six, six.run.boto3(c, env=IPV6_MODE), alias, c)
        assert_role(six, six.run.rust_client(c, env=IPV6_MODE), alias, c)
        # The proxy saw the container's own IPv6 address.
        assert six.proxy.wait_log(f"remote={ipv6_address(c)}"), six.ctx()


def test_go_v2_in_ipv6_endpoint_mode_gets_its_role(six, make_container):
    from test_matrix import GoV2
    client = GoV2("aws-sdk-go-v2", "Debian", True, "MOTO_STS_URL")
    client.prepare()
    if client.missing:
        pytest.xfail(f"Go v2 over IPv6 not proven: {client.missing}")
    c = contained(six, make_container, "v6-go", alias="b")
    env = dict(six.run.client_env(), MOTO_STS_URL=six.run.moto.url, **IPV6_MODE)
    cp = six.run.in_netns(c, client.argv, env=env)
    res = harness.ClientResult("aws-sdk-go-v2", client.argv, cp.returncode, cp.stdout, cp.stderr)
    if cp.returncode == 0:
        res.arn = json.loads(cp.stdout.strip().splitlines()[-1]).get("arn")
    assert_role(six, res, "b", c)


def test_a_token_issued_to_one_ipv6_address_is_refused_from_another(six, make_container):
    one = contained(six, make_container, "v6-one", alias="a")
    other = contained(six, make_container, "v6-other", alias="a")
    [put] = six.run.http(one, [{"method": "PUT", "host": IMDS6, "path": "/latest/api/token",
                                "headers": {"X-aws-ec2-metadata-token-ttl-seconds": "60"}}])
    assert put.status == 200 and put.body, six.ctx(put)
    get = {"method": "GET", "host": IMDS6, "path": CREDS_PATH,
           "headers": {"X-aws-ec2-metadata-token": put.body}}
    [mine] = six.run.http(one, [get])
    [theirs] = six.run.http(other, [get])
    assert mine.status == 200 and mine.body == six.e2e.role_of["a"], six.ctx(mine)
    assert theirs.status == 401, six.ctx(theirs)


def test_identity_routes_are_refused_over_ipv6(six, make_container):
    c = contained(six, make_container, "v6-id", alias="a")
    paths = ["/latest/meta-data/iam/security-credentials/HostRole",
             "/latest/meta-data/iam/security-credentials-extended/HostRole",
             "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
             "/latest/meta-data/iam/info", "/latest//meta-data/./iam/security-credentials/HostRole",
             "/2021-03-23/meta-data/iam/security-credentials/HostRole/"]
    results = six.run.http(c, [{"method": "GET", "host": IMDS6, "path": p} for p in paths])
    for path, r in zip(paths, results):
        assert CANARY not in r.body, f"{path}" + six.ctx(r)
        # iam/info may describe the container's own role; HostRole is never its.
        assert r.status == 404 or path.endswith("iam/info"), f"{path}" + six.ctx(r)


def test_an_ipv6_socket_knows_ipv4_callers_by_their_ipv4_address(e2e, make_container):
    """A dual-stack listener (`"listen": "[::]:18000"`) accepts IPv4 callers as
    ::ffff:a.b.c.d: they are still their IPv4 containers, and the proof of the
    caller (on by default) still finds their connections."""
    run = e2e.run
    config = run.proxy_config("proxy-mapped", dict(e2e.arn_of), DEFAULT_ALIAS)
    proxy = harness.Proxy(run, run.network.gateway, config, run.proxy_env(),
                          name="proxy-mapped", mapped=True)
    c = make_container("mapped-a", alias="a", redirect=proxy)
    res = run.boto3(c)
    assert res.ok and assumed_role(res.arn)[0] == e2e.role_of["a"], \
        run.context(res) + harness.redact(proxy.tail(30))
    assert proxy.wait_log(f"remote={c.ip} "), harness.redact(proxy.tail(30))
