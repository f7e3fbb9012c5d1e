"""Passthrough to the host's real IMDS (here a fake upstream): ordinary metadata
flows through; the host's own credentials and identity never do, however the
path is spelled."""

from __future__ import annotations

import pytest

from conftest import CANARY, INSTANCE_ID
from harness import TOKEN_HEADER, TTL_HEADER

# Spellings of routes that would hand a container the host's credentials or
# identity if passed through (kube2iam, lyft and the Go fork leaked through
# several of these).
HOST_SECRET_PATHS = [
    "/latest/meta-data/iam/security-credentials/HostRole",
    "/latest/meta-data/iam/security-credentials/HostRole/",
    "/latest/meta-data//iam/security-credentials/HostRole",
    "/latest/meta-data/./iam/security-credentials/HostRole",
    "/latest/meta-data/x/../iam/security-credentials/HostRole",
    "/latest/meta-data/%69am/security-credentials/HostRole",
    "/latest/meta-data/iam%2Fsecurity-credentials/HostRole",
    "/latest/meta-data/iam/security-credentials;x=1/HostRole",
    "/2016-09-02/meta-data/iam/security-credentials/HostRole",
    "/latest/meta-data/iam/security-credentials-extended/HostRole",
    "/latest/meta-data/iam/info",
    "/latest/meta-data/iam/info/",
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance",
    "/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance/",
    "/latest/meta-data//identity-credentials/ec2/security-credentials/ec2-instance",
    "/latest/meta-data/identity-credentials/ec2/info",
    "/latest/meta-data/%69dentity-credentials/ec2/security-credentials/ec2-instance",
]


def test_ordinary_metadata_passes_through_with_v1_and_v2(e2e, make_container):
    """instance-id is not the proxy's business: it comes from the upstream IMDS,
    whether the container speaks IMDSv1 or IMDSv2."""
    c = make_container("pass", alias="a")
    run = e2e.run
    v1 = run.request(c, "GET", "/latest/meta-data/instance-id")
    assert v1.status == 200 and v1.body == INSTANCE_ID, e2e.ctx(v1)
    tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
    assert tok.status == 200, e2e.ctx(tok)
    v2 = run.request(c, "GET", "/latest/meta-data/instance-id", {TOKEN_HEADER: tok.body})
    assert v2.status == 200 and v2.body == INSTANCE_ID, e2e.ctx(tok, v2)
    dated = run.request(c, "GET", "/2016-09-02/meta-data/placement/availability-zone")
    assert dated.status in (200, 404), e2e.ctx(dated)
    missing = run.request(c, "GET", "/latest/meta-data/no-such-thing")
    assert missing.status == 404, e2e.ctx(missing)


@pytest.mark.parametrize("with_token", [False, True], ids=["imdsv1", "imdsv2"])
def test_host_credentials_and_identity_never_reach_a_container(e2e, make_container, with_token):
    """The canary the fake upstream serves on the host-credential and identity
    routes must not appear in any answer, for any spelling of those routes."""
    c = make_container("canary-v2" if with_token else "canary-v1", alias="a")
    run = e2e.run
    headers = {}
    if with_token:
        tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
        assert tok.status == 200, e2e.ctx(tok)
        headers = {TOKEN_HEADER: tok.body}
    results = run.http(c, [dict(method="GET", path=p, headers=headers)
                           for p in HOST_SECRET_PATHS])
    leaks = [r for r in results
             if CANARY in r.body or (r.status == 200 and "HostRole" in r.body)]
    assert not leaks, "host credentials/identity leaked" + e2e.ctx(*leaks)
    for r in results:
        assert r.status is not None and r.status != 200 or "iam/info" in r.url, (
            "expected a refusal" + e2e.ctx(r))
        assert r.status is None or r.status < 500, "a 5xx burns SDK retries" + e2e.ctx(r)
    forwarded = [p for m, p in run.upstream.seen
                 if "security-credentials" in p or "identity-credentials" in p or "iam/info" in p]
    assert not forwarded, f"proxy forwarded host-credential routes upstream: {forwarded}"
