"""Session tags, SourceIdentity and session name templates (issue 27).

moto accepts AssumeRole's Tags, TransitiveTagKeys and SourceIdentity but
neither checks nor shows them, so the proof is what the proxy posted: every
proxy here calls STS through `StsRecorder` (migration_recorder.py), a
recording pass-through in front of moto. The same recorder stands in for a
trust policy without sts:TagSession by answering AccessDenied itself.
"""

from __future__ import annotations

import time
import urllib.error
import urllib.request

import pytest

import harness
from harness import ACCOUNT, CREDS_PATH, redact
from migration_recorder import StsCall, StsRecorder
from conftest import INSTANCE_ID
from test_migration import Mig, role_arn

ROLES = ["tags-default", "tags-web", "tags-denied"]
TAGS = {"container": "{name}", "project": "{composeProject}", "service": "{composeService}",
        "alias": "{alias}", "team": "payments", "instance": "{instanceId}"}
COMPOSE = {"com.docker.compose.project": "shop", "com.docker.compose.service": "api"}


@pytest.fixture(scope="module")
def tags_base(e2e):
    run = e2e.run
    m = Mig(e2e)
    for name in ROLES:
        run.moto.create_role(name)
    m.recorder = StsRecorder(run.network.gateway, harness.free_port(run.network.gateway),
                             run.moto.url)
    run.cleanup.push(m.recorder.stop, "stop STS recorder")
    yield m
    m.recorder.stop()


@pytest.fixture
def tags(tags_base):
    tags_base.recorder.refuse = None
    yield tags_base
    tags_base.recorder.refuse = None
    tags_base.cleanup()


def _call_for(m: Mig, p, c: harness.Container, session: str) -> StsCall:
    call = m.recorder.wait_assume_role(lambda x: x.get("RoleSessionName") == session, 15)
    assert call is not None, f"no AssumeRole for session {session}" + m.ctx(p)
    return call


def _get(addr: str, path: str):
    try:
        with urllib.request.urlopen(f"http://{addr}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_each_container_sends_its_own_tags_source_identity_and_session_name(tags):
    """A Compose-started container (its com.docker.compose.* labels), an
    unlabelled one and one of an alias with its own roleSessionName: each
    AssumeRole carries that container's values, tags that would be empty are
    left out (with the transitive key naming them), and the clients get
    credentials of the role."""
    p = tags.proxy("proxy-tags", {
        "default": "tags-default",
        "web": {"arn": role_arn("tags-web"), "roleSessionName": "web-{shortId}"},
    }, sessionTags=TAGS, transitiveTagKeys=["project"], sourceIdentity="{composeService}")
    compose = tags.container("tags-compose", p, labels=COMPOSE)
    plain = tags.container("tags-plain", p)
    web = tags.container("tags-web", p, alias="web")

    call = _call_for(tags, p, compose, f"{compose.name}-{compose.id[:12]}")
    assert call.tags() == {"container": compose.name, "project": "shop", "service": "api",
                           "alias": "default", "team": "payments",
                           "instance": INSTANCE_ID}, \
        "the instance ID is the metadata service's, read at start" + tags.ctx(p)
    assert call.transitive_tag_keys() == ["project"], tags.ctx(p)
    assert call.get("SourceIdentity") == "api", tags.ctx(p)

    call = _call_for(tags, p, plain, f"{plain.name}-{plain.id[:12]}")
    assert call.tags() == {"container": plain.name, "alias": "default", "team": "payments",
                           "instance": INSTANCE_ID}, \
        "no Compose labels: no project or service tag" + tags.ctx(p)
    assert call.transitive_tag_keys() == [], tags.ctx(p)
    assert call.get("SourceIdentity") is None, tags.ctx(p)

    call = _call_for(tags, p, web, f"web-{web.id[:12]}")
    assert call.get("RoleArn") == role_arn("tags-web"), tags.ctx(p)
    assert call.tags()["alias"] == "web", tags.ctx(p)

    for c, role in [(compose, "tags-default"), (web, "tags-web")]:
        cli = tags.run.aws_cli(c)
        got = harness.assumed_role(cli.arn)
        assert cli.ok and got and got[0] == role, tags.ctx(p, cli)


DENIED = """<ErrorResponse xmlns="https://sts.amazonaws.com/doc/2011-06-15/">
<Error><Type>Sender</Type><Code>AccessDenied</Code><Message>User: arn:aws:sts::{account}:assumed-role/host/i-0 is not authorized to perform: sts:TagSession on resource: {arn}</Message></Error>
<RequestId>c6104cbe-af31-11e0-8154-cbc7ccf896c7</RequestId></ErrorResponse>"""


def test_a_trust_policy_without_tag_session_is_said_plainly_and_no_untagged_credentials_are_served(
        tags):
    """The stand-in answers AccessDenied naming sts:TagSession for the tagged role
    (as STS does when the trust policy lacks it): the container gets the status
    of any STS failure and no credentials, the log says the fix once for the
    alias, /readyz says why it is not ready, the metric counts it, and no
    AssumeRole without tags is ever tried."""
    arn = role_arn("tags-denied")
    body = DENIED.format(account=ACCOUNT, arn=arn).encode()
    tags.recorder.refuse = lambda call: (403, body) if call.get("RoleArn") == arn else None
    metrics = f"127.0.0.1:{harness.free_port('127.0.0.1')}"
    p = tags.proxy("proxy-tags-denied", {"default": "tags-default", "denied": arn},
                   sessionTags={"team": "payments"}, metricsListen=metrics)
    c = tags.container("tags-denied", p, alias="denied")

    statuses = []
    for _ in range(3):
        r = tags.run.request(c, "GET", CREDS_PATH + "tags-denied")
        statuses.append(r.status)
        assert "AccessKeyId" not in r.body, "credentials served" + tags.ctx(p, r)
    assert statuses == [503, 503, 503], f"{statuses}" + tags.ctx(p)

    denied = tags.recorder.assume_roles(lambda x: x.get("RoleArn") == arn)
    assert denied and all(x.tags() == {"team": "payments"} for x in denied), \
        "every AssumeRole of the alias carried its tags" + tags.ctx(p)

    deadline = time.monotonic() + 5
    fix = 'add "sts:TagSession" to the Action of the trust policy statement of ' + arn
    while time.monotonic() < deadline:
        lines = [line for line in p.log_text().splitlines() if fix in line]
        if lines:
            break
        time.sleep(0.1)
    assert len(lines) == 1, "the fix is logged once for the alias:\n" + redact("\n".join(lines)) \
        + tags.ctx(p)
    assert "alias denied" in lines[0] and "no untagged credentials are served" in lines[0]

    status, ready = _get(metrics, "/readyz")
    assert status == 503 and "alias denied: STS refused TagSession" in ready, ready
    status, text = _get(metrics, "/metrics")
    counted = [line for line in text.splitlines()
               if line.startswith("ec2metaproxy_sts_tagging_errors_total{")
               and 'alias="denied"' in line and 'cause="TagSession"' in line]
    assert counted and float(counted[0].rsplit(" ", 1)[1]) >= 3, text[-3000:]


def test_a_container_started_by_docker_compose_sends_its_project_and_service(tags):
    """The Compose tags come from the labels docker-compose itself writes, not
    from labels a test sets by hand: a service started with `docker-compose
    up` sends its real project and service names."""
    run = tags.run
    project = f"{run.prefix}-shop".lower()
    compose_file = run.tmp / "compose-tags.yml"
    compose_file.write_text(
        'version: "2.4"\n'
        "services:\n"
        "  api:\n"
        f"    image: {run.image}\n"
        f"    labels:\n      {harness.RUN_LABEL}: \"{run.runid}\"\n"
        "    networks: [net]\n"
        "networks:\n"
        "  net:\n"
        "    external: true\n"
        f"    name: {run.network.name}\n")
    compose = ["docker-compose", "-p", project, "-f", str(compose_file)]
    p = tags.proxy("proxy-compose", {"default": "tags-default"}, sessionTags=TAGS,
                   sourceIdentity="{composeService}")
    harness.sh(compose + ["up", "--no-start"], timeout=120)
    try:
        cid = harness.sh(compose + ["ps", "-q", "api"]).stdout.strip()
        name = harness.sh(["docker", "inspect", "--format", "{{.Name}}", cid]).stdout.strip("/\n")
        c = harness.Container(name, "compose-api", cid, "", 0, {harness.RUN_LABEL: run.runid})
        run.containers[name] = c
        tags.containers.append(c)
        run.start_container(c, redirect=p)
        labels = harness.sh(["docker", "inspect", "--format",
                             '{{index .Config.Labels "com.docker.compose.project"}} '
                             '{{index .Config.Labels "com.docker.compose.service"}}',
                             cid]).stdout.split()
        assert labels == [project, "api"], f"docker-compose's own labels: {labels}"

        call = _call_for(tags, p, c, f"{c.name}-{c.id[:12]}")
        got = call.tags()
        assert (got.get("project"), got.get("service")) == (project, "api"), tags.ctx(p)
        assert call.get("SourceIdentity") == "api", tags.ctx(p)
        cli = run.aws_cli(c)
        role = harness.assumed_role(cli.arn)
        assert cli.ok and role and role[0] == "tags-default", tags.ctx(p, cli)
    finally:
        harness.sh(compose + ["down", "--timeout", "1"], check=False, timeout=120)
