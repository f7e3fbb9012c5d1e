"""scripts/setup-firewall.sh on the real host: the DNAT path a container takes.

The proxy (target/debug/ec2metaproxy) listens on this run's bridge gateway; the
script's rules, tagged with a comment unique to the run, send the bridge's
169.254.169.254:80 traffic to it. Containers here get no redirect of their own
(unlike the e2e suite): a plain request to http://169.254.169.254/ from inside
the container's network namespace must be answered by the proxy through the
host's PREROUTING rule alone.

Safety: before any request to the metadata address leaves a container, the
test checks that its DNAT and REJECT rules are in place, so nothing reaches
beyond this run's bridge even if the script failed half way.
"""

from __future__ import annotations

import pytest

import harness
from conftest import DEFAULT_ALIAS, HostRules, bridge_iface, firewall, tagged_rules

pytestmark = pytest.mark.usefixtures("pkg")


@pytest.fixture(scope="module")
def fw(pkg):
    run = pkg.run
    if run.proxy is None:
        run.start_proxy(dict(pkg.arn_of), DEFAULT_ALIAS)
    iface = bridge_iface(run.network)
    rules = HostRules(run, f"{run.comment}-fw")
    args = ["--container-iface", iface, "--proxy-ip", run.proxy.ip,
            "--proxy-port", str(run.proxy.port), "--block-direct", "proxy-ip"]
    cp = rules.apply(*args)
    harness.log(f"firewall applied on {iface}:\n{cp.stdout}")
    yield {"rules": rules, "iface": iface, "args": args, "apply_output": cp.stdout}
    rules.remove()


def require_rules(tag: str) -> list[str]:
    """The DNAT and the REJECT must both be there before a container asks 169.254.169.254."""
    rules = tagged_rules(tag)
    dnat = [r for r in rules if r.startswith("nat:") and "-j DNAT" in r]
    reject = [r for r in rules if r.startswith("filter:") and "-d 169.254.169.254/32" in r
              and "-j REJECT" in r]
    assert dnat and reject, f"rules tagged {tag} incomplete, refusing to send traffic: {rules}"
    return rules


def test_dry_run_prints_the_commands_and_changes_nothing(pkg):
    tag = f"{pkg.run.comment}-dry"
    cp = firewall("--comment", tag, "--container-iface", bridge_iface(pkg.run.network),
                  "--proxy-port", "18000")
    out = cp.stdout
    assert "dry run" in out
    assert f"-j DNAT --to-destination {pkg.run.network.gateway}:18000" in out, out
    assert "--dport 80" in out and "169.254.169.254/32" in out, out
    assert all(f"--comment {tag}" in line for line in out.splitlines()
               if line.startswith("iptables")), out
    assert tagged_rules(tag) == []


def test_rules_are_tagged_and_not_doubled_when_applied_again(pkg, fw):
    tag = fw["rules"].tag
    before = require_rules(tag)
    # DNAT in nat PREROUTING, REJECT in DOCKER-USER (or FORWARD), direct DROP in INPUT.
    assert len(before) == 3, before
    fw["rules"].apply(*fw["args"])
    after = tagged_rules(tag)
    assert sorted(after) == sorted(before), f"before: {before}\nafter: {after}"


def test_container_reaches_the_proxy_through_the_host_dnat(pkg, fw, make_plain):
    run = pkg.run
    c = make_plain("fw-a", alias="a")
    require_rules(fw["rules"].tag)
    listing = run.request(c, "GET", harness.CREDS_PATH)
    assert listing.status == 200 and listing.body == pkg.role_of["a"], run.context(listing)
    # The proxy saw the container's own address: the DNAT kept the source.
    assert run.proxy.wait_log(c.ip), run.context(listing)

    token = run.request(c, "PUT", "/latest/api/token", {harness.TTL_HEADER: "60"})
    assert token.status == 200 and token.body, run.context(token)
    doc = run.request(c, "GET", harness.CREDS_PATH + pkg.role_of["a"],
                      {harness.TOKEN_HEADER: token.body})
    assert doc.status == 200, run.context(doc)
    body = doc.json()
    assert body["Code"] == "Success" and body["AccessKeyId"], run.context(doc)

    # An SDK's default chain, with no endpoint override: the AWS CLI.
    cli = run.aws_cli(c)
    assert cli.ok and cli.role() == pkg.role_of["a"], run.context(cli)


def test_unlabelled_container_gets_the_default_role(pkg, fw, make_plain):
    run = pkg.run
    c = make_plain("fw-plain")
    require_rules(fw["rules"].tag)
    listing = run.request(c, "GET", harness.CREDS_PATH)
    assert listing.status == 200 and listing.body == pkg.role_of[DEFAULT_ALIAS], run.context(listing)


def test_other_traffic_to_the_metadata_address_is_rejected(pkg, fw, make_plain):
    run = pkg.run
    c = make_plain("fw-other")
    require_rules(fw["rules"].tag)
    r = run.request(c, "GET", "/latest/meta-data/", port=81, timeout=3)
    assert r.status is None and "Refused" in (r.error or ""), run.context(r)


def test_the_proxy_port_is_closed_to_containers_except_through_the_dnat(pkg, fw, make_plain):
    run = pkg.run
    c = make_plain("fw-direct")
    require_rules(fw["rules"].tag)
    r = run.request(c, "GET", harness.CREDS_PATH, host=run.proxy.ip, port=run.proxy.port,
                    timeout=2)
    assert r.status is None and "timed out" in (r.error or "").lower(), run.context(r)
    # The host itself (loopback path) still reaches it.
    assert harness.wait_tcp(run.proxy.ip, run.proxy.port, 2)


def test_remove_deletes_exactly_the_tagged_rules(pkg, fw):
    tag = fw["rules"].tag
    assert tagged_rules(tag)
    cp = firewall("--remove", "--comment", tag)   # dry run: prints, deletes nothing
    lines = cp.stdout.splitlines()
    v4 = [line for line in lines if line.startswith("iptables ") and " -D " in line]
    # This bridge has no IPv6 address: the IPv6 part is the REJECT alone.
    v6 = [line for line in lines if line.startswith("ip6tables ") and " -D " in line]
    assert len(v4) == 3 and tagged_rules(tag), cp.stdout
    assert len(v6) == 1 and "fd00:ec2::254/128" in v6[0] and "REJECT" in v6[0], cp.stdout
    fw["rules"].remove()
    assert tagged_rules(tag) == []
    cp = firewall("--force", "--remove", "--comment", tag)
    assert f'no rules tagged "{tag}"' in cp.stdout
