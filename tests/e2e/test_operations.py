"""Operating the proxy on a live host: config reload, health and metrics, JSON logs."""

from __future__ import annotations

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
