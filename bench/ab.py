#!/usr/bin/env python3
"""A/B comparison of proxy builds on the cached credentials route, for
hot-path changes measured while the machine is busy (not part of `make bench`).

For each binary: user-space instructions per request (valgrind callgrind,
all threads, counted over a fixed number of requests after warm-up:
repeatable under load), and server CPU time per request under wrk
(kernel time included, so futex and write(2) costs show; noisier), and
with --perf, where that time goes (perf, cpu-clock samples, kernel included).

    python3 bench/ab.py --moto-venv .venv-bench/moto --shim target/bench/libsrcbind.so \\
        before=/tmp/ec2metaproxy.before after=target/release/ec2metaproxy
"""

import argparse
import http.client
import os
import re
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's helpers)


def keepalive_requests(port, ips, count):
    """`count` GETs over one keep-alive connection per address, in turn."""
    conns = [http.client.HTTPConnection("127.0.0.1", port, timeout=60, source_address=(ip, 0)) for ip in ips]
    ok = 0
    for i in range(count):
        conn = conns[i % len(conns)]
        conn.request("GET", run.PATH)
        response = conn.getresponse()
        response.read()
        ok += response.status == 200
    for conn in conns:
        conn.close()
    return ok


def wait_idle(pid, timeout=180.0):
    """Waits until pid uses under 5% of a core for a second: start-up work
    (Docker inspects, prefetches) done. Under valgrind, with N=1000, that
    takes a while; counted with the requests, it reads as 100k+ instructions
    per request."""
    deadline = time.monotonic() + timeout
    before = run.cpu_seconds([pid])
    while time.monotonic() < deadline:
        time.sleep(1.0)
        now = run.cpu_seconds([pid])
        if now - before < 0.05:
            return True
        before = now
    return False


def instructions(binary, tmp, sock, counter_port, ips, count, log_level, keep=None, n=None):
    port = run.free_port()
    config = run.write_proxy_config(tmp, port, sock)
    env = run.proxy_env(counter_port, log_level)
    out = os.path.join(tmp, "callgrind.%d.out" % port)
    log_file = open(os.path.join(tmp, "proxy-%d.log" % port), "wb")
    proc = run.start("proxy", ["valgrind", "--tool=callgrind", "--instr-atstart=no",
                               "--callgrind-out-file=" + out, binary, "-c", config],
                     env=env, stderr=log_file)
    try:
        _, first = run.timed_first_200(port, ips[0], time.monotonic(), timeout=120)
        if first is None:
            raise RuntimeError("%s never served credentials under valgrind" % binary)
        if n:
            run.warm(port, [run.container_ip(i) for i in range(n)])
        if not wait_idle(proc.pid):
            print("warning: the proxy was still busy when measuring began", file=sys.stderr)
        keepalive_requests(port, ips, 50)
        subprocess.run(["callgrind_control", "-i", "on", str(proc.pid)], check=True, capture_output=True)
        ok = keepalive_requests(port, ips, count)
        time.sleep(0.1)  # let the log writer write the last batch
        subprocess.run(["callgrind_control", "-d", str(proc.pid)], check=True, capture_output=True)
    finally:
        run.stop(proc)
        log_file.close()
    # The dump taken right after the requests (the file written at exit
    # also counts the shutdown).
    total = None
    with open(out + ".1") as f:
        for line in f:
            m = re.match(r"(?:summary|totals): (\d+)", line)
            if m:
                total = int(m.group(1))
    if keep:
        os.rename(out + ".1", keep)
    for name in os.listdir(tmp):
        if name.startswith(os.path.basename(out)):
            os.unlink(os.path.join(tmp, name))
    return total / count, ok


def cpu_per_request(args, binary, tmp, sock, counter_port, ips, log_level, n):
    class A:
        pass
    a = A()
    a.shim, a.wrk, a.threads = args.shim, args.wrk, 2
    port = run.free_port()
    config = run.write_proxy_config(tmp, port, sock)
    env = run.proxy_env(counter_port, log_level)
    env.update(dict(kv.split("=", 1) for kv in args.env))
    log_path = os.path.join(tmp, "wrk-%d.log" % port)
    log_file = open(log_path, "wb")
    proc = run.start("proxy", [binary, "-c", config], env=env, stderr=log_file)
    try:
        run.timed_first_200(port, ips[0], time.monotonic())
        run.warm(port, [run.container_ip(i) for i in range(n)])
        def load():
            return run.run_wrk(a, port, ips, args.seconds, args.connections, proc.pid)
        if args.perf:
            data = os.path.join(tmp, "perf-%d.data" % port)
            result, report = run.perf_during(
                proc.pid, data, load, record=("-e", "cpu-clock", "-F", "1999"),
                report=("--sort", os.environ.get("AB_PERF_SORT", "comm,dso,symbol"),
                        "--percent-limit", str(args.perf)))
            result["perf"] = "\n".join(l for l in report.splitlines() if l and not l.startswith("#"))
            os.unlink(data)
        else:
            result = load()
        result["rss"] = run.proc_status(proc.pid)
    finally:
        run.stop(proc)
        log_file.close()
        os.unlink(log_path)
    return result


def main():
    p = argparse.ArgumentParser()
    p.add_argument("builds", nargs="+", help="NAME=BINARY")
    p.add_argument("--moto-venv", required=True)
    p.add_argument("--shim", required=True)
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--requests", type=int, default=3000)
    p.add_argument("--seconds", type=int, default=3)
    p.add_argument("--rounds", type=int, default=2)
    p.add_argument("--levels", default="info,warn")
    p.add_argument("--no-wrk", action="store_true")
    p.add_argument("--no-callgrind", action="store_true")
    p.add_argument("--keep", help="keep the callgrind dumps as KEEP.NAME.LEVEL")
    p.add_argument("--n", type=int, default=10, help="containers in the fake Docker (all warmed)")
    p.add_argument("--addresses", type=int, default=8, help="container addresses the load comes from (at most N)")
    p.add_argument("--connections", type=int, default=64, help="wrk's keep-alive connections")
    p.add_argument("--env", action="append", default=[], help="KEY=VALUE for the proxy (wrk runs)")
    p.add_argument("--perf", type=float, metavar="PERCENT",
                   help="perf record (cpu-clock, kernel included) each wrk run; print symbols above PERCENT")
    args = p.parse_args()
    builds = [b.split("=", 1) for b in args.builds]
    tmp = tempfile.mkdtemp(prefix="ec2mp-ab-")
    try:
        _, counter_port = run.start_sts(args.moto_venv)
        sock = os.path.join(tmp, "docker.sock")
        run.start_fake_docker(sock, args.n)
        ips = [run.container_ip(i) for i in range(min(args.n, args.addresses))]
        levels = [(l if l != "info" else None) for l in args.levels.split(",")]
        for level in levels:
            label = "RUST_LOG=%s" % level if level else "info (default)"
            if not args.no_callgrind:
                for name, binary in builds:
                    keep = args.keep and "%s.%s.%s" % (args.keep, name, level or "info")
                    per, ok = instructions(binary, tmp, sock, counter_port, ips, args.requests, level, keep,
                                           args.n)
                    print("%-8s %-16s %8.0f instructions/request (callgrind, %d/%d 200s)"
                          % (name, label, per, ok, args.requests), flush=True)
            if not args.no_wrk:
                for i in range(args.rounds):
                    for name, binary in builds:
                        r = cpu_per_request(args, binary, tmp, sock, counter_port, ips, level, args.n)
                        print("%-8s %-16s round %d: %6.0f req/s, %5.1f us CPU/request, p99 %s ms, load %.1f, "
                              "RSS %s KiB (anon %s, file %s)" % (
                                  name, label, i + 1, r.get("rps") or 0, r.get("cpu_us") or 0, r.get("p99"),
                                  r.get("load1"), r["rss"].get("VmRSS"), r["rss"].get("RssAnon"),
                                  r["rss"].get("RssFile")), flush=True)
                        if r.get("perf"):
                            print(r["perf"], flush=True)
    finally:
        run.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
