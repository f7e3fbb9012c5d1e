"""The container index under churn: IP reuse and brand-new containers."""

from __future__ import annotations

import json
import select
import subprocess
import sys
import time
from pathlib import Path

from conftest import DEFAULT_ALIAS
from harness import CREDS_PATH, sh

RELAY = Path(__file__).with_name("docker_relay.py")
EVENT_DELAY = 6.0


def test_reused_ip_gets_the_new_containers_role_never_the_old_ones(e2e, make_container):
    """IP reuse (the bug of lyft, kiam and kube2iam): container A (alias a) holds a
    fixed IP, is removed, and container B (alias b) starts on the same IP. Every
    answer B ever gets is b's role or a refusal, never a's; and B does get b's."""
    run = e2e.run
    ip = str(run.network.subnet.network_address + 200)
    role_a, role_b = e2e.role_of["a"], e2e.role_of["b"]

    ca = make_container("reuse-a", alias="a", ip=ip)
    assert ca.ip == ip
    first = run.request(ca, "GET", CREDS_PATH)
    assert first.status == 200 and first.body == role_a, e2e.ctx(first)
    doc_a = run.request(ca, "GET", CREDS_PATH + role_a)
    assert doc_a.status == 200, e2e.ctx(doc_a)
    key_a = doc_a.json()["AccessKeyId"]

    run.remove_container(ca)
    cb = make_container("reuse-b", alias="b", ip=ip)
    assert cb.ip == ip

    seen = []
    deadline = time.monotonic() + 5
    got_b = False
    for _ in range(50):  # bounded in count and time
        listing, doc_old = run.http(cb, [
            dict(method="GET", path=CREDS_PATH, timeout=2),
            dict(method="GET", path=CREDS_PATH + role_a, timeout=2),
        ])
        seen += [listing, doc_old]
        assert listing.body != role_a, "B was told it is role a" + e2e.ctx(listing)
        assert doc_old.status == 404, "B was served role a's document" + e2e.ctx(doc_old)
        assert key_a not in doc_old.body and key_a not in listing.body, e2e.ctx(doc_old)
        if listing.status == 200 and listing.body == role_b:
            got_b = True
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got_b, "B never got role b" + e2e.ctx(*seen[-4:])
    if len(seen) > 2:
        print(f"note: B needed {len(seen) // 2} attempts before role b: {[r.status for r in seen]}")

    doc_b = run.request(cb, "GET", CREDS_PATH + role_b)
    assert doc_b.status == 200 and doc_b.json()["AccessKeyId"] != key_a, e2e.ctx(doc_b)
    cli = run.aws_cli(cb)
    assert cli.ok and f"assumed-role/{role_b}/" in cli.arn, e2e.ctx(cli)


def test_container_asking_right_after_start_is_served(e2e, make_container):
    """SDKs ask IMDS as soon as the program starts and give it about a second.
    A container that asks within ~100 ms of `docker start`, possibly before the
    proxy has seen its start event, must be looked up and served, not 404'd."""
    run = e2e.run
    p = e2e.proxy
    c = make_container("early", alias="b", start=False)
    sh(["docker", "start", c.id])
    started = time.time()
    run.refresh(c)  # its pid, for nsenter; no iptables step: ask at once
    # Straight to the proxy's address (same source IP as through the DNAT).
    r = run.request(c, "GET", CREDS_PATH, host=p.ip, port=p.port, timeout=1)
    delay_ms = (r.sent_at - started) * 1000
    print(f"first request sent {delay_ms:.0f} ms after `docker start` returned; took {r.ms:.0f} ms")
    assert r.status == 200 and r.body == e2e.role_of["b"], (
        f"asked {delay_ms:.0f} ms after start" + e2e.ctx(r))
    doc = run.request(c, "GET", CREDS_PATH + e2e.role_of["b"], host=p.ip, port=p.port, timeout=2)
    assert doc.status == 200 and doc.json()["Code"] == "Success", e2e.ctx(doc)


JOIN_PROBE = r"""
import json, os, socket, sys, time
ip, host, port = os.environ["JOIN_IP"], os.environ["PROXY_HOST"], int(os.environ["PROXY_PORT"])
print("ready", flush=True)
t0 = time.monotonic()
while time.monotonic() - t0 < 15:          # bounded: wait for the address to appear
    try:
        s = socket.socket(); s.bind((ip, 0)); break
    except OSError:
        s.close(); time.sleep(0.0005)
else:
    print(json.dumps({"error": "address never appeared"})); sys.exit(1)
appeared = time.time()
s.settimeout(2)
out = {"waited_ms": (time.monotonic() - t0) * 1000}
try:
    s.connect((host, port))
    out["sent_after_address_ms"] = (time.time() - appeared) * 1000
    s.sendall(b"GET /latest/meta-data/iam/security-credentials/ HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    data = b""
    while True:
        c = s.recv(65536)
        if not c: break
        data += c
    out["response"] = data.decode("latin-1")
except Exception as e:
    out["error"] = repr(e)
print(json.dumps(out), flush=True)
"""


def test_container_asking_the_instant_it_joins_the_network_is_served(e2e, make_container):
    """`docker network connect` gives a running container a new IP. A caller that
    fires the moment the address appears, racing Docker's connect event, must be
    looked up and served its role (not 404'd as an unknown IP)."""
    run = e2e.run
    aux = run.create_network("aux")
    c = make_container("joiner", alias="a", network=aux, redirect=False)
    ip = str(run.network.subnet.network_address + 150)
    env = dict(run.client_env(), JOIN_IP=ip, PROXY_HOST=e2e.proxy.ip, PROXY_PORT=str(e2e.proxy.port))
    probe = subprocess.Popen(["nsenter", "-t", str(c.pid), "-n", "--", sys.executable, "-c", JOIN_PROBE],
                             env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                             stdin=subprocess.DEVNULL)
    try:
        ready, _, _ = select.select([probe.stdout], [], [], 10)
        assert ready and probe.stdout.readline().strip() == "ready", probe.stderr.read()
        sh(["docker", "network", "connect", "--ip", ip, run.network.name, c.id])
        out, err = probe.communicate(timeout=20)
    finally:
        if probe.poll() is None:
            probe.kill()
            probe.communicate()
    res = json.loads(out.strip().splitlines()[-1]) if out.strip() else {"error": err}
    print(f"join probe: {dict((k, v) for k, v in res.items() if k != 'response')}")
    resp = res.get("response", "")
    assert resp.startswith("HTTP/1.1 200"), f"probe result {res}" + e2e.ctx()
    assert resp.endswith("\r\n\r\n" + e2e.role_of["a"]), f"probe result {res}" + e2e.ctx()


def test_ip_freed_by_network_disconnect_is_not_served_as_the_old_container(e2e, make_container):
    """IP reuse without a removal: container A (alias a) is disconnected from the
    network but keeps running (on another network), and container B (alias b)
    takes A's old address. A still exists, so only the disconnect tells the proxy
    the address moved: B must never be served as A."""
    run = e2e.run
    aux = run.create_network("aux2")
    ip = str(run.network.subnet.network_address + 210)
    role_a, role_b = e2e.role_of["a"], e2e.role_of["b"]

    ca = make_container("disc-a", alias="a", ip=ip)
    first = run.request(ca, "GET", CREDS_PATH)
    assert first.status == 200 and first.body == role_a, e2e.ctx(first)
    sh(["docker", "network", "connect", aux.name, ca.id])
    sh(["docker", "network", "disconnect", run.network.name, ca.id])

    cb = make_container("disc-b", alias="b", ip=ip)
    assert cb.ip == ip
    seen = []
    got_b = False
    deadline = time.monotonic() + 5
    for _ in range(50):  # bounded in count and time
        listing, doc_old = run.http(cb, [
            dict(method="GET", path=CREDS_PATH, timeout=2),
            dict(method="GET", path=CREDS_PATH + role_a, timeout=2),
        ])
        seen += [listing, doc_old]
        assert listing.body != role_a, "B was told it is role a" + e2e.ctx(listing)
        assert doc_old.status == 404, "B was served role a's document" + e2e.ctx(doc_old)
        if listing.status == 200 and listing.body == role_b:
            got_b = True
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert got_b, "B never got role b" + e2e.ctx(*seen[-4:])


def test_a_late_die_event_never_gives_the_old_owners_role_to_the_next(e2e, make_container):
    """Docker's events held back by a relay (docker_relay.py), as when the daemon is
    busy or the stream is being re-established: A (alias a) on a fixed IP is removed
    and B (alias b) starts on that IP while the proxy has not yet heard that A died.
    The kernel has (A's init process is gone): B gets role b, never a, and A's
    IMDSv2 token is refused from B."""
    run = e2e.run
    role_a, role_b = e2e.role_of["a"], e2e.role_of["b"]
    sock = run.tmp / "docker-relay.sock"
    relay = subprocess.Popen([sys.executable, str(RELAY), "--listen", str(sock),
                              "--delay", str(EVENT_DELAY)],
                             stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, text=True)

    def stop_relay():
        relay.kill()
        relay.wait(5)
    run.cleanup.push(stop_relay, "stop Docker relay")
    ready, _, _ = select.select([relay.stdout], [], [], 10)
    assert ready and relay.stdout.readline().strip() == "listening"
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="late-events",
                            dockerHost=f"unix://{sock}")
    at = dict(host=proxy.ip, port=proxy.port, timeout=3)

    ip = str(run.network.subnet.network_address + 201)
    ca = make_container("late-a", alias="a", ip=ip, redirect=False)
    first, token = run.http(ca, [
        dict(method="GET", path=CREDS_PATH, **at),
        dict(method="PUT", path="/latest/api/token",
             headers={"X-aws-ec2-metadata-token-ttl-seconds": "600"}, **at),
    ])
    assert first.status == 200 and first.body == role_a, e2e.ctx(first)
    assert token.status == 200, e2e.ctx(token)
    assert proxy.wait_log(f"container {ca.id[:12]} ", timeout=EVENT_DELAY + 2), \
        "the start event never reached the proxy" + e2e.ctx()
    time.sleep(0.5)  # and its network-connect event, which comes with it

    removed_at = time.time()
    run.remove_container(ca)
    cb = make_container("late-b", alias="b", ip=ip, redirect=False)
    assert cb.ip == ip
    listing, old_token, doc_a = run.http(cb, [
        dict(method="GET", path=CREDS_PATH, **at),
        dict(method="GET", path=CREDS_PATH, headers={"X-aws-ec2-metadata-token": token.body}, **at),
        dict(method="GET", path=CREDS_PATH + role_a, **at),
    ])
    asked_after = listing.sent_at - removed_at
    print(f"B asked {asked_after * 1000:.0f} ms after A was removed; events run "
          f"{EVENT_DELAY:.0f} s late")
    # Inside the window: the proxy cannot have heard of A's death from Docker yet.
    assert asked_after < EVENT_DELAY - 1, f"too slow to test the window: {asked_after:.1f} s"
    assert listing.status == 200 and listing.body == role_b, e2e.ctx(listing)
    assert old_token.status == 401, e2e.ctx(old_token)
    assert doc_a.status == 404, e2e.ctx(doc_a)
    assert proxy.wait_log(f"container {ca.id[:12]}'s process has exited", timeout=2), \
        "B was not served through the kernel's word" + e2e.ctx()
    assert "watching containers' init processes" in proxy.log_text()
    assert "cannot watch container processes" not in proxy.log_text()
