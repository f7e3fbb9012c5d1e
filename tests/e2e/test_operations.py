"""Operating the proxy on a live host: config reload, health and metrics, JSON logs."""

from __future__ import annotations

import concurrent.futures
import json
import time
import urllib.request

from harness import CREDS_PATH, TOKEN_HEADER, TTL_HEADER


def _wait_listing(e2e, c, want_status: int, want_body: str | None, seconds: float):
    """Poll the role listing from `c` (bounded) until it answers as wanted."""
    seen = []
    deadline = time.monotonic() + seconds
    for _ in range(200):
        r = e2e.run.request(c, "GET", CREDS_PATH, timeout=2)
        seen.append(r)
        if r.status == want_status and (want_body is None or r.body == want_body):
            return True, seen
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return False, seen


def test_config_change_is_picked_up_live_by_file_watch_and_by_sighup(e2e, make_container):
    """Adding an alias is a config edit, not an outage: the running proxy sees the
    file replaced (as editors and config managers do, by rename) and serves the new
    alias's role to an already running container; removing it again and sending
    SIGHUP takes it away. No restart, and other containers are unaffected."""
    run, proxy = e2e.run, e2e.proxy
    role_c = "e2e-role-c"
    arn_c = run.moto.create_role(role_c)
    c = make_container("reload-c", alias="c")
    other = make_container("reload-a", alias="a")
    original = dict(proxy.config)
    pid = proxy.proc.pid

    before = run.request(c, "GET", CREDS_PATH)
    assert before.status == 404, "alias c is not configured yet" + e2e.ctx(before)
    try:
        added = json.loads(json.dumps(original))
        added["aliasToARN"]["c"] = arn_c
        proxy.rewrite_config(added)
        ok, seen = _wait_listing(e2e, c, 200, role_c, seconds=10)
        assert ok, "file change not picked up within 10 s" + e2e.ctx(*seen[-2:])
        cli = run.aws_cli(c)
        assert cli.ok and f"assumed-role/{role_c}/" in cli.arn, e2e.ctx(cli)
        still = run.request(other, "GET", CREDS_PATH)
        assert still.status == 200 and still.body == e2e.role_of["a"], e2e.ctx(still)
    finally:
        proxy.rewrite_config(original)
        proxy.reload()
    ok, seen = _wait_listing(e2e, c, 404, None, seconds=10)
    assert ok, "alias c still served after the config dropped it and SIGHUP" + e2e.ctx(*seen[-2:])
    assert proxy.alive() and proxy.proc.pid == pid, "the proxy must not restart" + e2e.ctx()


def test_invalid_config_edit_is_refused_and_the_last_good_one_keeps_serving(e2e, make_container):
    """A broken edit (here: defaultAlias naming no alias) must not take the proxy
    down or change what containers get."""
    run, proxy = e2e.run, e2e.proxy
    c = make_container("badreload", alias="b")
    original = dict(proxy.config)
    try:
        broken = json.loads(json.dumps(original))
        broken["defaultAlias"] = "no-such-alias"
        proxy.rewrite_config(broken)
        proxy.reload()
        time.sleep(1.0)
        assert proxy.alive(), "an invalid config edit killed the proxy" + e2e.ctx()
        r = run.request(c, "GET", CREDS_PATH)
        assert r.status == 200 and r.body == e2e.role_of["b"], e2e.ctx(r)
    finally:
        proxy.rewrite_config(original)
        proxy.reload()
    time.sleep(0.5)
    r = run.request(c, "GET", CREDS_PATH)
    assert r.status == 200 and r.body == e2e.role_of["b"], e2e.ctx(r)


def _get(addr, path):
    try:
        with urllib.request.urlopen(f"http://{addr[0]}:{addr[1]}{path}", timeout=5) as resp:
            return resp.status, resp.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


def test_health_and_metrics_listener_reports_ready_and_counts_without_container_names(
        e2e, make_container):
    """metricsListen serves /healthz, /readyz (Docker index synced) and Prometheus
    /metrics that move with traffic; metric labels never name containers (names can
    carry customer data, and per-container labels explode cardinality)."""
    c = make_container("metrics", alias="a")
    r = e2e.run.request(c, "GET", CREDS_PATH)
    assert r.status == 200, e2e.ctx(r)
    assert _get(e2e.metrics_addr, "/healthz")[0] == 200
    status, body = _get(e2e.metrics_addr, "/readyz")
    assert status == 200, f"/readyz {status}: {body}" + e2e.ctx()
    status, before = _get(e2e.metrics_addr, "/metrics")
    assert status == 200 and "# TYPE" in before, before[:500]
    for _ in range(3):
        e2e.run.request(c, "GET", CREDS_PATH)
    _, after = _get(e2e.metrics_addr, "/metrics")

    def total(text):
        return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines()
                   if line and not line.startswith("#") and "request" in line.split("{")[0]
                   and line.split("{")[0].endswith("_total"))
    assert total(after) >= total(before) + 3, "request counters did not move" + after[:2000]
    assert e2e.run.prefix not in after, "a container name appears in /metrics"


def test_json_log_format_is_one_object_per_line_with_paired_ids_and_no_secrets(
        e2e, make_container):
    """With "logFormat": "json" every line is a JSON object; request and response
    records carry the same id; no secret a client received is in any field."""
    run = e2e.run
    jp = run.start_proxy(dict(e2e.arn_of), "default", name="proxy-json", logFormat="json")
    c = make_container("jsonlog", alias="b")
    tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "60"}, host=jp.ip, port=jp.port)
    assert tok.status == 200, run.context(tok)
    h = {TOKEN_HEADER: tok.body}
    role = e2e.role_of["b"]
    rs = run.http(c, [dict(method="GET", path=CREDS_PATH, headers=h, host=jp.ip, port=jp.port),
                      dict(method="GET", path=CREDS_PATH + role, headers=h, host=jp.ip, port=jp.port),
                      dict(method="GET", path="/latest/meta-data/instance-id", host=jp.ip,
                           port=jp.port)])
    assert [r.status for r in rs] == [200, 200, 200], run.context(*rs)
    secrets = {rs[1].json()["SecretAccessKey"], rs[1].json()["Token"]}
    jp.wait_log(rs[-1].header("X-Request-Id") or "", timeout=3)
    time.sleep(0.2)
    text = jp.log_text()
    records = []
    for n, line in enumerate(text.splitlines(), 1):
        try:
            obj = json.loads(line)
        except ValueError:
            raise AssertionError(f"line {n} is not JSON: {line!r}") from None
        assert isinstance(obj, dict) and "msg" in obj and "level" in obj, line
        records.append(obj)
    reqs = {o.get("id") for o in records if o.get("msg") == "request"}
    resps = {o.get("id") for o in records if o.get("msg") == "response"}
    for r in [tok, *rs]:
        rid = r.header("X-Request-Id")
        assert rid in reqs and rid in resps, f"id {rid} not paired in the JSON log:\n{text[-3000:]}"
    assert not any(s in text for s in secrets), "a secret is in the JSON log"


def test_without_an_upstream_sdks_still_get_roles_and_basic_metadata(e2e, make_container):
    """Off EC2 (metadataURL null) there is nothing to pass through to: SDKs that
    look up region or instance facts still get answers, and credentials work as
    on EC2. The host-credential routes stay 404."""
    run = e2e.run
    noup = run.start_proxy(dict(e2e.arn_of), "default", name="proxy-noupstream",
                           metadataURL=None)
    c = make_container("noupstream", alias="a", redirect=noup)
    cli = run.aws_cli(c)
    assert cli.ok and f"assumed-role/{e2e.role_of['a']}/" in cli.arn, e2e.ctx(cli)
    rust = run.rust_client(c)
    assert rust.ok and f"assumed-role/{e2e.role_of['a']}/" in rust.arn, e2e.ctx(rust)
    iid, region, host_creds, ident = run.http(c, [
        dict(method="GET", path="/latest/meta-data/instance-id"),
        dict(method="GET", path="/latest/meta-data/placement/region"),
        dict(method="GET", path="/latest/meta-data/iam/security-credentials/HostRole"),
        dict(method="GET",
             path="/latest/meta-data/identity-credentials/ec2/security-credentials/ec2-instance"),
    ])
    assert iid.status == 200 and iid.body.startswith("i-"), run.context(iid)
    assert region.status == 200 and region.body, run.context(region)
    assert host_creds.status == 404 and ident.status == 404, run.context(host_creds, ident)


def test_an_open_connection_follows_an_alias_remapped_live(e2e, make_container):
    """SDKs keep their metadata connection open and ask for the same credentials
    again and again, which the proxy answers from the connection's memory. An
    operator's remap of the alias must still reach that open connection at its
    next request: the old role's path is 404 and the listing names the new role,
    with no reconnect. Every answer is logged with its container and alias."""
    run, proxy = e2e.run, e2e.proxy
    new_role = "e2e-role-remapped"
    new_arn = run.moto.create_role(new_role)
    c = make_container("keepalive", alias="b")
    old_role = e2e.role_of["b"]
    original = dict(proxy.config)
    paused, go = run.tmp / f"keepalive-{c.name}.paused", run.tmp / f"keepalive-{c.name}.go"
    tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "600"}).body
    h = {TOKEN_HEADER: tok}
    steps = ([dict(method="GET", path=CREDS_PATH, headers=h)]
             + [dict(method="GET", path=CREDS_PATH + old_role, headers=h)] * 4
             + [dict(signal=str(paused), wait_for=str(go))]
             + [dict(method="GET", path=CREDS_PATH + old_role, headers=h),
                dict(method="GET", path=CREDS_PATH, headers=h),
                dict(method="GET", path=CREDS_PATH + new_role, headers=h),
                dict(method="GET", path=CREDS_PATH + new_role, headers=h)])
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        asked = pool.submit(run.keepalive, c, steps, 20)
        try:
            deadline = time.monotonic() + 20
            while not paused.exists() and time.monotonic() < deadline and not asked.done():
                time.sleep(0.05)
            assert paused.exists(), "the keep-alive client never reached its pause" + e2e.ctx()
            remapped = json.loads(json.dumps(original))
            remapped["aliasToARN"]["b"] = new_arn
            proxy.rewrite_config(remapped)
            other = make_container("keepalive-probe", alias="b")
            ok, seen = _wait_listing(e2e, other, 200, new_role, seconds=10)
            assert ok, "the remap was not picked up within 10 s" + e2e.ctx(*seen[-2:])
            go.write_text("go\n")
            results = asked.result(timeout=60)
        finally:
            go.write_text("go\n")
            proxy.rewrite_config(original)
            proxy.reload()
    assert len(results) == 9 and len({r.local_port for r in results}) == 1, \
        f"all requests on one connection, from ports {[r.local_port for r in results]}"
    listing, *before, after_old, after_listing, after_new, again = results
    assert listing.status == 200 and listing.body == old_role, e2e.ctx(listing)
    assert all(r.status == 200 for r in before), e2e.ctx(*before)
    assert len({r.body for r in before}) == 1, "the same credentials while nothing changed"
    assert after_old.status == 404, "the old role after the remap" + e2e.ctx(after_old)
    assert after_listing.status == 200 and after_listing.body == new_role, e2e.ctx(after_listing)
    assert after_new.status == 200 and again.body == after_new.body, e2e.ctx(after_new, again)
    key = json.loads(after_new.body)["AccessKeyId"]
    assert key != json.loads(before[0].body)["AccessKeyId"], "the new role's own credentials"
    for r in results:
        rid = r.header("x-request-id")
        assert proxy.wait_log(f"response id={rid}", timeout=2), e2e.ctx(r)
        lines = proxy.log_text().splitlines()
        asked = next(i for i, l in enumerate(lines) if f"request id={rid}" in l)
        answered = next(i for i, l in enumerate(lines) if f"response id={rid}" in l)
        assert asked < answered, "the request line comes first"
        assert f"path={r.url.split(':80', 1)[1]}" in lines[asked], lines[asked]
        assert f"container={c.name}" in lines[answered] and "alias=b" in lines[answered], \
            lines[answered]
    ok, seen = _wait_listing(e2e, c, 200, old_role, seconds=10)
    assert ok, "alias b back on its own role after the config was restored" + e2e.ctx(*seen[-2:])
