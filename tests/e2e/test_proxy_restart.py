"""A proxy restart (upgrade, config change, crash) as containers see it."""

from __future__ import annotations

from harness import CREDS_PATH, TOKEN_HEADER, TTL_HEADER


def test_imdsv2_token_issued_before_a_restart_is_still_valid_after_it(e2e, make_container):
    """aws-config caches its IMDSv2 token for hours and retries the same token on
    401, so a restart that forgot its tokens would break every Rust client on the
    host. The proxy exits promptly on SIGTERM and, restarted with the same
    stateDir, accepts the tokens it issued before."""
    c = make_container("restart", alias="a")
    run = e2e.run
    tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "21600"})
    assert tok.status == 200, e2e.ctx(tok)
    before = run.request(c, "GET", CREDS_PATH, {TOKEN_HEADER: tok.body})
    assert before.status == 200 and before.body == e2e.role_of["a"], e2e.ctx(before)

    took = e2e.proxy.restart()
    assert not e2e.proxy.killed, "proxy did not exit within 10 s of SIGTERM" + e2e.ctx()
    print(f"proxy exited {took * 1000:.0f} ms after SIGTERM with rc {e2e.proxy.last_exit}")

    after = run.request(c, "GET", CREDS_PATH, {TOKEN_HEADER: tok.body})
    assert after.status == 200 and after.body == e2e.role_of["a"], (
        "a token issued before the restart was refused after it" + e2e.ctx(tok, after))
    doc = run.request(c, "GET", CREDS_PATH + e2e.role_of["a"], {TOKEN_HEADER: tok.body})
    assert doc.status == 200 and doc.json()["Code"] == "Success", e2e.ctx(doc)
    rust = run.rust_client(c)
    assert rust.ok and f"assumed-role/{e2e.role_of['a']}/" in rust.arn, e2e.ctx(rust)
