"""setup-firewall.sh --address-port: the container credentials door by address.

A proxy with containerCredentials.addressListen on this run's bridge gateway;
the script's rules send the bridge's 169.254.170.2:80 to it. A container
with no rule of its own, and an SDK told only
AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, gets its label's role through the
host's PREROUTING rule alone. 169.254.170.2 is not on this machine: no
request to it leaves a container before the test has checked its DNAT.
"""

from __future__ import annotations

import json

import pytest

import harness
from conftest import DEFAULT_ALIAS, HostRules, bridge_iface, firewall, tagged_rules

pytestmark = pytest.mark.usefixtures("pkg")


@pytest.fixture(scope="module")
def by_address(pkg):
    run = pkg.run
    port = harness.free_port(run.network.gateway)
    proxy = run.start_proxy(dict(pkg.arn_of), DEFAULT_ALIAS, name="byaddress",
                            containerCredentials={
                                "addressListen": [f"{run.network.gateway}:{port}"]})
    rules = HostRules(run, f"{run.comment}-cc")
    cp = rules.apply("--container-iface", bridge_iface(run.network), "--proxy-ip", proxy.ip,
                     "--proxy-port", str(proxy.port), "--address-port", str(port),
                     "--block-direct", "proxy-ip", "--no-ipv6")
    harness.log(f"firewall applied:\n{cp.stdout}")
    yield {"proxy": proxy, "port": port, "rules": rules}
    rules.remove()


def require_dnat(tag: str, port: int) -> list[str]:
    rules = tagged_rules(tag)
    dnat = [r for r in rules if "-d 169.254.170.2/32" in r and "-j DNAT" in r
            and f":{port}" in r]
    assert dnat, f"no DNAT of 169.254.170.2 tagged {tag}, refusing to send traffic: {rules}"
    return rules


def test_dry_run_names_the_by_address_rules(pkg):
    cp = firewall("--comment", f"{pkg.run.comment}-ccdry", "--container-iface",
                  bridge_iface(pkg.run.network), "--address-port", "18002", "--no-ipv6")
    out = cp.stdout
    assert f"-d 169.254.170.2/32 -p tcp --dport 80" in out, out
    assert f"-j DNAT --to-destination {pkg.run.network.gateway}:18002" in out, out
    assert "--dport 18002" in out and "--ctorigdst 169.254.170.2/32" in out, out
    assert tagged_rules(f"{pkg.run.comment}-ccdry") == []
    bad = firewall("--address-port", "18000", check=False)
    assert bad.returncode == 2 and "not the proxy port" in bad.stderr, bad.stderr


def test_an_sdk_with_relative_uri_gets_its_labels_role_through_the_host_dnat(
        pkg, by_address, make_plain):
    run = pkg.run
    c = make_plain("cc-fw-a", alias="a")
    require_dnat(by_address["rules"].tag, by_address["port"])
    r = run.request(c, "GET", "/v2/credentials/x", host="169.254.170.2", port=80)
    assert r.status == 200 and r.json()["AccessKeyId"], run.context(r)
    assert r.json()["RoleArn"] == pkg.arn_of["a"], run.context(r)
    res = run.boto3(c, env={"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/x",
                            "AWS_EC2_METADATA_DISABLED": "true"})
    assert res.ok, res.describe()
    assert json.loads(res.stdout)["method"] == "container-role", res.stdout
    assert harness.assumed_role(res.arn)[0] == pkg.role_of["a"], res.arn
    assert by_address["proxy"].wait_log(f"container={c.name}"), by_address["proxy"].tail(20)


def test_the_by_address_port_is_closed_to_containers_except_through_the_dnat(
        pkg, by_address, make_plain):
    run = pkg.run
    c = make_plain("cc-fw-direct")
    require_dnat(by_address["rules"].tag, by_address["port"])
    r = run.request(c, "GET", "/v2/credentials/x", host=by_address["proxy"].ip,
                    port=by_address["port"], timeout=2)
    assert r.status is None and "timed out" in (r.error or "").lower(), run.context(r)
