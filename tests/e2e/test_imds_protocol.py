"""IMDS protocol behaviour over real HTTP from inside containers: IMDSv2 tokens,
IMDSv1, token binding to the caller, unknown callers, request ids."""

from __future__ import annotations

import re
import socket

from conftest import E2E
from harness import CREDS_PATH, TOKEN_HEADER, TTL_HEADER, HttpResult

TOKEN_PATH = "/latest/api/token"


def get_token(e2e: E2E, c, ttl: str = "21600") -> HttpResult:
    return e2e.run.request(c, "PUT", TOKEN_PATH, {TTL_HEADER: ttl})


def test_imdsv2_token_put_echoes_ttl_and_unlocks_credentials(e2e, make_container):
    """IMDSv2: PUT /latest/api/token returns a token and echoes the TTL header
    (aws-config refuses a token response without it); a GET carrying that token
    gets the role."""
    c = make_container("v2", alias="a")
    for ttl in ("21600", "1", "300"):
        tok = get_token(e2e, c, ttl)
        assert tok.status == 200, e2e.ctx(tok)
        assert tok.body and "\n" not in tok.body.strip("\n"), e2e.ctx(tok)
        assert tok.header(TTL_HEADER) == ttl, f"TTL header must be echoed as {ttl}" + e2e.ctx(tok)
    tok = get_token(e2e, c)
    listing = e2e.run.request(c, "GET", CREDS_PATH, {TOKEN_HEADER: tok.body})
    assert listing.status == 200 and listing.body == e2e.role_of["a"], e2e.ctx(tok, listing)


def test_token_put_with_bad_ttl_is_400(e2e, make_container):
    """A missing, zero, non-numeric or > 21600 TTL is a client error (400), which
    botocore and aws-config treat as final instead of retrying."""
    c = make_container("badttl", alias="a")
    results = e2e.run.http(c, [
        dict(method="PUT", path=TOKEN_PATH, headers={}),
        dict(method="PUT", path=TOKEN_PATH, headers={TTL_HEADER: "0"}),
        dict(method="PUT", path=TOKEN_PATH, headers={TTL_HEADER: "abc"}),
        dict(method="PUT", path=TOKEN_PATH, headers={TTL_HEADER: "21601"}),
    ])
    for r in results:
        assert r.status == 400, e2e.ctx(r)


def test_imdsv1_get_without_token_is_served(e2e, make_container):
    """IMDSv1 (no token at all) still works: botocore, Go, Ruby and JS fall back
    to it, and older SDKs only speak it."""
    c = make_container("v1", alias="b")
    listing = e2e.run.request(c, "GET", CREDS_PATH)
    assert listing.status == 200 and listing.body == e2e.role_of["b"], e2e.ctx(listing)
    doc = e2e.run.request(c, "GET", CREDS_PATH + e2e.role_of["b"])
    assert doc.status == 200 and doc.json()["Code"] == "Success", e2e.ctx(doc)


def test_bad_token_is_401(e2e, make_container):
    """A token that the proxy did not issue is refused with 401 (not served as v1)."""
    c = make_container("badtoken", alias="a")
    for bogus in ("not-a-token", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA"):
        r = e2e.run.request(c, "GET", CREDS_PATH, {TOKEN_HEADER: bogus})
        assert r.status == 401, e2e.ctx(r)
        assert "SecretAccessKey" not in r.body and e2e.role_of["a"] not in r.body, e2e.ctx(r)


def test_token_from_one_container_is_401_in_another(e2e, make_container):
    """Tokens are bound to the caller: a token leaked from container A is useless
    from container B (and does not turn into B's or A's credentials)."""
    ca = make_container("tok-a", alias="a")
    cb = make_container("tok-b", alias="b")
    tok = get_token(e2e, ca)
    assert tok.status == 200, e2e.ctx(tok)
    own = e2e.run.request(ca, "GET", CREDS_PATH, {TOKEN_HEADER: tok.body})
    assert own.status == 200 and own.body == e2e.role_of["a"], e2e.ctx(tok, own)
    stolen = e2e.run.request(cb, "GET", CREDS_PATH, {TOKEN_HEADER: tok.body})
    assert stolen.status == 401, e2e.ctx(tok, stolen)
    stolen_doc = e2e.run.request(cb, "GET", CREDS_PATH + e2e.role_of["a"], {TOKEN_HEADER: tok.body})
    assert stolen_doc.status == 401, e2e.ctx(stolen_doc)


def test_request_from_an_ip_that_is_no_container_is_404(e2e):
    """The host itself (the gateway IP) is not a container: it gets nothing."""
    p = e2e.proxy
    with socket.create_connection((p.ip, p.port), timeout=5) as s:
        s.settimeout(5)
        s.sendall(f"GET {CREDS_PATH} HTTP/1.1\r\nHost: {p.ip}\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while len(data) < 65536:
            chunk = s.recv(4096)
            if not chunk:
                break
            data += chunk
    text = data.decode("utf-8", "replace")
    status_line = text.split("\r\n", 1)[0]
    assert re.match(r"HTTP/1\.[01] 404", status_line), (
        f"request from {p.ip} (not a container) got {status_line!r}" + e2e.ctx(text))
    assert "SecretAccessKey" not in text


def test_every_response_carries_a_request_id_that_is_logged(e2e, make_container):
    """X-Request-Id ties a client's response to the proxy's log lines."""
    c = make_container("reqid", alias="a")
    rs = e2e.run.http(c, [
        dict(method="GET", path=CREDS_PATH),
        dict(method="PUT", path=TOKEN_PATH, headers={TTL_HEADER: "60"}),
        dict(method="GET", path="/latest/meta-data/instance-id"),
        dict(method="GET", path="/latest/meta-data/identity-credentials/ec2/info"),
    ])
    for r in rs:
        rid = r.header("X-Request-Id")
        assert rid, "no X-Request-Id header" + e2e.ctx(r)
        assert e2e.proxy.wait_log(f"request id={rid}"), f"no 'request id={rid}' log line" + e2e.ctx(r)
        assert e2e.proxy.wait_log(f"response id={rid}"), (
            f"no 'response id={rid}' log line" + e2e.ctx(r))


def test_token_put_through_a_forwarder_or_on_a_dated_path_is_403(e2e, make_container):
    """IMDSv2 hop protection as AWS does it: a token PUT carrying X-Forwarded-For
    (a proxy inside the container relaying for someone else) and a PUT on a dated
    path are refused with 403, which SDKs take as "fall back to IMDSv1"."""
    c = make_container("put403", alias="a")
    fwd, dated = e2e.run.http(c, [
        dict(method="PUT", path=TOKEN_PATH, headers={TTL_HEADER: "60", "X-Forwarded-For": "10.9.9.9"}),
        dict(method="PUT", path="/2021-03-23/api/token", headers={TTL_HEADER: "60"}),
    ])
    assert fwd.status == 403, e2e.ctx(fwd)
    assert dated.status == 403, e2e.ctx(dated)


def test_get_with_token_and_x_forwarded_for_is_403_not_401(e2e, make_container):
    """A 401 here would make Go and JS SDKs fetch a new token, be refused again,
    and loop; 403 ends it."""
    c = make_container("xff", alias="a")
    tok = get_token(e2e, c, "60")
    assert tok.status == 200, e2e.ctx(tok)
    r = e2e.run.request(c, "GET", CREDS_PATH,
                        {TOKEN_HEADER: tok.body, "X-Forwarded-For": "10.9.9.9"})
    assert r.status == 403, e2e.ctx(tok, r)


def test_head_and_dated_api_versions_behave_like_get_on_latest(e2e, make_container):
    """HEAD answers like GET without a body; /2016-09-02/ is the same as /latest/."""
    c = make_container("headdated", alias="b")
    role = e2e.role_of["b"]
    head, dated, dated_doc = e2e.run.http(c, [
        dict(method="HEAD", path=CREDS_PATH),
        dict(method="GET", path="/2016-09-02/meta-data/iam/security-credentials/"),
        dict(method="GET", path="/2016-09-02/meta-data/iam/security-credentials/" + role),
    ])
    assert head.status == 200 and head.body == "", e2e.ctx(head)
    assert dated.status == 200 and dated.body == role, e2e.ctx(dated)
    assert dated_doc.status == 200 and dated_doc.json()["Code"] == "Success", e2e.ctx(dated_doc)
