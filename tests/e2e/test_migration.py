"""Migrating from lyft's metadataproxy and its ports without relabelling (issue 8).

A lyft host selects roles by container environment (`IAM_ROLE`, `IAM_EXTERNAL_ID`),
names sessions after a label or variable (`ROLE_SESSION_KEY`), maps addresses
that are not Docker containers with `ROLE_MAPPING_FILE` and may pick an STS
region. These tests show each ec2metaproxy equivalent against moto and real
containers (docs/migrating.md is the operator's side of the same list).

Every test starts its own proxy (own config, log and stateDir) on the run's
gateway IP; its containers' 169.254.169.254 is DNATed to that proxy, and the
proxy's STS endpoint is `StsRecorder` (migration_recorder.py), a recording
pass-through in front of moto: moto does not check `ExternalId`, so the only
proof the proxy sent it is the AssumeRole form it posted. Containers carry
environment variables (`docker create -e`), which the harness's container
helper does not set, so `_container` here creates them with the harness's
naming, run label and cleanup.
"""

from __future__ import annotations

import ipaddress
import json
import os
import random
import subprocess
import time

import pytest

import harness
from harness import ACCOUNT, ALIAS_LABEL, CREDS_PATH, RUN_LABEL, assumed_role, redact, sh
from migration_recorder import StsRecorder

OTHER_ACCOUNT = "210987654321"  # accountMap's "prod"; moto serves any account
ROLES = ["mig-default", "mig-env-app", "mig-label", "mig-partner", "mig-full", "mig-named",
         "mig-bare", "mig-map-one", "mig-map-two", "mig-session", "mig-region"]
GETROLE_ROLE, GETROLE_PATH = "mig-getrole", "/migrating/"
WHOAMI_POLICY = {"Version": "2012-10-17", "Statement": [
    {"Effect": "Allow", "Action": "sts:GetCallerIdentity", "Resource": "*"}]}


def role_arn(name: str, account: str = ACCOUNT) -> str:
    return f"arn:aws:iam::{account}:role/{name}"


# ---------------------------------------------------------------- fixtures

class Mig:
    """This module's share of the session run: roles in moto, the STS recorder,
    and factories for proxies and containers that are undone when a test ends."""

    def __init__(self, e2e):
        self.e2e = e2e
        self.run: harness.Run = e2e.run
        self.recorder: StsRecorder | None = None
        self.proxies: list[harness.Proxy] = []
        self.containers: list[harness.Container] = []
        self.notes: list[str] = []   # extra context for failure messages

    # -- proxies

    def proxy(self, name: str, aliases: dict, default: str = "default",
              listen_ip: str | None = None, **extra) -> harness.Proxy:
        """A proxy with its own config; its STS endpoint is the recorder.
        `aliases` maps alias -> role name (in moto's account), role ARN or alias object."""
        run = self.run
        alias_to_arn = {a: (role_arn(v) if isinstance(v, str) and not v.startswith("arn:") else v)
                        for a, v in aliases.items()}
        config = run.proxy_config(name, alias_to_arn, default, **extra)
        env = dict(run.proxy_env(), AWS_ENDPOINT_URL_STS=self.recorder.url)
        p = harness.Proxy(run, listen_ip or run.network.gateway, config, env, name=name)
        self.proxies.append(p)
        harness.log(f"{name} at {p.ip}:{p.port} (pid {p.proc.pid}), STS via {self.recorder.url}")
        return p

    # -- containers

    def container(self, short: str, proxy: harness.Proxy, env: dict | None = None,
                  alias: str | None = None, labels: dict | None = None) -> harness.Container:
        """A running pause container with environment `env`, its metadata address
        DNATed to `proxy`. Named, labelled and removed like the harness's own."""
        run = self.run
        name = f"{run.prefix}-{short}"
        all_labels = {RUN_LABEL: run.runid}
        if alias is not None:
            all_labels[ALIAS_LABEL] = alias
        all_labels.update(labels or {})
        args = ["docker", "create", "--name", name, "--network", run.network.name]
        for k, v in all_labels.items():
            args += ["--label", f"{k}={v}"]
        for k, v in (env or {}).items():
            args += ["-e", f"{k}={v}"]
        cid = sh(args + [run.image]).stdout.strip()
        c = harness.Container(name, short, cid, "", 0, all_labels)
        run.containers[name] = c   # the run's sweep removes it if this test cannot
        self.containers.append(c)
        run.start_container(c, redirect=proxy)
        return c

    # -- diagnostics

    def ctx(self, proxy: harness.Proxy | None, *items, calls=lambda c: True) -> str:
        parts = [it.describe() if hasattr(it, "describe") else str(it) for it in items]
        parts += self.notes
        if self.recorder is not None:
            parts.append(self.recorder.describe(calls))
        if proxy is not None:
            parts.append(f"{proxy.name} alive: {proxy.alive()}; log tail:\n"
                         + redact(proxy.tail(40)))
        return "\n" + "\n".join(parts)

    def cleanup(self) -> None:
        for c in self.containers:
            self.run.remove_container(c)
        self.containers.clear()
        for p in self.proxies:
            p.stop()
        self.proxies.clear()
        self.notes.clear()


@pytest.fixture(scope="module")
def mig_base(e2e):
    run = e2e.run
    m = Mig(e2e)
    for name in ROLES:
        run.moto.create_role(name)
    trust = {"Version": "2012-10-17", "Statement": [{
        "Effect": "Allow", "Principal": {"AWS": f"arn:aws:iam::{ACCOUNT}:root"},
        "Action": "sts:AssumeRole"}]}
    run.moto.client("iam").create_role(RoleName=GETROLE_ROLE, Path=GETROLE_PATH,
                                       AssumeRolePolicyDocument=json.dumps(trust))
    m.recorder = StsRecorder(run.network.gateway, harness.free_port(run.network.gateway),
                             run.moto.url)
    run.cleanup.push(m.recorder.stop, "stop STS recorder")
    harness.log(f"STS recorder at {m.recorder.url} -> {run.moto.url}")
    yield m
    m.recorder.stop()


@pytest.fixture
def mig(mig_base):
    yield mig_base
    mig_base.cleanup()


def _session_of(c: harness.Container):
    """Matches the AssumeRole calls made for `c` under its default session name."""
    return lambda call: (call.get("RoleSessionName") or "").startswith(c.name + "-")


def _listing(mig: Mig, c: harness.Container, want: str | None, seconds: float = 10.0):
    """Poll the role listing from `c` (bounded) until its body is `want` (None: any 404)."""
    seen = []
    deadline = time.monotonic() + seconds
    for _ in range(300):
        r = mig.run.request(c, "GET", CREDS_PATH, timeout=3)
        seen.append(r)
        if (want is None and r.status == 404) or (r.status == 200 and r.body == want):
            return True, seen
        if time.monotonic() > deadline:
            break
        time.sleep(0.2)
    return False, seen


def _log_line(proxy: harness.Proxy, *parts: str, timeout: float = 3.0) -> bool:
    """True once one line of the proxy's log holds every part (bounded wait; the
    response line may be written just after the response)."""
    deadline = time.monotonic() + timeout
    while True:
        if any(all(x in line for x in parts) for line in proxy.log_text().splitlines()):
            return True
        if time.monotonic() > deadline:
            return False
        time.sleep(0.1)


def _cli_role(mig: Mig, proxy, c, role: str, account: str = ACCOUNT) -> harness.ClientResult:
    cli = mig.run.aws_cli(c)
    got = assumed_role(cli.arn)
    assert cli.ok and got and got[0] == role, \
        f"expected assumed-role/{role}/..." + mig.ctx(proxy, cli)
    assert cli.arn.startswith(f"arn:aws:sts::{account}:assumed-role/{role}/"), \
        f"expected account {account}" + mig.ctx(proxy, cli)
    return cli


# ---------------------------------------------------------------- roleEnv


def test_role_env_names_an_alias_the_label_still_wins_and_unmapped_values_get_nothing(mig):
    """`roleEnv: "IAM_ROLE"` lets lyft-era containers keep their `-e IAM_ROLE=...`:
    the value is looked up as an alias. A label, when present, still decides (so
    relabelling can happen container by container), and with allowUnmappedRoles
    off a value that names no alias gets no credentials at all (404), never the
    default role."""
    run = mig.run
    p = mig.proxy("proxy-mig-env", {"default": "mig-default", "envapp": "mig-env-app",
                                     "labelled": "mig-label",
                                     role_arn("mig-full"): role_arn("mig-full")},
                  roleEnv="IAM_ROLE")
    by_env = mig.container("mig-env", p, env={"IAM_ROLE": "envapp"})
    _cli_role(mig, p, by_env, "mig-env-app")

    both = mig.container("mig-env-label", p, env={"IAM_ROLE": "envapp"}, alias="labelled")
    _cli_role(mig, p, both, "mig-label")

    # docker-ec2-metadata's containers carry whole ARNs: an alias may be named by one.
    by_arn = mig.container("mig-env-arn", p, env={"IAM_ROLE": role_arn("mig-full")})
    _cli_role(mig, p, by_arn, "mig-full")

    neither = mig.container("mig-env-none", p)
    ok, seen = _listing(mig, neither, "mig-default", seconds=5)
    assert ok, "no label and no IAM_ROLE: the default alias" + mig.ctx(p, *seen[-2:])

    unmapped = mig.container("mig-env-unmapped", p, env={"IAM_ROLE": f"mig-named@{ACCOUNT}"})
    r = run.request(unmapped, "GET", CREDS_PATH)
    assert r.status == 404, "an unmapped IAM_ROLE must get nothing" + mig.ctx(p, r)
    creds = run.request(unmapped, "GET", CREDS_PATH + "mig-default")
    assert creds.status == 404, "not the default role either" + mig.ctx(p, creds)
    assert _log_line(p, "status=404", f"IAM_ROLE=\\\"mig-named@{ACCOUNT}\\\"",
                     "names no alias in aliasToARN (and allowUnmappedRoles is off)"), \
        "the log should say why" + mig.ctx(p, r)
    cli = run.aws_cli(unmapped)
    assert not cli.ok, "the CLI must find no credentials" + mig.ctx(p, cli)
    assert not mig.recorder.assume_roles(_session_of(unmapped)), \
        "no AssumeRole for the refused container" + mig.ctx(p, calls=_session_of(unmapped))


# ---------------------------------------------------------------- allowUnmappedRoles


def test_unmapped_roles_by_arn_account_id_account_alias_and_default_account(mig):
    """With `allowUnmappedRoles: true` the variable may name a role the alias map
    does not: a full ARN, `name@ACCOUNT-ID`, `name@account-alias` (accountMap) or a
    bare name in `defaultAccountId`, as lyft's IAM_ROLE does."""
    p = mig.proxy("proxy-mig-unmapped", {"default": "mig-default"}, roleEnv="IAM_ROLE",
                  allowUnmappedRoles=True, accountMap={"prod": OTHER_ACCOUNT},
                  defaultAccountId=ACCOUNT)
    cases = [
        ("mig-un-arn", role_arn("mig-full"), "mig-full", ACCOUNT),
        ("mig-un-id", f"mig-named@{ACCOUNT}", "mig-named", ACCOUNT),
        ("mig-un-alias", "mig-prod@prod", "mig-prod", OTHER_ACCOUNT),
        ("mig-un-bare", "mig-bare", "mig-bare", ACCOUNT),
    ]
    for short, value, role, account in cases:
        c = mig.container(short, p, env={"IAM_ROLE": value})
        _cli_role(mig, p, c, role, account)
        call = mig.recorder.wait_assume_role(_session_of(c), 5)
        assert call and call.get("RoleArn") == role_arn(role, account), \
            f"IAM_ROLE={value}: AssumeRole should name {role_arn(role, account)}" \
            + mig.ctx(p, calls=_session_of(c))
    # An account alias that accountMap does not know is refused, not guessed.
    bad = mig.container("mig-un-badacct", p, env={"IAM_ROLE": "mig-named@staging"})
    r = mig.run.request(bad, "GET", CREDS_PATH)
    assert r.status == 404, mig.ctx(p, r)
    assert _log_line(p, "status=404", "mig-named@staging",
                     "is neither an ID nor in accountMap"), mig.ctx(p, r)


def test_bare_unmapped_name_without_default_account_is_resolved_with_iam_get_role(mig):
    """No defaultAccountId: a bare name is resolved with IAM GetRole (moto's IAM
    through AWS_ENDPOINT_URL_IAM). The role lives under a path, so the ARN in the
    AssumeRole the proxy sent can only have come from GetRole. A name IAM does
    not know gets a 404 whose log line carries IAM's error."""
    p = mig.proxy("proxy-mig-getrole", {"default": "mig-default"}, roleEnv="IAM_ROLE",
                  allowUnmappedRoles=True)
    c = mig.container("mig-getrole", p, env={"IAM_ROLE": GETROLE_ROLE})
    _cli_role(mig, p, c, GETROLE_ROLE)
    want = f"arn:aws:iam::{ACCOUNT}:role{GETROLE_PATH}{GETROLE_ROLE}"
    call = mig.recorder.wait_assume_role(_session_of(c), 5)
    assert call and call.get("RoleArn") == want, \
        f"AssumeRole should name GetRole's ARN {want}" + mig.ctx(p, calls=_session_of(c))

    missing = mig.container("mig-getrole-missing", p, env={"IAM_ROLE": "mig-no-such-role"})
    r = mig.run.request(missing, "GET", CREDS_PATH)
    assert r.status == 404, mig.ctx(p, r)
    assert _log_line(p, "status=404", "mig-no-such-role", "is not a role: IAM GetRole "
                     "mig-no-such-role: NoSuchEntity"), mig.ctx(p, r)


# ---------------------------------------------------------------- external IDs, policy, duration


def test_external_id_policy_and_duration_reach_sts(mig):
    """An alias object's `externalId`, `policy` and `durationSeconds`, and a
    container's `IAM_EXTERNAL_ID`, are sent in AssumeRole (seen by the recorder in
    front of moto, which does not check them). The operator's externalId wins over
    the container's variable (it guards against a confused deputy), and the
    variable only accompanies a role the container chose by environment."""
    run = mig.run
    cfg_ext, env_ext = f"cfg-ext-{run.runid}", f"env-ext-{run.runid}"
    policy = {"Version": "2012-10-17", "Statement": [
        {"Sid": "MigPolicy", "Effect": "Allow", "Action": "sts:GetCallerIdentity",
         "Resource": "*"}]}
    partner = {"arn": role_arn("mig-partner"), "externalId": cfg_ext, "policy": policy,
               "durationSeconds": 1800}
    p = mig.proxy("proxy-mig-extid", {"default": "mig-default", "partner": partner,
                                       "envapp": "mig-env-app"}, roleEnv="IAM_ROLE")

    def sent(c, role):
        _cli_role(mig, p, c, role)
        call = mig.recorder.wait_assume_role(_session_of(c), 5)
        assert call is not None, "no AssumeRole recorded" + mig.ctx(p, calls=lambda x: True)
        return call

    by_alias = mig.container("mig-ext-alias", p, env={"IAM_ROLE": "partner"})
    call = sent(by_alias, "mig-partner")
    assert call.get("ExternalId") == cfg_ext, mig.ctx(p, calls=_session_of(by_alias))
    assert call.get("DurationSeconds") == "1800", mig.ctx(p, calls=_session_of(by_alias))
    assert call.get("Policy") and json.loads(call.get("Policy")) == policy, \
        "the alias's policy, as sent" + mig.ctx(p, calls=_session_of(by_alias))

    by_env = mig.container("mig-ext-env", p, env={"IAM_ROLE": "envapp",
                                                  "IAM_EXTERNAL_ID": env_ext})
    call = sent(by_env, "mig-env-app")
    assert call.get("ExternalId") == env_ext, mig.ctx(p, calls=_session_of(by_env))
    assert call.get("DurationSeconds") == "3600", \
        "no durationSeconds: sessionDuration's default" + mig.ctx(p, calls=_session_of(by_env))
    assert call.get("Policy") is None, mig.ctx(p, calls=_session_of(by_env))

    both = mig.container("mig-ext-both", p, env={"IAM_ROLE": "partner",
                                                 "IAM_EXTERNAL_ID": env_ext})
    call = sent(both, "mig-partner")
    assert call.get("ExternalId") == cfg_ext, \
        "the alias's externalId wins over IAM_EXTERNAL_ID" + mig.ctx(p, calls=_session_of(both))

    labelled = mig.container("mig-ext-label", p, alias="partner")
    call = sent(labelled, "mig-partner")
    assert call.get("ExternalId") == cfg_ext and call.get("DurationSeconds") == "1800", \
        mig.ctx(p, calls=_session_of(labelled))

    # A label chose the role: the container's IAM_EXTERNAL_ID is not sent
    # (docs/migrating.md: move it into the alias before relabelling).
    labelled_env = mig.container("mig-ext-label-env", p, alias="envapp",
                                 env={"IAM_EXTERNAL_ID": env_ext})
    call = sent(labelled_env, "mig-env-app")
    assert call.get("ExternalId") is None, mig.ctx(p, calls=_session_of(labelled_env))


# ---------------------------------------------------------------- session names


def test_role_session_key_from_a_label_names_the_session(mig):
    """`roleSessionKey: "Labels:com.example.user"` (lyft's ROLE_SESSION_KEY): the
    label's value, sanitised to STS's characters, is the session name CloudTrail
    shows; a container without the label keeps its name-and-ID session."""
    run = mig.run
    p = mig.proxy("proxy-mig-sesslabel", {"default": "mig-default", "s": "mig-session"},
                  roleSessionKey="Labels:com.example.user")
    value = f"alice smith/{run.runid}:ops"
    c = mig.container("mig-sess-label", p, alias="s", labels={"com.example.user": value})
    cli = _cli_role(mig, p, c, "mig-session")
    want = f"alice-smith-{run.runid}-ops"
    assert assumed_role(cli.arn)[1] == want, f"session should be {want!r}" + mig.ctx(p, cli)
    plain = mig.container("mig-sess-plain", p, alias="s")
    cli = _cli_role(mig, p, plain, "mig-session")
    assert assumed_role(cli.arn)[1].startswith(plain.name + "-"), mig.ctx(p, cli)


def test_role_session_key_from_the_environment_names_the_session(mig):
    """`roleSessionKey: "Env:JOB_ID"`: the container's variable names the session
    (no roleEnv needed)."""
    run = mig.run
    p = mig.proxy("proxy-mig-sessenv", {"default": "mig-default", "s": "mig-session"},
                  roleSessionKey="Env:JOB_ID")
    c = mig.container("mig-sess-env", p, alias="s", env={"JOB_ID": f"build 42/{run.runid}"})
    cli = _cli_role(mig, p, c, "mig-session")
    want = f"build-42-{run.runid}"
    assert assumed_role(cli.arn)[1] == want, f"session should be {want!r}" + mig.ctx(p, cli)
    call = mig.recorder.wait_assume_role(lambda x: x.get("RoleSessionName") == want, 5)
    assert call is not None, mig.ctx(p)


# ---------------------------------------------------------------- stsRegion


def test_sts_region_is_used_for_signing_and_reported_at_startup(mig):
    """`stsRegion: "eu-west-1"` (lyft's AWS_REGION for STS regional endpoints):
    the startup line names it, AssumeRole is signed for it, and with an endpoint
    override (here the recorder in front of moto) credentials still flow."""
    p = mig.proxy("proxy-mig-region", {"default": "mig-default", "r": "mig-region"},
                  stsRegion="eu-west-1")
    assert p.wait_log("sts_region=eu-west-1", 5.0), "startup line" + mig.ctx(p)
    c = mig.container("mig-region", p, alias="r")
    _cli_role(mig, p, c, "mig-region")
    call = mig.recorder.wait_assume_role(_session_of(c), 5)
    assert call is not None and call.region() == "eu-west-1", \
        "AssumeRole should be signed for eu-west-1" + mig.ctx(p, calls=_session_of(c))


# ---------------------------------------------------------------- roleMappingFile


class StaticHost:
    """An address that is not a Docker container: a network namespace of its own,
    joined to the host by a veth pair on a free private /30. The proxy listens on
    the host end; in the namespace 169.254.169.254:80 is DNATed to it (rule tagged
    with the run's comment) and the default route points at the host end, so the
    namespace also reaches moto on the run's gateway IP. A `sleep` process holds
    the namespace for `nsenter -t PID -n` (the harness's clients); everything is
    undone by `close()`, also pushed on the run's cleanup stack."""

    def __init__(self, run: harness.Run):
        self.run = run
        self.netns = f"{run.prefix}-mapns"
        self.host_if, self.ns_if = f"mg{run.runid}h", f"mg{run.runid}n"  # <= 15 chars
        self.holder: subprocess.Popen | None = None
        self.closed = False
        run.cleanup.push(self.close, "remove the mapping test's netns and veth")
        self.net = self._free_slash30()
        self.host_ip = str(self.net.network_address + 1)
        self.ns_ip = str(self.net.network_address + 2)
        sh(["ip", "netns", "add", self.netns])
        sh(["ip", "link", "add", self.host_if, "type", "veth", "peer", "name", self.ns_if])
        sh(["ip", "link", "set", self.ns_if, "netns", self.netns])
        sh(["ip", "addr", "add", f"{self.host_ip}/30", "dev", self.host_if])
        sh(["ip", "link", "set", self.host_if, "up"])
        ns = ["ip", "netns", "exec", self.netns]
        sh(ns + ["ip", "addr", "add", f"{self.ns_ip}/30", "dev", self.ns_if])
        sh(ns + ["ip", "link", "set", self.ns_if, "up"])
        sh(ns + ["ip", "link", "set", "lo", "up"])
        sh(ns + ["ip", "route", "add", "default", "via", self.host_ip])
        self.holder = subprocess.Popen(ns + ["sleep", "3600"], stdin=subprocess.DEVNULL,
                                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                                       preexec_fn=harness._die_with_parent)
        # `ip netns exec` execs the command: the holder's pid is in the namespace.
        pid = self.holder.pid
        deadline = time.monotonic() + 5
        want = os.stat(f"/run/netns/{self.netns}").st_ino
        while self._ns_inode(pid) != want:
            if time.monotonic() > deadline or self.holder.poll() is not None:
                raise RuntimeError(f"netns holder did not enter {self.netns}")
            time.sleep(0.05)
        self.client = harness.Container(self.netns, "mapns", "", self.ns_ip, pid, {})
        harness.log(f"netns {self.netns}: {self.ns_ip} <-> host {self.host_if} {self.host_ip}")

    @staticmethod
    def _ns_inode(pid: int) -> int | None:
        try:
            return os.stat(f"/proc/{pid}/ns/net").st_ino
        except OSError:
            return None

    @staticmethod
    def _free_slash30() -> ipaddress.IPv4Network:
        for _ in range(50):
            net = ipaddress.ip_network(f"10.{random.randrange(160, 250)}."
                                       f"{random.randrange(0, 256)}.{random.randrange(0, 64) * 4}/30")
            if not any(net.overlaps(u) for u in harness.Run._used_subnets() if u.prefixlen > 0):
                return net
        raise RuntimeError("no free private /30 found for the mapping test's veth pair")

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        if self.holder is not None and self.holder.poll() is None:
            self.holder.kill()
            self.holder.wait(5)
        # Deleting the namespace takes its end of the pair (and its DNAT rule) with it.
        sh(["ip", "link", "del", self.host_if], check=False)
        sh(["ip", "netns", "del", self.netns], check=False)


def _write_mapping(path, mapping: dict) -> None:
    """Replace the file as config managers do: a temp file renamed over it."""
    tmp = path.with_name(path.name + ".new")
    tmp.write_text(json.dumps(mapping))
    os.replace(tmp, path)


def test_role_mapping_file_serves_a_non_docker_address_and_follows_rewrites(mig):
    """`roleMappingFile` (lyft's ROLE_MAPPING_FILE) gives an address Docker does not
    know, here a bare network namespace, an alias's role. The file is watched:
    rewritten (temp file + rename) to another alias, the running proxy serves the
    new role within seconds, with no restart."""
    run = mig.run
    host = StaticHost(run)
    try:
        mapping = run.tmp / "mig-mapping.json"
        _write_mapping(mapping, {host.ns_ip: "first"})
        p = mig.proxy("proxy-mig-mapping", {"default": "mig-default", "first": "mig-map-one",
                                             "second": "mig-map-two"},
                      listen_ip=host.host_ip, roleMappingFile=str(mapping))
        run.redirect_imds(host.client, p)
        mig.notes.append(f"netns {host.netns} {host.ns_ip} -> proxy {p.ip}:{p.port}; "
                         f"mapping file: {mapping.read_text()}")
        ok, seen = _listing(mig, host.client, "mig-map-one", seconds=5)
        assert ok, "the mapped address gets alias first's role" + mig.ctx(p, *seen[-2:])
        cli = _cli_role(mig, p, host.client, "mig-map-one")
        assert assumed_role(cli.arn)[1] == "ip-" + host.ns_ip.replace(".", "-"), \
            "session named after the address" + mig.ctx(p, cli)
        pid = p.proc.pid

        _write_mapping(mapping, {host.ns_ip: "second"})
        ok, seen = _listing(mig, host.client, "mig-map-two", seconds=10)
        assert ok, "the rewritten mapping was not served within 10 s" + mig.ctx(p, *seen[-2:])
        _cli_role(mig, p, host.client, "mig-map-two")
        assert p.wait_log("role mappings reloaded from", 3.0), mig.ctx(p)
        assert p.alive() and p.proc.pid == pid, "no restart" + mig.ctx(p)

        # An unmapped address is not given the default role: drop it from the file.
        _write_mapping(mapping, {})
        ok, seen = _listing(mig, host.client, None, seconds=10)
        assert ok, "an address dropped from the file must get nothing" + mig.ctx(p, *seen[-2:])

        # A mapping to an alias the config does not have fails closed too.
        reloads = p.log_text().count("role mappings reloaded from")
        _write_mapping(mapping, {host.ns_ip: "no-such-alias"})
        deadline = time.monotonic() + 5
        while p.log_text().count("role mappings reloaded from") <= reloads:
            assert time.monotonic() < deadline, "mapping file edit not reloaded" + mig.ctx(p)
            time.sleep(0.1)
        r = run.request(host.client, "GET", CREDS_PATH)
        assert r.status == 404, mig.ctx(p, r)
        assert _log_line(p, "status=404", "no-such-alias"), "the reason names it" + mig.ctx(p, r)
    finally:
        host.close()


# ---------------------------------------------------------------- live reload of the migration keys


def test_alias_object_edit_applies_live_and_restart_only_keys_are_named(mig):
    """An operator rotating a partner's external ID edits the alias object: the
    running proxy uses the new one for new sessions, with no restart. An edit
    of a migration key that is only read at startup (here roleSessionKey) is
    named in the log as needing a restart, and the running value stays."""
    run = mig.run
    old, new = f"ext-old-{run.runid}", f"ext-new-{run.runid}"
    aliases = {"default": "mig-default",
               "partner": {"arn": role_arn("mig-partner"), "externalId": old}}
    p = mig.proxy("proxy-mig-reload", aliases, roleEnv="IAM_ROLE")
    pid = p.proc.pid
    first = mig.container("mig-reload-1", p, env={"IAM_ROLE": "partner"})
    call = mig.recorder.wait_assume_role(_session_of(first), 10)
    assert call is not None and call.get("ExternalId") == old, mig.ctx(p)

    edited = json.loads(json.dumps(p.config))
    edited["aliasToARN"]["partner"]["externalId"] = new
    p.rewrite_config(edited)
    p.reload()
    mig.notes.append("config after the edit: " + json.dumps(edited["aliasToARN"]["partner"]))
    assert _log_line(p, "config reloaded from", str(p.config_path), timeout=5.0), \
        "the edit should be applied" + mig.ctx(p)
    second = mig.container("mig-reload-2", p, env={"IAM_ROLE": "partner"})
    call = mig.recorder.wait_assume_role(_session_of(second), 10)
    assert call is not None and call.get("ExternalId") == new, \
        "the edited externalId was not used for a new session" \
        + mig.ctx(p, calls=lambda c: c.get("ExternalId") in (old, new))

    restart_only = dict(edited, roleSessionKey="Env:JOB_ID")
    p.rewrite_config(restart_only)
    assert _log_line(p, 'config key "roleSessionKey" changed', "takes effect after a restart",
                     timeout=5.0), "a restart-only key must be named" + mig.ctx(p)
    third = mig.container("mig-reload-3", p, env={"IAM_ROLE": "partner", "JOB_ID": "job-9"})
    call = mig.recorder.wait_assume_role(_session_of(third), 10)
    assert call is not None, "the running roleSessionKey (none) still applies" + mig.ctx(p)
    assert p.alive() and p.proc.pid == pid, "no restart" + mig.ctx(p)


# ---------------------------------------------------------------- the documented conversion

MIGRATING_DOC = harness.REPO / "docs" / "migrating.md"


def _worked_example_config() -> dict:
    """The ec2metaproxy config of docs/migrating.md's worked example: the first
    ```json block there that sets roleEnv."""
    import re
    for block in re.findall(r"```json\n(.*?)```", MIGRATING_DOC.read_text(), re.S):
        if '"roleEnv"' in block and '"aliasToARN"' in block:
            return json.loads(block)
    raise AssertionError(f"no config with roleEnv in {MIGRATING_DOC}")


def test_the_worked_example_config_in_docs_migrating_md_does_what_it_says(mig):
    """The converted config printed in docs/migrating.md loads as written (only the
    host-specific keys replaced: listen, stateDir, metadataURL, roleMappingFile)
    and serves the lyft-era containers it describes: IAM_ROLE=web, worker@prod
    (an alias with '@'), etl@data with IAM_EXTERNAL_ID, none at all (the default),
    and session names from the com.example.service label."""
    run = mig.run
    doc = _worked_example_config()
    mapping = run.tmp / "mig-doc-mapping.json"
    _write_mapping(mapping, {})
    extra = {k: v for k, v in doc.items() if k not in (
        "aliasToARN", "defaultAlias", "listen", "stateDir", "metadataURL", "dockerHost",
        "roleMappingFile", "verbose")}
    p = mig.proxy("proxy-mig-doc", doc["aliasToARN"], default=doc["defaultAlias"],
                  roleMappingFile=str(mapping), **extra)
    assert p.wait_log("sts_region=eu-west-1", 5.0), mig.ctx(p)
    ext = f"etl-{run.runid}"
    cases = [
        ("mig-doc-web", {"IAM_ROLE": "web"}, "web", ACCOUNT, None),
        ("mig-doc-worker", {"IAM_ROLE": "worker@prod"}, "worker", ACCOUNT, None),
        ("mig-doc-etl", {"IAM_ROLE": "etl@data", "IAM_EXTERNAL_ID": ext}, "etl",
         OTHER_ACCOUNT, ext),
        ("mig-doc-none", {}, "app-default", ACCOUNT, None),
    ]
    for short, env, role, account, external_id in cases:
        c = mig.container(short, p, env=env)
        _cli_role(mig, p, c, role, account)
        call = mig.recorder.wait_assume_role(_session_of(c), 5)
        assert call and call.get("RoleArn") == role_arn(role, account) \
            and call.get("ExternalId") == external_id, mig.ctx(p, calls=_session_of(c))
    labelled = mig.container("mig-doc-label", p, env={"IAM_ROLE": "web"},
                             labels={"com.example.service": f"billing api {run.runid}"})
    cli = _cli_role(mig, p, labelled, "web")
    assert assumed_role(cli.arn)[1] == f"billing-api-{run.runid}", mig.ctx(p, cli)
