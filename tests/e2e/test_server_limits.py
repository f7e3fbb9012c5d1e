"""The HTTP server's own limits and HTTP/1 manners, seen from real containers."""

from __future__ import annotations

import select
import time

from harness import CREDS_PATH


def test_one_container_holding_many_slow_connections_does_not_starve_others(
        e2e, make_container):
    """A container that opens 150 connections and never finishes a request head
    (slow loris) must not fill the proxy: another container is still answered
    within a second, and the stalled connections are closed after the
    header-read timeout (about 5 s) instead of being held forever."""
    run = e2e.run
    loris = make_container("loris", alias="a")
    victim = make_container("victim", alias="b")
    p = run.slow_loris(loris, count=150, seconds=15)
    ready, _, _ = select.select([p.stdout], [], [], 15)
    first = p.stdout.readline() if ready else ""
    assert '"opened"' in first, f"slow-loris caller did not start: {first!r}"
    try:
        for _ in range(5):
            r = run.request(victim, "GET", CREDS_PATH, timeout=1)
            assert r.status == 200 and r.body == e2e.role_of["b"], (
                f"starved by another container's slow connections: {first}" + e2e.ctx(r))
            assert r.ms < 1000, e2e.ctx(r)
            time.sleep(0.2)
    finally:
        res = run.finish_slow_loris(p, timeout=30)
    print(f"slow loris: opened {first.strip()} -> {res}")
    assert res.get("opened", 0) >= 100, res
    assert res.get("closed") == res.get("opened"), (
        f"stalled request heads still open after 15 s: {res}" + e2e.ctx())
    assert res.get("last_closed_s") is not None and res["last_closed_s"] < 12, res


def test_oversized_request_head_is_431_and_a_normal_one_is_served(e2e, make_container):
    """The request head is capped near 16 KiB (hyper alone would buffer ~400 KiB
    per connection): 32 KiB of headers is 431; 4 KiB is fine."""
    c = make_container("bighead", alias="a")
    ok, big = e2e.run.http(c, [
        dict(method="GET", path=CREDS_PATH, headers={"X-Pad": "a" * 4096}),
        dict(method="GET", path=CREDS_PATH, headers={"X-Pad": "a" * 32768}),
    ])
    assert ok.status == 200 and ok.body == e2e.role_of["a"], e2e.ctx(ok)
    assert big.status == 431, e2e.ctx(big)

