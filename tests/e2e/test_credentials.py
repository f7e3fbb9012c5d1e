"""Which credentials each container receives, as seen by real AWS clients.

Every client here runs inside the container's network namespace and finds the
proxy at the real metadata address (169.254.169.254:80), with no endpoint
override for IMDS and no other credentials available: whatever identity STS
reports is the one the proxy handed out.
"""

from __future__ import annotations

import json
import re
from concurrent.futures import ThreadPoolExecutor

from conftest import DEFAULT_ALIAS, E2E
from harness import ACCOUNT, CREDS_EXT_PATH, CREDS_PATH, assumed_role

TIMESTAMP_RE = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$")


def assert_role(e2e: E2E, res, alias: str, container) -> None:
    """The client succeeded as `assumed-role/<alias's role>/<session naming the container>`."""
    assert res.ok, f"{res.name} got no identity" + e2e.ctx(res)
    parsed = assumed_role(res.arn)
    assert parsed, f"{res.name}: not an assumed-role ARN: {res.arn}" + e2e.ctx(res)
    role, session = parsed
    assert res.arn.startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/")
    assert role == e2e.role_of[alias], (
        f"{res.name} in {container.name} (alias {alias!r}) got role {role!r}, "
        f"want {e2e.role_of[alias]!r}" + e2e.ctx(res))
    # The session name is derived from the container name; only check it loosely.
    assert 2 <= len(session) <= 64, session
    assert container.short in session, (
        f"session name {session!r} should name container {container.name!r}" + e2e.ctx(res))


def test_labelled_container_gets_its_alias_role_in_cli_boto3_and_rust_sdk(e2e, make_container):
    """The core promise: a container labelled ec2metaproxy.RoleAlias=a is, to every
    AWS SDK inside it, role a. Three independent IMDS client implementations
    (botocore via the CLI, boto3 in-process, aws-config in Rust) must all agree."""
    c = make_container("labelled", alias="a")
    assert_role(e2e, e2e.run.aws_cli(c), "a", c)
    assert_role(e2e, e2e.run.boto3(c), "a", c)
    rust = e2e.run.rust_client(c)
    assert_role(e2e, rust, "a", c)
    assert rust.access_key_id and rust.expiration != "none", e2e.ctx(rust)
    # aws-config's IMDS provider on its own too (not only through the default chain).
    assert_role(e2e, e2e.run.rust_client(c, imds_only=True), "a", c)


def test_unlabelled_container_gets_the_default_alias_role(e2e, make_container):
    """No label means defaultAlias (the Go fork answered 500 here)."""
    c = make_container("unlabelled")
    assert_role(e2e, e2e.run.aws_cli(c), DEFAULT_ALIAS, c)
    assert_role(e2e, e2e.run.rust_client(c), DEFAULT_ALIAS, c)


def test_unknown_alias_gets_no_credentials_and_never_the_default(e2e, make_container):
    """A label naming an alias that is not configured is a mistake that must fail
    closed: 404 on the credential routes, so the SDKs find no credentials. Falling
    back to the default role would hand out a role nobody asked for."""
    c = make_container("unknown-alias", alias="no-such-alias")
    run = e2e.run
    listing, doc, ext = run.http(c, [
        dict(method="GET", path=CREDS_PATH),
        dict(method="GET", path=CREDS_PATH + e2e.role_of[DEFAULT_ALIAS]),
        dict(method="GET", path=CREDS_EXT_PATH),
    ])
    assert listing.status == 404, "listing must 404 for an unknown alias" + e2e.ctx(listing)
    assert doc.status == 404, "default role's document must 404" + e2e.ctx(doc)
    assert ext.status == 404, "extended listing must 404" + e2e.ctx(ext)
    for r in (listing, doc, ext):
        assert "SecretAccessKey" not in r.body, e2e.ctx(r)

    cli = run.aws_cli(c, timeout=90)
    assert cli.rc != 0, "the CLI must find no credentials" + e2e.ctx(cli)
    assert "credentials" in (cli.stderr + cli.stdout).lower(), e2e.ctx(cli)
    assert not cli.arn, e2e.ctx(cli)

    b3 = run.boto3(c, timeout=90)
    assert b3.rc != 0 and not b3.arn, "boto3 must find no credentials" + e2e.ctx(b3)


def test_two_containers_with_different_aliases_each_get_their_own_role_concurrently(
        e2e, make_container):
    """Two containers asking at the same moment must not get each other's role
    (a per-IP answer, not a last-writer-wins one)."""
    ca = make_container("pair-a", alias="a")
    cb = make_container("pair-b", alias="b")
    run = e2e.run
    jobs = [(ca, "a", run.aws_cli), (cb, "b", run.aws_cli),
            (ca, "a", run.rust_client), (cb, "b", run.rust_client),
            (ca, "a", run.boto3), (cb, "b", run.boto3)]
    with ThreadPoolExecutor(max_workers=len(jobs)) as pool:
        futures = [(c, alias, pool.submit(fn, c)) for c, alias, fn in jobs]
        for c, alias, fut in futures:
            assert_role(e2e, fut.result(timeout=120), alias, c)


def test_session_policy_label_still_yields_credentials(e2e, make_container):
    """ec2metaproxy.Policy narrows the session with an inline session policy;
    the container must still be served its alias's role."""
    policy = json.dumps({"Version": "2012-10-17", "Statement": [
        {"Effect": "Allow", "Action": ["sts:GetCallerIdentity", "s3:GetObject"], "Resource": "*"}]})
    c = make_container("policy", alias="b", policy=policy)
    assert_role(e2e, e2e.run.aws_cli(c), "b", c)
    assert_role(e2e, e2e.run.rust_client(c), "b", c)

