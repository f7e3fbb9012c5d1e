"""Whole-log checks over everything the suite did. Marked `last`: they run after
every other test, on the complete proxy log of the run."""

from __future__ import annotations

import re

import pytest

from conftest import CANARY, E2E
from harness import CREDS_PATH, TOKEN_HEADER, TTL_HEADER


def _exercise(e2e: E2E, make_container) -> None:
    """Make sure at least one full credentials exchange is in the log even when
    this file is run alone."""
    c = make_container("logcheck", alias="a")
    tok = e2e.run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "60"})
    h = {TOKEN_HEADER: tok.body}
    e2e.run.http(c, [dict(method="GET", path=CREDS_PATH, headers=h),
                     dict(method="GET", path=CREDS_PATH + e2e.role_of["a"], headers=h),
                     dict(method="GET", path=CREDS_PATH + e2e.role_of["a"])])
    e2e.run.rust_client(c)
    e2e.run.boto3(c)


@pytest.mark.last
def test_proxy_log_never_contains_a_secret_any_client_received(e2e, make_container):
    """Logs are shipped and read widely: no SecretAccessKey or session Token that
    any client of this run received may appear in the proxy's log, nor the
    upstream canary."""
    _exercise(e2e, make_container)
    secrets = set(e2e.run.seen_secrets)
    assert secrets, "no client received credentials in this run: nothing to check"
    log = e2e.proxy.log_text()
    assert log.strip(), "the proxy wrote no log at all"
    leaked = sorted(s for s in secrets if s in log)
    # Tokens are long; a log that prints a long prefix of one leaks it too.
    leaked += sorted(s for s in secrets if len(s) >= 40 and s[:32] in log and s not in leaked)
    assert not leaked, (f"{len(leaked)} of {len(secrets)} secrets found in the proxy log, "
                        f"e.g. at: " + ", ".join(
                            f"line {i + 1}" for i, line in enumerate(log.splitlines())
                            if any(s[:32] in line for s in leaked))[:500])
    assert CANARY not in log


@pytest.mark.last
def test_every_request_log_line_has_a_matching_response_line(e2e, make_container):
    """Each `request id=X` is closed by a `response id=X` (status, container,
    alias, latency), so every answer is auditable."""
    _exercise(e2e, make_container)
    e2e.proxy.wait_log("response id=", timeout=1)
    log = e2e.proxy.log_text()
    req_ids = re.findall(r"request id=([0-9A-Za-z-]+)", log)
    resp_ids = re.findall(r"response id=([0-9A-Za-z-]+)", log)
    assert req_ids, "no `request id=` lines in the proxy log"
    missing = [i for i in req_ids if i not in set(resp_ids)]
    if missing:  # give lines still being written a moment
        e2e.proxy.wait_log(f"response id={missing[-1]}", timeout=2)
        resp_ids = re.findall(r"response id=([0-9A-Za-z-]+)", e2e.proxy.log_text())
        missing = [i for i in req_ids if i not in set(resp_ids)]
    assert not missing, f"{len(missing)} requests without a response line: {missing[:5]}"
    orphans = [i for i in resp_ids if i not in set(req_ids)]
    assert not orphans, f"response lines without a request line: {orphans[:5]}"
    assert len(set(req_ids)) == len(req_ids), "request ids must be unique"
    for line in log.splitlines():
        if re.search(r"response id=", line):
            for key in ("status=", "ms="):
                assert key in line, f"response line without {key}: {line}"


def test_every_response_carries_a_request_id_that_is_logged(e2e, make_container):
    """X-Request-Id ties a client's response to the proxy's log lines."""
    c = make_container("reqid", alias="a")
    rs = e2e.run.http(c, [
        dict(method="GET", path=CREDS_PATH),
        dict(method="PUT", path="/latest/api/token", headers={TTL_HEADER: "60"}),
        dict(method="GET", path="/latest/meta-data/instance-id"),
        dict(method="GET", path="/latest/meta-data/identity-credentials/ec2/info"),
    ])
    for r in rs:
        rid = r.header("X-Request-Id")
        assert rid, "no X-Request-Id header" + e2e.ctx(r)
        assert e2e.proxy.wait_log(f"request id={rid}"), f"no 'request id={rid}' log line" + e2e.ctx(r)
        assert e2e.proxy.wait_log(f"response id={rid}"), (
            f"no 'response id={rid}' log line" + e2e.ctx(r))

