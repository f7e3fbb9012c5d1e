"""Every client of the compatibility matrix, unmodified, on its default chain,
through the container credentials door, both ways:

- relative: a bridge container labelled `a`, told only
  AWS_CONTAINER_CREDENTIALS_RELATIVE_URI; the SDK resolves it against
  169.254.170.2, which the container's namespace DNATs to the proxy's
  addressListen. Comes out with the label's role.
- full-uri: a --network host container (the host's addresses, which IMDS by
  address cannot tell apart), AWS_CONTAINER_CREDENTIALS_FULL_URI on loopback
  with the grant's token in AWS_CONTAINER_AUTHORIZATION_TOKEN (Debian
  bookworm's clients predate ..._TOKEN_FILE). Comes out with the grant's
  role, its session named after the grant.

IMDS is disabled in every client's environment, so no fallback can answer.
Where a client version has no support for a way, the test says so (xfail with
the reason); everything else must pass.
"""

from __future__ import annotations

import pytest

import harness
from conftest import DEFAULT_ALIAS, E2E
from test_container_credentials import _dnat_container_credentials
from test_matrix import CLIENTS, IN_CI, _client_env, _parse_arn, _slug

GRANT = "matrix"
GRANT_ALIAS = "b"
# Client versions without a way, from their own source (docs/compatibility.md).
UNSUPPORTED = {
    ("aws-sdk-ruby (core)", "full-uri"):
        "Debian bookworm's aws-sdk-core reads only AWS_CONTAINER_CREDENTIALS_RELATIVE_URI",
}


@pytest.fixture(scope="module")
def door(e2e: E2E):
    run = e2e.run
    token_port = harness.free_port("127.0.0.1")
    address_port = harness.free_port(run.network.gateway)
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="ccmatrix",
                            containerCredentials={
                                "listen": [f"127.0.0.1:{token_port}"],
                                "grants": {GRANT: {"alias": GRANT_ALIAS}},
                                "addressListen": [f"{run.network.gateway}:{address_port}"]})
    token = (run.tmp / "ccmatrix-state" / "grants" / GRANT / "token").read_text()
    name = f"{run.prefix}-ccm-hostnet"
    cid = harness.sh(["docker", "create", "--name", name, "--network", "host",
                      "--label", f"{harness.RUN_LABEL}={run.runid}", run.image]).stdout.strip()
    hostnet = harness.Container(name, "ccm-hostnet", cid, "", 0, {harness.RUN_LABEL: run.runid})
    run.containers[name] = hostnet
    run.start_container(hostnet, redirect=False)
    for c in CLIENTS:
        if not c.argv and not c.missing:
            c.prepare()
    yield {"proxy": proxy, "token": token, "token_port": token_port,
           "address": f"{run.network.gateway}:{address_port}", "hostnet": hostnet}
    run.remove_container(hostnet)
    proxy.stop()


@pytest.mark.parametrize("way", ["relative", "full-uri"])
@pytest.mark.parametrize("client_name", [c.name for c in CLIENTS])
def test_container_credentials_door_with_every_client(e2e, door, make_container, client_name,
                                                      way):
    client = next(c for c in CLIENTS if c.name == client_name)
    if client.missing:
        if IN_CI:
            pytest.fail(f"{client.missing} (CI must install it: scripts/e2e.sh does)")
        pytest.skip(client.missing)
    why_not = UNSUPPORTED.get((client.name, way))
    run = e2e.run
    env = dict(_client_env(run), AWS_EC2_METADATA_DISABLED="true")
    if way == "relative":
        c = make_container(f"ccm-{_slug(client.name)}", alias="a", redirect=False)
        _dnat_container_credentials(e2e, c, door["address"])
        env["AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"] = "/v2/credentials/matrix"
        want = (e2e.role_of["a"], f"{c.name}-{c.id[:12]}")
    else:
        c = door["hostnet"]
        env["AWS_CONTAINER_CREDENTIALS_FULL_URI"] = f"http://127.0.0.1:{door['token_port']}/creds"
        env["AWS_CONTAINER_AUTHORIZATION_TOKEN"] = door["token"]
        want = (e2e.role_of[GRANT_ALIAS], GRANT)
    argv = [a.replace("{moto}", run.moto.url) for a in client.argv]
    cp = run.in_netns(c, argv, timeout=60, env=env)
    got = harness.assumed_role(_parse_arn(cp.stdout)) if cp.returncode == 0 else None
    if why_not:
        assert got != want, f"{client.name} now supports {way}: drop it from UNSUPPORTED"
        pytest.xfail(why_not)
    assert got == want, (f"{client.name} ({client.version}), {way}: rc={cp.returncode} "
                         f"got {got}, want {want}\nstderr: {harness.redact(cp.stderr)[-1500:]}"
                         f"\nproxy log:\n{harness.redact(door['proxy'].tail(15))}")
    assert door["token"] not in door["proxy"].log_text(), "the token was logged"
