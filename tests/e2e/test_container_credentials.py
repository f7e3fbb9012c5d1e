"""The container credentials door, with real parts. By token: a plain host
process (not a container) running boto3 on its default chain, with
AWS_CONTAINER_CREDENTIALS_FULL_URI on loopback and the grant's token file,
gets its grant's role from moto; a wrong token, and a rotated one, get none.
By address: bridge containers through the DNAT of 169.254.170.2.

IMDS is disabled in the client's environment: on this machine 169.254.169.254
is not reachable, and a fallback must not be what answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import urllib.error
import urllib.request

from conftest import DEFAULT_ALIAS, E2E
from harness import ACCOUNT, assumed_role, free_port, proxy_bin, sh, venv_bin

GRANT = "host-b"
ALIAS = "b"


def whoami(e2e: E2E, url: str, **token) -> subprocess.CompletedProcess:
    run = e2e.run
    env = dict(run.client_env(), AWS_CONTAINER_CREDENTIALS_FULL_URI=url,
               AWS_EC2_METADATA_DISABLED="true", **token)
    return subprocess.run([sys.executable, "-c", run.BOTO3_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_host_process_with_a_grant_token_file_gets_the_grants_role(e2e: E2E):
    run = e2e.run
    port = free_port("127.0.0.1")
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="ccdoor",
                            containerCredentials={"listen": [f"127.0.0.1:{port}"],
                                                  "grants": {GRANT: {"alias": ALIAS}}})
    token_file = run.tmp / "ccdoor-state" / "grants" / GRANT / "token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    old_token = token_file.read_text()
    assert len(old_token) == 43 and not old_token.endswith("\n")
    url = f"http://127.0.0.1:{port}/creds"

    ok = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    assert ok.returncode == 0, ok.stderr[-2000:] + e2e.ctx(proxy.tail(20))
    doc = json.loads(ok.stdout)
    assert doc["method"] == "container-role", doc
    assert assumed_role(doc["arn"]) == (e2e.role_of[ALIAS], GRANT), doc["arn"]
    assert doc["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/")
    assert proxy.wait_log(f"grant:{GRANT}"), proxy.tail(20)

    wrong = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN="A" * 43)
    assert wrong.returncode != 0, wrong.stdout
    assert proxy.wait_log("Authorization is no grant's current token"), proxy.tail(20)

    rotated = subprocess.run([str(proxy_bin()), "-c", str(proxy.config_path),
                              "--rotate-grant", GRANT], capture_output=True, text=True, timeout=30)
    assert rotated.returncode == 0, rotated.stderr
    assert old_token not in rotated.stdout + rotated.stderr
    new_token = token_file.read_text()
    assert new_token != old_token
    time.sleep(2)  # the proxy re-reads token files every second
    stale = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN=old_token)
    assert stale.returncode != 0, stale.stdout
    fresh = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    assert fresh.returncode == 0, fresh.stderr[-2000:] + e2e.ctx(proxy.tail(20))

    log = proxy.log_text()
    for token in (old_token, new_token):
        assert token not in log, "a grant token reached the proxy log"


CC_IP = "169.254.170.2"


def _dnat_container_credentials(e2e: E2E, c, dest: str) -> None:
    """169.254.170.2:80 to `dest` inside `c`'s namespace only, tagged with the
    run's comment so that removing the container removes the rule."""
    run = e2e.run
    sh(["nsenter", "-t", str(c.pid), "-n", "--", "iptables", "-w", "5", "-t", "nat",
        "-A", "OUTPUT", "-d", f"{CC_IP}/32", "-p", "tcp", "--dport", "80",
        "-m", "comment", "--comment", run.comment, "-j", "DNAT", "--to-destination", dest])
    c.redirected = True


def test_bridge_containers_get_their_labels_roles_by_relative_uri(e2e: E2E):
    """AWS_CONTAINER_CREDENTIALS_RELATIVE_URI, resolved by the SDK against
    169.254.170.2 and sent to the proxy by DNAT: boto3 and the AWS CLI on
    their default chains (IMDS disabled) come out with the role of their
    container's label, and an unlabelled container with the default alias's,
    each in its own session; no token is involved."""
    run = e2e.run
    port = free_port(run.network.gateway)
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="ccaddress",
                            containerCredentials={
                                "addressListen": [f"{run.network.gateway}:{port}"]})
    env = {"AWS_CONTAINER_CREDENTIALS_RELATIVE_URI": "/v2/credentials/any",
           "AWS_EC2_METADATA_DISABLED": "true"}
    for short, alias in (("cc-addr-a", "a"), ("cc-addr-plain", None)):
        c = run.run_container(short, alias=alias, redirect=False)
        try:
            _dnat_container_credentials(e2e, c, f"{run.network.gateway}:{port}")
            res = run.boto3(c, env=env)
            assert res.ok, res.describe() + e2e.ctx(proxy.tail(20))
            assert json.loads(res.stdout)["method"] == "container-role", res.stdout
            want = e2e.role_of[alias or DEFAULT_ALIAS]
            assert assumed_role(res.arn) == (want, f"{c.name}-{c.id[:12]}"), res.arn
            cli = run.in_netns(c, [venv_bin("aws"), "sts", "get-caller-identity", "--output",
                                   "json"], env=dict(run.client_env(), **env))
            assert cli.returncode == 0, cli.stderr[-2000:] + e2e.ctx(proxy.tail(20))
            assert assumed_role(json.loads(cli.stdout)["Arn"])[0] == want, cli.stdout
            assert proxy.wait_log(f"container={c.name}"), proxy.tail(20)
        finally:
            run.remove_container(c)


def test_a_caller_no_container_holds_gets_a_json_404_by_address(e2e: E2E):
    """The gateway itself (no container holds its address) asks the door by
    address: 404 with a JSON error body and a log line with the reason,
    never the default alias's credentials."""
    run = e2e.run
    port = free_port(run.network.gateway)
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="ccaddress-none",
                            containerCredentials={
                                "addressListen": [f"{run.network.gateway}:{port}"]})
    try:
        urllib.request.urlopen(f"http://{run.network.gateway}:{port}/v2/credentials/x",
                               timeout=5)
        raise AssertionError("served a caller no container holds")
    except urllib.error.HTTPError as e:
        assert e.code == 404, e.code
        body = json.loads(e.read().decode())
        assert body["code"] == "NotFound" and "AccessKeyId" not in body, body
    assert proxy.wait_log("no container holds the caller's address"), proxy.tail(20)
