"""scripts/setup-firewall.sh --anti-spoof on the real host: a container with
Docker's default capabilities cannot wear a neighbour's address on the bridge.

The attacker is tests/e2e/images/spoof/spoof.c in a FROM scratch image beside
the pause binary (`/pause` runs, `/spoof` is run with `docker exec`, so it has
exactly the container's default capabilities). It claims the victim's IPv4
address, by ARP from a made-up MAC (`--mode arp`) or with the victim's own MAC
(`--mode mac`), and tries a TCP handshake from a packet socket with a plain
HTTP server this test runs on the run's gateway address (never the proxy: its
own refusal is tested with the proxy). With the table in place and the
follower running, it must fail, and the host's neighbour entry for the victim
must still name the victim's MAC; with the table removed, the same attack must
succeed, so the rules are what stopped it.

Safety: every frame stays on this run's own bridge (the test checks the
network's label, the bridge, the target address and the containers' networks
before any spoofed frame is sent), and the only nftables tables written are
named after a tag unique to the run and cover this run's bridge alone (never
br-+). The follower runs with --remove (and dies with the test process), and
the Run's cleanup stops it and removes its table, pass or fail.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

import harness
from conftest import FIREWALL, HostRules, bridge_iface, firewall, tagged_rules

pytestmark = pytest.mark.usefixtures("pkg")

SPOOF_SRC = harness.HERE / "images" / "spoof" / "spoof.c"
# A starting container's port is in the sets within this long after Docker's
# start event (measured: docs/host-setup.md, test_the_window_over_20_starts).
WINDOW_BOUND_S = 2.0
STARTS = 20
EARLY_ATTACKS = 8  # per mode


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope="module", autouse=True)
def nft_present():
    """nftables is needed; tests/packaging/run.sh installs it outside CI."""
    if shutil.which("nft"):
        return
    if os.environ.get("CI") == "true":
        pytest.fail("nftables is not installed (no `nft` on PATH): .ci/run installs it "
                    "with apt-get install -y nftables; the anti-spoofing tests need it",
                    pytrace=False)
    pytest.fail("nftables is not installed (no `nft` on PATH): apt-get install -y nftables "
                "(tests/packaging/run.sh does, unless EC2MP_E2E_NO_APT=1)", pytrace=False)


@dataclass
class Lan:
    network: harness.Network
    bridge: str
    gateway: str
    gateway_mac: str


@pytest.fixture(scope="module")
def lan(pkg) -> Lan:
    net = pkg.run.network
    br = bridge_iface(net)
    with open(f"/sys/class/net/{br}/address") as f:
        mac = f.read().strip()
    return Lan(net, br, net.gateway, mac)


@pytest.fixture(scope="module")
def spoof_image(pkg) -> str:
    """FROM scratch: /pause (the entrypoint) and /spoof, both static."""
    run = pkg.run
    return run.build_image(extra={"spoof": SPOOF_SRC}, tag=f"{run.prefix}-spoof:latest")


class PeerServer:
    """A plain HTTP server on the gateway: answers `peer=IP:PORT path=PATH` and
    remembers every (peer address, path) it served."""

    def __init__(self, run: harness.Run, ip: str):
        self.seen: list[tuple[str, str]] = []
        server = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *a):
                pass

            def do_GET(self):
                peer_ip, peer_port = self.client_address[:2]
                server.seen.append((peer_ip, self.path))
                body = f"peer={peer_ip}:{peer_port} path={self.path}\n".encode()
                self.send_response(200)
                self.send_header("Content-Type", "text/plain")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

        self.ip = ip
        self.port = harness.free_port(ip)
        self.httpd = ThreadingHTTPServer((ip, self.port), Handler)
        self.httpd.daemon_threads = True
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()
        run.cleanup.push(self.stop, "stop the anti-spoof test's HTTP server")

    def served(self, ip: str, path: str) -> bool:
        return (ip, path) in self.seen

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def server(pkg, lan) -> PeerServer:
    return PeerServer(pkg.run, lan.gateway)


def nft_tables() -> list[str]:
    return sorted(harness.sh(["nft", "list", "tables"]).stdout.splitlines())


class AntiSpoof:
    """The follower (`--anti-spoof --follow`) on this run's bridge, under a tag
    unique to the run, and what its table holds."""

    def __init__(self, run: harness.Run, bridge: str, tag: str):
        self.run = run
        self.bridge = bridge
        self.tag = tag
        self.proc: subprocess.Popen | None = None
        self.remove_on_exit = True
        self.log_path = run.tmp / f"{tag}-follow.log"
        run.cleanup.push(self.close, f"stop the follower and remove table bridge {tag}")

    def args(self) -> list[str]:
        return ["--anti-spoof", "--comment", self.tag, "--container-iface", self.bridge]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except FileNotFoundError:
            return ""

    def context(self) -> str:
        table = harness.sh(["nft", "list", "table", "bridge", self.tag], check=False)
        return (f"\nfollower log:\n{self.log_text()[-3000:]}\n"
                f"table:\n{table.stdout or table.stderr}")

    def following(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def follow(self, remove_on_exit: bool = True) -> None:
        """Starts the follower unless it runs (so); returns once it has filled the table."""
        if self.following() and self.remove_on_exit == remove_on_exit:
            return
        self.stop()
        self.remove_on_exit = remove_on_exit
        mark = self.log_text().count("following docker events")
        argv = ["bash", str(FIREWALL), "--force", "--follow", *self.args()]
        if remove_on_exit:  # a test process that dies takes the table with it
            argv.append("--remove")
        with open(self.log_path, "ab") as out:
            self.proc = subprocess.Popen(argv, stdout=out, stderr=subprocess.STDOUT,
                                         stdin=subprocess.DEVNULL,
                                         preexec_fn=harness._die_with_parent)
        deadline = time.monotonic() + 30
        while self.log_text().count("following docker events") == mark:
            assert self.proc.poll() is None, f"the follower exited: {self.context()}"
            assert time.monotonic() < deadline, f"the follower did not start: {self.context()}"
            time.sleep(0.05)
        assert self.has_table(), self.context()

    def stop(self) -> int | None:
        """SIGTERM; it must exit 0 within 10 s."""
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                raise AssertionError(f"the follower ignored SIGTERM for 10 s: {self.context()}")
        rc, self.proc = self.proc.returncode, None
        return rc

    def remove(self) -> None:
        firewall("--force", "--remove", "--comment", self.tag, check=False)

    def close(self) -> None:
        try:
            self.stop()
        finally:
            self.remove()
        if self.has_table():
            raise RuntimeError(f"table bridge {self.tag} left after --remove")

    def has_table(self) -> bool:
        return harness.sh(["nft", "list", "table", "bridge", self.tag], check=False).returncode == 0

    def elements(self, name: str) -> set:
        """The elements of set `name`: strings, or tuples for concatenations."""
        return self.sets(["list", "set", "bridge", self.tag, name]).get(name, set())

    def sets(self, what: list[str] | None = None) -> dict[str, set]:
        """Every set of the table (one nft call): name -> elements."""
        cp = harness.sh(["nft", "-j", *(what or ["list", "table", "bridge", self.tag])], check=False)
        if cp.returncode != 0:
            return {}
        out: dict[str, set] = {}
        for item in json.loads(cp.stdout)["nftables"]:
            if "set" not in item:
                continue
            elems = item["set"].get("elem", [])
            found = out.setdefault(item["set"]["name"], set())
            for e in elems if isinstance(elems, list) else [elems]:
                if isinstance(e, dict) and "elem" in e:  # an element with a timeout
                    e = e["elem"]["val"]
                found.add(tuple(e["concat"]) if isinstance(e, dict) else e)
        return out

    def counters(self) -> dict[str, int]:
        """Packets dropped so far, by rule comment."""
        cp = harness.sh(["nft", "-j", "list", "chain", "bridge", self.tag, "prerouting"])
        counts = {}
        for item in json.loads(cp.stdout)["nftables"]:
            rule = item.get("rule")
            if rule and "comment" in rule:
                for e in rule["expr"]:
                    if "counter" in e:
                        counts[rule["comment"]] = e["counter"]["packets"]
        return counts

    def protects(self, port: str, mac: str, ip: str) -> bool:
        return (port in self.elements("ports") and (port, mac) in self.elements("macs")
                and (port, mac, ip) in self.elements("ipv4"))

    def wait(self, cond, timeout: float, what: str) -> float:
        """Polls cond() until true; returns the seconds it took."""
        t0 = time.monotonic()
        while not cond():
            assert time.monotonic() - t0 < timeout, f"{what} not within {timeout} s: {self.context()}"
            time.sleep(0.02)
        return time.monotonic() - t0


@pytest.fixture(scope="module")
def anti(pkg, lan) -> AntiSpoof:
    return AntiSpoof(pkg.run, lan.bridge, f"{pkg.run.comment}-as")


# ---------------------------------------------------------------- helpers

def mac_of(c: harness.Container, net: harness.Network) -> str:
    return harness.sh(["docker", "inspect", "-f",
                       f'{{{{(index .NetworkSettings.Networks "{net.name}").MacAddress}}}}',
                       c.id]).stdout.strip()


def host_port(c: harness.Container) -> str:
    """The host side of the container's veth, found here another way than the
    script does: eth0's peer index (read inside its namespace by PID) among the
    host's interfaces."""
    out = harness.sh(["nsenter", "-t", str(c.pid), "-n", "ip", "-o", "link", "show", "eth0"]).stdout
    peer = re.search(r"eth0@if(\d+):", out).group(1)
    for line in harness.sh(["ip", "-o", "link"]).stdout.splitlines():
        m = re.match(r"(\d+): ([^:@ ]+)", line)
        if m and m.group(1) == peer:
            return m.group(2)
    raise AssertionError(f"no host interface with index {peer} (container {c.name})")


def neigh_mac(lan: Lan, ip: str) -> str | None:
    out = harness.sh(["ip", "neigh", "show", ip, "dev", lan.bridge]).stdout
    m = re.search(r"lladdr ([0-9a-f:]+)", out)
    return m.group(1) if m else None


def prime_neighbour(lan: Lan, victim: harness.Container, mac: str) -> None:
    """The host talks to the victim first, so that its neighbour entry exists
    and is right before the attack (the victim refuses port 9 at once)."""
    harness.sh(["ip", "neigh", "del", victim.ip, "dev", lan.bridge], check=False)
    try:
        socket.create_connection((victim.ip, 9), timeout=1).close()
    except OSError:
        pass
    assert neigh_mac(lan, victim.ip) == mac, harness.sh(["ip", "neigh", "show", "dev", lan.bridge]).stdout


def check_own_bridge(pkg, lan: Lan, *containers: harness.Container) -> None:
    """Before any spoofed frame: the network is this run's, its bridge is the
    one the rules name, the target is that bridge's own address, and every
    container involved is on that network alone."""
    run = pkg.run
    labels = json.loads(harness.sh(["docker", "network", "inspect", "-f", "{{json .Labels}}",
                                    lan.network.id]).stdout)
    assert labels.get(harness.RUN_LABEL) == run.runid, labels
    assert lan.bridge == bridge_iface(lan.network)
    addrs = harness.sh(["ip", "-4", "-o", "addr", "show", "dev", lan.bridge]).stdout
    assert f" {lan.gateway}/" in addrs, addrs
    for c in containers:
        nets = json.loads(harness.sh(["docker", "inspect", "-f", "{{json .NetworkSettings.Networks}}",
                                      c.id]).stdout)
        assert list(nets) == [lan.network.name], (c.name, list(nets))
        assert os.path.realpath(f"/sys/class/net/{host_port(c)}/master").endswith("/" + lan.bridge)


def attack(lan: Lan, server: PeerServer, attacker: harness.Container, victim: harness.Container,
           victim_mac: str, mode: str, path: str) -> dict:
    """spoof inside the attacker (docker exec: the container's capabilities) against
    the HTTP server on the gateway, wearing the victim's address."""
    argv = ["docker", "exec", attacker.id, "/spoof", "--mode", mode, "--iface", "eth0",
            "--victim-ip", victim.ip, "--gateway-ip", lan.gateway, "--gateway-mac", lan.gateway_mac,
            "--target-ip", lan.gateway, "--target-port", str(server.port),
            "--request", f"GET {path} HTTP/1.1\\r\\nHost: spoof\\r\\nConnection: close\\r\\n\\r\\n",
            "--timeout-ms", "3000", "--check-netadmin"]
    if mode == "mac":
        argv += ["--victim-mac", victim_mac]
    cp = harness.sh(argv, check=False, timeout=30)
    lines = [x for x in cp.stdout.splitlines() if x.startswith("{")]
    assert lines, f"spoof printed no result (rc={cp.returncode}): {cp.stdout} {cp.stderr}"
    result = json.loads(lines[-1])
    # Docker's default capabilities: raw sockets yes, addresses no.
    assert result["netadmin"] == "refused: EPERM", result
    return result


def pair(make_plain, spoof_image: str) -> tuple[harness.Container, harness.Container]:
    victim = make_plain("as-victim")
    attacker = make_plain("as-attacker", image=spoof_image)
    return victim, attacker


def wait_protected(anti: AntiSpoof, lan: Lan, *containers: harness.Container) -> None:
    for c in containers:
        port, mac = host_port(c), mac_of(c, lan.network)
        anti.wait(lambda: anti.protects(port, mac, c.ip), 5, f"{c.name}'s port {port} protected")


# Frames the spoof program does not send: the attacker's own MAC with the
# victim's address, plain and VLAN 0 tagged. Sent from the host's python
# entered into the attacker's network namespace: they enter the bridge on the
# attacker's port exactly as its own would.
FRAMES_PY = r"""
import socket, struct, sys
own_mac, gw_mac, victim_ip, gw_ip, port = sys.argv[1:6]
own, gw = bytes.fromhex(own_mac.replace(":", "")), bytes.fromhex(gw_mac.replace(":", ""))
def csum(b):
    if len(b) % 2: b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16: s = (s & 0xffff) + (s >> 16)
    return ~s & 0xffff
arp = struct.pack("!HHBBH6s4s6s4s", 1, 0x0800, 6, 4, 1, own, socket.inet_aton(victim_ip),
                  b"\0" * 6, socket.inet_aton(gw_ip))
src, dst = socket.inet_aton(victim_ip), socket.inet_aton(gw_ip)
tcp = struct.pack("!HHIIBBHHH", 40000, int(port), 1, 0, 5 << 4, 0x02, 65535, 0, 0)
tcp = tcp[:16] + struct.pack("!H", csum(src + dst + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)) + tcp[18:]
ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
ip = ip[:10] + struct.pack("!H", csum(ip)) + ip[12:]
frames = {
    "arp": gw + own + struct.pack("!H", 0x0806) + arp,
    "vlan0-arp": gw + own + struct.pack("!HHH", 0x8100, 0, 0x0806) + arp,
    "ipv4": gw + own + struct.pack("!H", 0x0800) + ip + tcp,
}
s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
s.bind(("eth0", 0))
s.send(frames[sys.argv[6]])
"""


def send_frame(attacker: harness.Container, attacker_mac: str, lan: Lan, victim: harness.Container,
               port: int, kind: str) -> None:
    cp = harness.sh(["nsenter", "-t", str(attacker.pid), "-n", "--", sys.executable, "-c", FRAMES_PY,
                     attacker_mac, lan.gateway_mac, victim.ip, lan.gateway, str(port), kind])
    assert cp.returncode == 0, cp.stderr


# ---------------------------------------------------------------- tests

def test_antispoof_dry_run_prints_the_nft_commands_and_changes_nothing(pkg, lan, anti, make_plain):
    c = make_plain("as-dry")
    port, mac = host_port(c), mac_of(c, lan.network)
    before = nft_tables()
    for extra in (["--follow"], ["--proxy-ip", lan.gateway, "--proxy-port", "18000"]):
        out = firewall(*anti.args(), *extra).stdout
        assert "dry run" in out, out
        assert "nft -f - <<'NFT'" in out and f"table bridge {anti.tag} {{" in out, out
        assert "type filter hook prerouting priority -300; policy accept;" in out, out
        for line in (f'"{port}" . {mac} . {c.ip}', f'"{port}" . {mac}', f'"{port}"'):
            assert line in out, f"{line} not in:\n{out}"
    assert nft_tables() == before


def test_antispoof_applied_twice_is_replaced_not_doubled(pkg, lan, make_plain):
    run = pkg.run
    c = make_plain("as-twice")
    port, mac = host_port(c), mac_of(c, lan.network)
    rules = HostRules(run, f"{run.comment}-as1")
    args = ["--anti-spoof", "--container-iface", lan.bridge, "--proxy-ip", lan.gateway,
            "--proxy-port", str(harness.free_port(lan.gateway)), "--block-direct", "proxy-ip"]
    try:
        rules.apply(*args)
        first = harness.sh(["nft", "list", "table", "bridge", rules.tag]).stdout
        rules.apply(*args)
        second = harness.sh(["nft", "list", "table", "bridge", rules.tag]).stdout
        assert nft_tables().count(f"table bridge {rules.tag}") == 1
        assert second.count(" drop comment ") == 5 and second.count("accept") == 2, second
        assert f'"{port}" . {mac} . {c.ip}' in second, second
        assert first == second
        assert len(tagged_rules(rules.tag)) == 3
    finally:
        rules.remove()
    assert harness.sh(["nft", "list", "table", "bridge", rules.tag], check=False).returncode != 0


@pytest.mark.parametrize("mode", ["arp", "mac"])
def test_antispoof_stops_a_neighbour_wearing_the_victims_address(pkg, lan, anti, server, make_plain,
                                                                 spoof_image, mode):
    victim, attacker = pair(make_plain, spoof_image)
    victim_mac = mac_of(victim, lan.network)
    anti.follow()
    wait_protected(anti, lan, victim, attacker)
    check_own_bridge(pkg, lan, victim, attacker)
    prime_neighbour(lan, victim, victim_mac)
    dropped = anti.counters()["source MAC is not the container's"]

    result = attack(lan, server, attacker, victim, victim_mac, mode, f"/protected-{mode}")
    assert result["handshake"] is False and result["sent"] == 0, f"{result}{anti.context()}"
    assert not server.served(victim.ip, f"/protected-{mode}"), server.seen
    assert neigh_mac(lan, victim.ip) == victim_mac, harness.sh(["ip", "neigh", "show", "dev", lan.bridge]).stdout
    # Its frames carried a MAC that is not its own (made up, or the victim's).
    assert anti.counters()["source MAC is not the container's"] > dropped, anti.context()


def test_antispoof_drops_the_attackers_own_mac_with_the_victims_address(pkg, lan, anti, server,
                                                                        make_plain, spoof_image):
    victim, attacker = pair(make_plain, spoof_image)
    victim_mac, attacker_mac = mac_of(victim, lan.network), mac_of(attacker, lan.network)
    anti.follow()
    wait_protected(anti, lan, victim, attacker)
    check_own_bridge(pkg, lan, victim, attacker)
    prime_neighbour(lan, victim, victim_mac)
    for kind, rule in (("arp", "ARP sender is not the container's"),
                       ("vlan0-arp", "VLAN-tagged frame from a container"),
                       ("ipv4", "IPv4 source is not the container's")):
        before = anti.counters()[rule]
        send_frame(attacker, attacker_mac, lan, victim, server.port, kind)
        anti.wait(lambda: anti.counters()[rule] > before, 2, f"{kind}: a drop by {rule!r}")
        assert neigh_mac(lan, victim.ip) == victim_mac, kind


def test_antispoof_leaves_the_containers_own_traffic_alone(pkg, lan, anti, server, make_plain,
                                                           spoof_image):
    run = pkg.run
    victim, attacker = pair(make_plain, spoof_image)
    anti.follow()
    wait_protected(anti, lan, victim, attacker)
    for c in (victim, attacker):
        r = run.http(c, [{"method": "GET", "path": f"/own-{c.short}", "host": lan.gateway,
                          "port": server.port}])[0]
        assert r.status == 200 and f"peer={c.ip}:" in r.body, f"{r.describe()}{anti.context()}"


def test_antispoof_protects_a_later_container_in_the_window_and_forgets_it_when_it_stops(
        pkg, lan, anti, make_plain):
    anti.follow()
    c = make_plain("as-late")
    port, mac = host_port(c), mac_of(c, lan.network)
    took = anti.wait(lambda: anti.protects(port, mac, c.ip), WINDOW_BOUND_S,
                     f"{c.name}'s port {port} protected")
    harness.log(f"anti-spoof: {c.name} protected {took * 1000:.0f} ms after its start returned")
    harness.sh(["docker", "stop", "-t", "2", c.id])
    anti.wait(lambda: port not in anti.elements("ports") and
              not any(e[0] == port for e in anti.elements("macs") | anti.elements("ipv4")),
              5, f"{port} gone from the sets")


def carrier(port: str) -> bool:
    """The port's peer is up: from now on the container's side can send."""
    try:
        with open(f"/sys/class/net/{port}/carrier") as f:
            return f.read().strip() == "1"
    except OSError:
        return False


def test_the_window_over_20_starts(pkg, lan, anti, make_plain):
    """For STARTS new containers, when the follower closes and then opens the
    new port, against the moments it joins the bridge, its peer comes up (the
    container side can send from then on) and Docker reports the start.
    Reported; the port must be open (its elements in the sets) within
    WINDOW_BOUND_S of Docker's start event."""
    run = pkg.run
    anti.follow()
    events: dict[str, int] = {}
    ev = subprocess.Popen(["docker", "events", "--filter", f"label={harness.RUN_LABEL}={run.runid}",
                           "--filter", "event=start", "--format", "{{.Actor.ID}} {{.TimeNano}}"],
                          stdout=subprocess.PIPE, text=True, preexec_fn=harness._die_with_parent)

    def read_events():
        for line in ev.stdout:
            cid, tn = line.split()
            events[cid] = int(tn)

    threading.Thread(target=read_events, daemon=True).start()
    base = lan.network.subnet.network_address
    brif = f"/sys/class/net/{lan.bridge}/brif"
    m: dict[str, list[float]] = {k: [] for k in ("pending", "open", "event", "closed_first")}
    try:
        time.sleep(0.5)  # the stream is up
        for i in range(STARTS):
            ip = str(base + 200 + i)
            c = make_plain(f"as-w{i}", ip=ip, start=False)
            ports_before = set(os.listdir(brif))
            starting = subprocess.Popen(["docker", "start", c.id], stdout=subprocess.DEVNULL)
            port = None
            t = {}  # joined, pending, up, open: ns
            deadline = time.monotonic() + 10
            while "open" not in t:
                now = time.time_ns()
                if port is None:
                    new = set(os.listdir(brif)) - ports_before
                    if new:
                        port = new.pop()
                        t["joined"] = now
                if port is not None and "up" not in t and carrier(port):
                    t["up"] = now
                sets = anti.sets()
                after = time.time_ns()  # what the sets show is as late as this (an upper bound)
                if port is not None and "pending" not in t and port in sets.get("pending", ()):
                    t["pending"] = after
                if any(e[2] == ip for e in sets.get("ipv4", ())):
                    t["open"] = after
                assert time.monotonic() < deadline, f"{ip} never protected: {anti.context()}"
                time.sleep(0.002)
            assert starting.wait(30) == 0
            run.refresh(c)
            assert port == host_port(c)
            assert anti.protects(port, mac_of(c, lan.network), ip), anti.context()
            anti.wait(lambda: c.id in events, 5, f"Docker's start event for {c.name}")
            t.setdefault("joined", t["open"])
            t.setdefault("up", t["open"])
            # The port was closed (pending) or already open when its peer came up.
            m["closed_first"].append(1.0 if min(t.get("pending", t["open"]), t["open"]) <= t["up"] else 0.0)
            if "pending" in t:
                m["pending"].append((t["pending"] - t["joined"]) / 1e6)
            m["open"].append((t["open"] - t["up"]) / 1e6)
            m["event"].append((t["open"] - events[c.id]) / 1e6)
            run.remove_container(c)
            anti.wait(lambda: port not in anti.elements("ports"), 5, f"{port} removed")
    finally:
        ev.terminate()
        ev.wait(5)

    def p50_max(xs):
        return f"p50 {statistics.median(xs):.0f} ms, max {max(xs):.0f} ms" if xs else "never seen"

    summary = (f"anti-spoof over {STARTS} starts: port closed (pending) after joining the bridge "
               f"{p50_max(m['pending'])} ({len(m['pending'])} seen); port open after its peer came up "
               f"{p50_max(m['open'])}; port open after Docker's start event {p50_max(m['event'])} "
               f"(negative: before it); closed or open before its peer came up in "
               f"{sum(m['closed_first']):.0f} of {STARTS}")
    harness.log(summary)
    print(summary)
    assert max(m["event"]) < WINDOW_BOUND_S * 1000, (summary, m)


@pytest.mark.parametrize("mode", ["arp", "mac"])
def test_antispoof_stops_an_attacker_spoofing_from_its_first_instruction(pkg, lan, anti, server,
                                                                         make_plain, spoof_image,
                                                                         mode):
    """The attacker is a new container whose entrypoint is the spoof program:
    it spoofs before Docker reports its start. The follower closes its port
    when it joins the bridge and opens it to its own address only."""
    run = pkg.run
    victim = make_plain("as-victim")
    victim_mac = mac_of(victim, lan.network)
    anti.follow()
    wait_protected(anti, lan, victim)
    check_own_bridge(pkg, lan, victim)
    won = []
    for i in range(EARLY_ATTACKS):
        prime_neighbour(lan, victim, victim_mac)
        path = f"/first-{mode}-{i}"
        argv = ["docker", "run", "--rm", "--name", f"{run.prefix}-first-{mode}-{i}",
                "--label", f"{harness.RUN_LABEL}={run.runid}", "--network", lan.network.name,
                "--entrypoint", "/spoof", spoof_image, "--mode", mode, "--iface", "eth0",
                "--victim-ip", victim.ip, "--victim-mac", victim_mac,
                "--gateway-ip", lan.gateway, "--gateway-mac", lan.gateway_mac,
                "--target-ip", lan.gateway, "--target-port", str(server.port),
                "--request", f"GET {path} HTTP/1.1\\r\\nHost: spoof\\r\\nConnection: close\\r\\n\\r\\n",
                "--timeout-ms", "1500"]
        cp = harness.sh(argv, check=False, timeout=60)
        lines = [x for x in cp.stdout.splitlines() if x.startswith("{")]
        assert lines, f"spoof printed no result (rc={cp.returncode}): {cp.stdout} {cp.stderr}"
        result = json.loads(lines[-1])
        if result["handshake"] or server.served(victim.ip, path) or neigh_mac(lan, victim.ip) != victim_mac:
            won.append((i, result, neigh_mac(lan, victim.ip)))
    assert not won, f"the attacker won {len(won)} of {EARLY_ATTACKS}: {won}{anti.context()}"


def test_antispoof_follower_resyncs_when_the_event_stream_breaks(pkg, lan, anti, make_plain):
    """Its `docker events` killed, the follower lists everything again once it
    follows again: a container started meanwhile (no event seen) is protected."""
    anti.follow()
    resyncs = anti.log_text().count("anti-spoof: resync:")
    stream = descendants(anti.proc.pid, "docker events")
    assert len(stream) == 1, stream
    os.kill(stream[0], signal.SIGTERM)
    anti.wait(lambda: "docker events or ip monitor ended" in anti.log_text(), 5, "the follower saw it")
    c = make_plain("as-missed")  # during the follower's pause (1 s)
    port, mac = host_port(c), mac_of(c, lan.network)
    anti.wait(lambda: anti.log_text().count("anti-spoof: resync:") > resyncs, 10, "a resync")
    anti.wait(lambda: anti.protects(port, mac, c.ip), 5, f"{c.name}'s port {port} protected")
    assert len(descendants(anti.proc.pid, "docker events")) == 1


def descendants(pid: int, cmd_prefix: str) -> list[int]:
    """The processes under `pid` (started by this test, through the follower)
    whose command line starts with `cmd_prefix`."""
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        try:
            with open(f"/proc/{p}/task/{p}/children") as f:
                kids = [int(x) for x in f.read().split()]
        except OSError:
            continue
        for k in kids:
            todo.append(k)
            try:
                with open(f"/proc/{k}/cmdline", "rb") as f:
                    cmd = f.read().replace(b"\0", b" ").decode(errors="replace")
            except OSError:
                continue
            if cmd.startswith(cmd_prefix):
                found.append(k)
    return found


@pytest.mark.parametrize("mode", ["arp", "mac"])
def test_without_antispoof_the_same_attack_succeeds(pkg, lan, anti, server, make_plain,
                                                    spoof_image, mode):
    """The control: no table, and the same attack completes (so the rules,
    not something else, stopped it above)."""
    victim, attacker = pair(make_plain, spoof_image)
    victim_mac = mac_of(victim, lan.network)
    assert anti.stop() in (None, 0), anti.context()
    anti.remove()
    assert not anti.has_table()
    check_own_bridge(pkg, lan, victim, attacker)
    prime_neighbour(lan, victim, victim_mac)
    try:
        result = attack(lan, server, attacker, victim, victim_mac, mode, f"/unprotected-{mode}")
        assert result["handshake"] is True and result["error"] is None, result
        assert server.served(victim.ip, f"/unprotected-{mode}"), server.seen
        assert f"peer={victim.ip}:" in result["received"], result
        if mode == "arp":  # the host's entry now names the made-up MAC
            assert neigh_mac(lan, victim.ip) not in (None, victim_mac)
    finally:
        # Put the host's view of the victim's address right for later tests.
        harness.sh(["ip", "neigh", "del", victim.ip, "dev", lan.bridge], check=False)


def test_antispoof_follower_exits_cleanly_and_remove_deletes_the_table_and_nothing_else(
        pkg, lan, anti):
    anti.follow(remove_on_exit=False)
    assert anti.stop() == 0, anti.context()
    assert anti.has_table(), "the follower must leave its table when it stops without --remove"
    assert "anti-spoof: stopped" in anti.log_text()
    # Look-alikes that must stay: the same name in another family, and a
    # longer name in the bridge family.
    decoys = [("ip", anti.tag), ("bridge", f"{anti.tag}-x")]
    for family, name in decoys:
        pkg.run.cleanup.push(lambda f=family, n=name: harness.sh(["nft", "delete", "table", f, n],
                                                                  check=False), f"remove {name}")
        harness.sh(["nft", "add", "table", family, name])
    try:
        before = nft_tables()
        dry = firewall("--remove", "--comment", anti.tag).stdout
        assert f"nft delete table bridge {anti.tag}" in dry and anti.has_table(), dry
        assert nft_tables() == before
        firewall("--force", "--remove", "--comment", anti.tag)
        after = nft_tables()
        assert sorted(set(before) - set(after)) == [f"table bridge {anti.tag}"], (before, after)
        assert set(after) <= set(before), (before, after)
        again = firewall("--force", "--remove", "--comment", anti.tag).stdout
        assert f'no rules tagged "{anti.tag}"' in again, again
    finally:
        for family, name in decoys:
            harness.sh(["nft", "delete", "table", family, name], check=False)
