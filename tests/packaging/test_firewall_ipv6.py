"""scripts/setup-firewall.sh, IPv6 (its part 6): the ip6tables DNAT of
[fd00:ec2::254]:80 to the proxy's IPv6 address, the REJECT of everything else
a container bridge sends there, and the direct-port DROP; dry run, --force
(applied twice, never doubled) and --remove.

The rule-writing tests name an interface that does not exist (unique to the
run) and documentation-range addresses, so their rules match no packet on this
machine. The last test is the real path: a `--ipv6` network, the proxy on its
gateways, the script's rules for its bridge (the IPv6 proxy address left to its
default), and a container's plain request to [fd00:ec2::254] answered by the
proxy, sent only once the DNAT and the REJECT are in place. Every rule is
removed when the module ends, pass or fail.
"""

from __future__ import annotations

import os
import uuid

import pytest

import harness
from conftest import firewall

RUN = uuid.uuid4().hex[:6]
TAG = f"ec2mp-pkg6-{RUN}"
IFACE = f"ec2mp6{RUN}"          # 12 characters: a valid name, never a real link
PROXY_IP = "192.0.2.1"          # TEST-NET-1
PROXY_IP6 = "2001:db8:ec2::1"   # documentation prefix
ARGS = ["--comment", TAG, "--container-iface", IFACE, "--proxy-ip", PROXY_IP,
        "--proxy-ip6", PROXY_IP6, "--proxy-port", "18000", "--block-direct", "proxy-ip"]

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="needs root (ip6tables)")


def rules6(tag: str = TAG) -> list[str]:
    """Every ip6tables rule whose comment is `tag`, as "table: rule"."""
    found = []
    for table in ("nat", "filter", "mangle"):
        out = harness.sh(["ip6tables", "-w", "5", "-t", table, "-S"], check=False).stdout
        for line in out.splitlines():
            words = line.split()
            if "--comment" in words and words[words.index("--comment") + 1].strip('"') == tag:
                found.append(f"{table}: {line}")
    return found


@pytest.fixture(scope="module")
def applied():
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.xfail("this kernel has no IPv6: the ip6tables rules are not proven here")
    try:
        cp = firewall("--force", *ARGS)
        yield cp.stdout
    finally:
        firewall("--force", "--remove", "--comment", TAG, check=False)


def test_dry_run_prints_the_ip6tables_commands_and_changes_nothing():
    tag = f"{TAG}-dry"
    out = firewall(*[tag if a == TAG else a for a in ARGS]).stdout
    assert "dry run" in out
    six = [line for line in out.splitlines() if line.startswith("ip6tables")]
    assert any("-t nat -I PREROUTING 1" in line and "-d fd00:ec2::254/128 -p tcp --dport 80" in line
               and f"-j DNAT --to-destination \\[{PROXY_IP6}\\]:18000" in line for line in six), out
    assert any("-d fd00:ec2::254/128" in line and "REJECT --reject-with icmp6-port-unreachable" in line
               for line in six), out
    assert any(f"-d {PROXY_IP6}/128 -p tcp --dport 18000" in line and "-j DROP" in line
               for line in six), out
    assert all(f"--comment {tag}" in line for line in six), out
    assert rules6(tag) == []


def test_without_an_ipv6_proxy_address_the_metadata_address_is_still_rejected():
    out = firewall("--comment", f"{TAG}-dry", "--container-iface", "br-+",
                   "--proxy-ip", PROXY_IP).stdout
    six = [line for line in out.splitlines() if line.startswith("ip6tables")]
    assert not any("DNAT" in line for line in six), out
    assert any("-i br-+ -d fd00:ec2::254/128" in line and "REJECT" in line for line in six), out
    assert "rejected, not redirected" in out


def test_no_ipv6_writes_no_ip6tables_rule():
    out = firewall(*ARGS, "--no-ipv6").stdout
    assert "ip6tables" not in out, out


def test_bad_ipv6_addresses_are_refused():
    for args, message in [
        (["--proxy-ip6", "::1"], "cannot be ::1"),
        (["--proxy-ip6", "172.17.0.1"], "must be an IPv6 address"),
        (["--metadata-ip6", "fd00:ec2::254x"], "must be an IPv6 address"),
    ]:
        cp = firewall("--container-iface", IFACE, "--proxy-ip", PROXY_IP, *args, check=False)
        assert cp.returncode == 2 and message in cp.stderr, (args, cp.stdout, cp.stderr)


def test_force_writes_the_dnat_reject_and_drop_once(applied):
    rules = rules6()
    dnat = [r for r in rules if r.startswith("nat:") and f"--to-destination [{PROXY_IP6}]:18000" in r]
    reject = [r for r in rules if r.startswith("filter:") and "-d fd00:ec2::254/128" in r
              and "-j REJECT" in r]
    drop = [r for r in rules if r.startswith("filter: -A INPUT") and "-j DROP" in r]
    assert (len(dnat), len(reject), len(drop), len(rules)) == (1, 1, 1, 3), rules
    firewall("--force", *ARGS)
    assert sorted(rules6()) == sorted(rules), "applied again: replaced, not doubled"


def test_remove_deletes_exactly_the_tagged_ipv6_rules(applied):
    assert len(rules6()) == 3
    other = f"{TAG}-other"
    try:
        firewall("--force", *[other if a == TAG else a for a in ARGS])
        firewall("--force", "--remove", "--comment", TAG)
        assert rules6() == []
        assert len(rules6(other)) == 3, "another tag's rules stay"
    finally:
        firewall("--force", "--remove", "--comment", other, check=False)
    assert rules6(other) == []


@pytest.fixture(scope="module")
def bridge6(pkg):
    """A --ipv6 network, a proxy on its IPv4 and IPv6 gateways, and the script's
    rules for its bridge, IPv6 proxy address left to its default."""
    if not os.path.exists("/proc/net/if_inet6"):
        pytest.xfail("IPv6 not proven: this kernel has no IPv6")
    run = pkg.run
    try:
        net = run.create_network("v6", ipv6=True)
    except RuntimeError as error:
        pytest.xfail(f"IPv6 not proven: Docker cannot make an --ipv6 network here: {error}")
    from conftest import DEFAULT_ALIAS, HostRules, bridge_iface
    config = run.proxy_config("proxy6", dict(pkg.arn_of), DEFAULT_ALIAS)
    proxy = harness.Proxy(run, net.gateway, config, run.proxy_env(), name="proxy6",
                          also_ips=[net.gateway6])
    iface = bridge_iface(net)
    rules = HostRules(run, f"{run.comment}-fw6")
    cp = rules.apply("--container-iface", iface, "--proxy-ip", net.gateway,
                     "--proxy-port", str(proxy.port), "--block-direct", "proxy-ip")
    harness.log(f"firewall applied on {iface}:\n{cp.stdout}")
    yield {"net": net, "proxy": proxy, "rules": rules, "out": cp.stdout}
    rules.remove()


def test_a_container_reaches_the_proxy_at_fd00_ec2_254_through_the_host_dnat(pkg, bridge6, make_plain):
    net, proxy, tag = bridge6["net"], bridge6["proxy"], bridge6["rules"].tag
    assert f"-j DNAT --to-destination \\[{net.gateway6}\\]:{proxy.port}" in bridge6["out"], \
        "--proxy-ip6 defaults to the bridge's IPv6 gateway"
    c = make_plain("fw6-a", alias="a", network=net)
    rules = rules6(tag)
    # Both before any packet leaves for an address that is not on this machine.
    assert any(r.startswith("nat:") and "DNAT" in r for r in rules) and \
        any(r.startswith("filter:") and "REJECT" in r for r in rules), rules
    [put] = pkg.run.http(c, [{"method": "PUT", "host": "fd00:ec2::254", "path": "/latest/api/token",
                              "headers": {"X-aws-ec2-metadata-token-ttl-seconds": "60"}}])
    assert put.status == 200, pkg.run.context(put) + proxy.tail(20)
    [listing] = pkg.run.http(c, [{"method": "GET", "host": "fd00:ec2::254", "path": harness.CREDS_PATH,
                                  "headers": {"X-aws-ec2-metadata-token": put.body}}])
    assert listing.status == 200 and listing.body == pkg.role_of["a"], \
        pkg.run.context(listing) + harness.redact(proxy.tail(20))
    # Anything else to that address is refused at once, not sent on.
    [other] = pkg.run.http(c, [{"method": "GET", "host": "fd00:ec2::254", "port": 8080,
                                "path": "/", "timeout": 3}])
    assert other.status is None and "refused" in (other.error or "").lower(), other.describe()
