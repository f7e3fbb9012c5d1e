#!/usr/bin/env python3
"""The SDK-session benchmark with the proof of the caller, on real containers.

An SDK fetching credentials opens a new connection per request: the token
PUT, the role listing, the credentials. Every new connection is one proof of
the caller (the connection looked up in the container's own network
namespace), so this is where the proof costs what it costs. Run through
scripts/bench.sh (`make bench`), or alone:

  EC2METAPROXY_BIN=target/release/ec2metaproxy .venv/bin/python bench/sdk_session.py \
      --load target/release/examples/bench_sdk_session \
      --baseline target/release/examples/bench_baseline

It builds what tests/e2e/harness.py builds (a uniquely named network, moto,
the pause image) and measures, interleaved round by round, from inside three
containers through their own DNAT of 169.254.169.254:80:
  (b) the bare hyper baseline answering every request with a same-size document,
  (a) the proxy with `requireCallerProof` (the default),
  (n) a second proxy with `requireCallerProof: false`,
each with bench/sdk_session.rs (THREADS sessions at a time). It prints
sessions/s, session p50/p99 and the ratios (a)/(b), (n)/(b), (a)/(n), the
median of the rounds' own ratios. Never a pass/fail: figures only.
Everything the run creates is removed on exit, failure and Ctrl-C.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "e2e"))

import harness  # noqa: E402


def start_baseline(run: "harness.Run", binary: str, size: int) -> tuple[subprocess.Popen, int]:
    ip = run.network.gateway
    port = harness.free_port(ip)
    proc = subprocess.Popen([binary, f"{ip}:{port}", str(size)], stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)
    run.cleanup.push(lambda: harness.stop_process(proc), "stop the baseline")
    if not harness.wait_tcp(ip, port, 10):
        raise RuntimeError("the baseline did not start")
    return proc, port


def load(run, c, binary: str, role: str, seconds: float, threads: int) -> dict:
    cp = run.in_netns(c, [binary, f"{harness.IMDS_IP}:80", role, str(seconds), str(threads)],
                      timeout=seconds + 30, env={"PATH": "/usr/bin:/bin"})
    if cp.returncode != 0:
        raise RuntimeError(f"load generator failed: {cp.stderr.strip()}")
    return json.loads(cp.stdout)


def document_size(run, c, role: str) -> int:
    tok = run.request(c, "PUT", "/latest/api/token", {harness.TTL_HEADER: "300"})
    doc = run.request(c, "GET", harness.CREDS_PATH + role, {harness.TOKEN_HEADER: tok.body})
    if doc.status != 200:
        raise RuntimeError(f"the proxy did not serve {role}: {doc.describe()}")
    return len(doc.body.encode())


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--load", required=True, help="examples/bench_sdk_session (release)")
    ap.add_argument("--baseline", required=True, help="examples/bench_baseline (release)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--threads", type=int, default=4)
    args = ap.parse_args()

    run = harness.Run(kind="bench")
    try:
        run.build_image()
        run.create_network()
        moto = run.start_moto()
        arn = moto.create_role("BenchRole")
        run.start_upstream({})
        quiet = {"verbose": False}
        proof = run.start_proxy({"web": arn}, "web", **quiet)
        no_proof = run.start_proxy({"web": arn}, "web", name="noproof",
                                   requireCallerProof=False, **quiet)
        if not proof.wait_log("found in that container's network namespace", timeout=10):
            raise RuntimeError("the proxy cannot prove callers here (see its start log): "
                               "the figures would not include the proof")
        targets = {"a": run.run_container("proof", alias="web", redirect=proof),
                   "n": run.run_container("noproof", alias="web", redirect=no_proof)}
        size = document_size(run, targets["a"], "BenchRole")
        document_size(run, targets["n"], "BenchRole")
        _, port = start_baseline(run, args.baseline, size)
        base = run.run_container("baseline", redirect=False)
        run.redirect_imds(base, dest=f"{run.network.gateway}:{port}")
        targets["b"] = base
        for c in targets.values():
            run.in_netns(c, ["sysctl", "-qw", "net.ipv4.tcp_tw_reuse=1"])

        # One short warm-up each: caches, the pause of a first proof.
        for c in targets.values():
            load(run, c, args.load, "BenchRole", 0.5, args.threads)
        rounds: list[dict[str, dict]] = []
        for i in range(args.rounds):
            order = ["b", "a", "n"] if i % 2 == 0 else ["n", "a", "b"]
            r = {k: load(run, targets[k], args.load, "BenchRole", args.seconds, args.threads)
                 for k in order}
            rounds.append(r)
            print("round %d: " % (i + 1) + ", ".join(
                "(%s) %.0f sessions/s p50 %d us p99 %d us non-200 %d failed %d"
                % (k, r[k]["sessions_per_second"], r[k]["p50_us"], r[k]["p99_us"],
                   r[k]["non_200"], r[k]["failed"]) for k in "ban"), flush=True)

        def med(key, field):
            return statistics.median(r[key][field] for r in rounds)

        def ratio(x, y):
            return statistics.median(r[x]["sessions_per_second"] / r[y]["sessions_per_second"]
                                     for r in rounds if r[y]["sessions_per_second"])

        print()
        print("SDK session (token PUT, listing, credentials; a new connection each), "
              f"{args.threads} at a time, {args.rounds} rounds of {args.seconds:g} s, "
              f"{size}-byte document:")
        names = {"b": "bare hyper baseline", "a": "proxy, requireCallerProof (default)",
                 "n": "proxy, requireCallerProof false"}
        for k in "ban":
            print(f"  ({k}) {names[k]:<38} {med(k, 'sessions_per_second'):8.0f} sessions/s"
                  f"  p50 {med(k, 'p50_us'):6.0f} us  p99 {med(k, 'p99_us'):6.0f} us"
                  f"  non-200 {sum(r[k]['non_200'] for r in rounds)}"
                  f"  failed {sum(r[k]['failed'] for r in rounds)}")
        print(f"  ratios (median of the rounds' own): (a)/(b) {ratio('a', 'b'):.2f}, "
              f"(n)/(b) {ratio('n', 'b'):.2f}, (a)/(n) {ratio('a', 'n'):.2f}")
        return 0
    finally:
        run.close()


if __name__ == "__main__":
    sys.exit(main())
