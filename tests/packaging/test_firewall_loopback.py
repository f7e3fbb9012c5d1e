"""scripts/setup-firewall.sh with a loopback proxy address (--proxy-ip 127.0.0.1).

The kernel routes a DNATed packet from a bridge to 127.0.0.0/8 only with the
bridge's route_localnet set; the script sets it (on this run's own bridge
alone), guards it with a mangle rule, and puts the old value back on --remove.

A second harness Run (its own network, temp dir and proxy on 127.0.0.1) shares
the session's image and moto; it is closed with the session's Run.
"""

from __future__ import annotations

import pytest

import harness
from conftest import DEFAULT_ALIAS, HostRules, bridge_iface, tagged_rules


def sysctl_path(iface: str) -> str:
    return f"/proc/sys/net/ipv4/conf/{iface}/route_localnet"


@pytest.fixture(scope="module")
def lo(pkg):
    run = harness.Run(kind="pkglo", handle_signals=False)
    pkg.run.cleanup.push(run.close, "close the loopback run")  # signals reach it too
    try:
        run.image = pkg.run.image
        run.moto = pkg.run.moto
        net = run.create_network()
        state = run.tmp / "state"
        state.mkdir(mode=0o700)
        config = {"aliasToARN": dict(pkg.arn_of), "defaultAlias": DEFAULT_ALIAS,
                  "dockerHost": "unix:///var/run/docker.sock", "verbose": True,
                  "metadataURL": None, "stateDir": str(state)}
        run.proxy = harness.Proxy(run, "127.0.0.1", config, run.proxy_env())
        iface = bridge_iface(net)
        with open(sysctl_path(iface)) as f:
            before = f.read().strip()
        rules = HostRules(run, f"{run.comment}-lo")
        cp = rules.apply("--container-iface", iface, "--proxy-ip", "127.0.0.1",
                         "--proxy-port", str(run.proxy.port), "--block-direct", "proxy-ip")
        harness.log(f"loopback firewall on {iface}:\n{cp.stdout}")
        yield {"run": run, "iface": iface, "rules": rules, "before": before,
               "output": cp.stdout}
        rules.remove()
    finally:
        run.close()


def test_route_localnet_is_set_on_that_bridge_only_and_guarded(lo):
    assert lo["before"] == "0"
    with open(sysctl_path(lo["iface"])) as f:
        assert f.read().strip() == "1"
    with open("/proc/sys/net/ipv4/conf/all/route_localnet") as f:
        assert f.read().strip() == "0", "a named bridge must not switch it on for all"
    rules = tagged_rules(lo["rules"].tag)
    guard = [r for r in rules if r.startswith("mangle:") and "-d 127.0.0.0/8" in r
             and f"-i {lo['iface']}" in r and "-j DROP" in r]
    assert guard, rules


def test_container_reaches_a_loopback_proxy_through_the_host_dnat(pkg, lo):
    run = lo["run"]
    rules = tagged_rules(lo["rules"].tag)
    assert any("-j DNAT --to-destination 127.0.0.1:" in r for r in rules) and \
        any("-j REJECT" in r for r in rules), f"refusing to send traffic: {rules}"
    c = run.run_container("lo-b", alias="b", redirect=False)
    try:
        listing = run.request(c, "GET", harness.CREDS_PATH)
        assert listing.status == 200 and listing.body == pkg.role_of["b"], run.context(listing)
        doc = run.request(c, "GET", harness.CREDS_PATH + pkg.role_of["b"])
        assert doc.status == 200 and doc.json()["Code"] == "Success", run.context(doc)
    finally:
        run.remove_container(c)


def test_remove_puts_route_localnet_back(lo):
    lo["rules"].remove()
    assert tagged_rules(lo["rules"].tag) == []
    with open(sysctl_path(lo["iface"])) as f:
        assert f.read().strip() == lo["before"]
