"""A neighbour cannot wear your address.

On a Docker bridge a source address is no proof of who is calling: a container
with nothing but Docker's default capabilities (CAP_NET_RAW, no CAP_NET_ADMIN)
can claim a neighbour's address, by one ARP request from a made-up MAC or by
sending with the neighbour's own MAC, and complete a TCP handshake from a
packet socket (tests/e2e/images/spoof/spoof.c). Both ways reach the proxy with
the neighbour's address. The proxy must still refuse: the connection does not
exist in the neighbour's network namespace, and the proxy asks there before it
serves a connection as the neighbour's (src/platform/proof.rs).
"""

from __future__ import annotations

import json
import re
import time

import pytest

from harness import CREDS_PATH, HERE, TTL_HEADER, sh

ATTACK_TIMEOUT_MS = 3000
SPOOF_SRC = HERE / "images" / "spoof" / "spoof.c"


def spoofed_requests(role: str) -> str:
    """What an SDK would send, pipelined on the one spoofed connection: a token,
    the role listing, the role's credentials."""
    host = "Host: 169.254.169.254\r\n"
    return (f"PUT /latest/api/token HTTP/1.1\r\n{host}{TTL_HEADER}: 21600\r\n"
            f"Content-Length: 0\r\n\r\n"
            f"GET {CREDS_PATH} HTTP/1.1\r\n{host}\r\n"
            f"GET {CREDS_PATH}{role} HTTP/1.1\r\n{host}Connection: close\r\n\r\n")


def bridge_of(run) -> str:
    net_id = sh(["docker", "network", "inspect", "-f", "{{.Id}}", run.network.name]).stdout.strip()
    return "br-" + net_id[:12]


def mac_of(run, c) -> str:
    return sh(["docker", "inspect", "-f",
               "{{range .NetworkSettings.Networks}}{{.MacAddress}}{{end}}", c.id]).stdout.strip()


def attack(run, attacker, victim, mode: str, role: str) -> dict:
    """Runs the attacker program inside `attacker` (docker exec: the container's
    own, default capability set) against the proxy, wearing `victim`'s address."""
    bridge = bridge_of(run)
    gateway_mac = open(f"/sys/class/net/{bridge}/address").read().strip()
    argv = ["docker", "exec", attacker.id, "/spoof", "--mode", mode, "--iface", "eth0",
            "--victim-ip", victim.ip, "--gateway-ip", run.network.gateway,
            "--gateway-mac", gateway_mac, "--target-ip", run.proxy.ip,
            "--target-port", str(run.proxy.port),
            "--request", spoofed_requests(role).replace("\r\n", "\\r\\n"),
            "--timeout-ms", str(ATTACK_TIMEOUT_MS), "--check-netadmin"]
    if mode == "mac":
        argv += ["--victim-mac", mac_of(run, victim)]
    try:
        cp = sh(argv, check=False, timeout=ATTACK_TIMEOUT_MS / 1000 + 20)
    finally:
        if mode == "arp":
            # The host's neighbour entry now names the made-up MAC: the
            # victim would be cut off until it ages out.
            sh(["ip", "neigh", "del", victim.ip, "dev", bridge], check=False)
    lines = [line for line in cp.stdout.splitlines() if line.startswith("{")]
    assert lines, f"the attacker printed no result: rc={cp.returncode}\n{cp.stdout}\n{cp.stderr}"
    return json.loads(lines[-1])


@pytest.fixture(scope="module")
def spoof_image(e2e):
    """pause, with the attacker program beside it."""
    run = e2e.run
    return run.build_image(extra={"spoof": SPOOF_SRC}, tag=f"{run.prefix}-spoof:latest")


@pytest.fixture
def neighbours(e2e, make_container, spoof_image):
    """A labelled victim and an unlabelled attacker on the same bridge."""
    image = spoof_image
    victim = make_container("victim", alias="a")
    attacker = make_container("attacker", image=image)
    # A new container sends a few frames of its own (IPv6 multicast) that
    # would move its MAC back in the bridge: let the victim settle first.
    time.sleep(1.0)
    return victim, attacker


@pytest.mark.parametrize("mode", ["arp", "mac"])
def test_a_neighbour_wearing_your_address_gets_no_token_no_role_and_no_credentials(
        e2e, neighbours, mode):
    run = e2e.run
    victim, attacker = neighbours
    role_a = e2e.role_of["a"]
    before = len(run.proxy.log_text())

    result = attack(run, attacker, victim, mode, role_a)

    # The attack itself worked: a default container, refused CAP_NET_ADMIN,
    # completed a handshake as the victim and got answers.
    assert result.get("netadmin") == "refused: EPERM", result
    assert result["handshake"] and result["peer_closed"], result
    received = result["received"]
    statuses = re.findall(r"^HTTP/1\.1 (\d{3})", received, re.M)
    assert statuses == ["404", "404", "404"], received
    assert role_a not in received and "AccessKeyId" not in received, received

    # The proxy saw the victim's address, and said why it refused.
    ids = re.findall(r"^x-request-id: (\S+)", received, re.M | re.I)
    assert len(ids) == 3, received
    run.proxy.wait_log(f"response id={ids[-1]}")
    log = run.proxy.log_text()[before:]
    for request_id in ids:
        assert re.search(rf"request id={request_id} remote={re.escape(victim.ip)} ", log), log
        response = re.search(rf"response id={request_id} status=404 .*", log)
        assert response and "not proven" in response.group(0), log
    # Once per connection, however many requests it carried.
    refusals = [line for line in log.splitlines()
                if "not found in" in line and victim.ip in line]
    assert len(refusals) == 1, log

    # Both still get their own roles when they ask as themselves.
    listing = run.request(victim, "GET", CREDS_PATH)
    assert listing.status == 200 and listing.body == role_a, e2e.ctx(listing)
    doc = run.request(victim, "GET", CREDS_PATH + role_a)
    assert doc.status == 200 and doc.json()["Code"] == "Success", e2e.ctx(doc)
    own = run.request(attacker, "GET", CREDS_PATH)
    assert own.status == 200 and own.body == e2e.role_of["default"], e2e.ctx(own)
