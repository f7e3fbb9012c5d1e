#!/usr/bin/env python3
"""Where ec2metaproxy's resident memory goes, phase by phase (not part of
`make bench`, which reports only the peak).

Starts moto, the bench's fake Docker with N containers and one proxy, then
prints RSS (anonymous and file-backed, from /proc/PID/smaps_rollup) and the
peak after: start-up (one second after the first 200), one request from every
container, each round of wrk load (128 connections from 64 container
addresses, as in `make bench`), and two seconds after the load. Ends with the
largest mappings (/proc/PID/smaps), which tell the binary's share from the
heap's.

    python3 bench/memory.py --moto-venv .venv-bench/moto \\
        --shim target/bench/libsrcbind.so --n 1000 target/release/ec2metaproxy

RSS moves by a MiB or so from run to run (what malloc keeps depends on how
threads interleave); run it a few times before reading much into one figure.
"""

import argparse
import collections
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import run  # noqa: E402  (the benchmark's helpers)


def rollup(pid):
    """RSS, anonymous and file-backed (MiB), and the peak (VmHWM, MiB)."""
    fields = {}
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            parts = line.split()
            if len(parts) == 3 and parts[2] == "kB":
                fields[parts[0].rstrip(":")] = int(parts[1])
    return "RSS %5.1f MiB = %4.1f anonymous + %4.1f file-backed; peak %5.1f MiB" % (
        fields["Rss"] / 1024, fields["Anonymous"] / 1024,
        (fields["Rss"] - fields["Anonymous"]) / 1024, run.peak_rss_mib(pid))


def mappings(pid, top=8):
    """The mappings holding the most resident memory."""
    resident = collections.Counter()
    name = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            parts = line.split()
            if "-" in parts[0] and len(parts) >= 5 and ":" in parts[3]:
                name = "%s %s" % (parts[5] if len(parts) > 5 else "[anonymous]", parts[1])
            elif parts[0] == "Rss:":
                resident[name] += int(parts[1])
    return ["  %7.1f MiB  %s" % (kib / 1024, name) for name, kib in resident.most_common(top)]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("proxy")
    p.add_argument("--moto-venv", required=True)
    p.add_argument("--shim", required=True)
    p.add_argument("--wrk", default="wrk")
    p.add_argument("--n", type=int, default=1000, help="containers in the fake Docker")
    p.add_argument("--rounds", type=int, default=3, help="4-second rounds of load")
    p.add_argument("--log-level", help="RUST_LOG for the proxy (default: its own, info)")
    args = p.parse_args()
    args.threads = 2
    tmp = tempfile.mkdtemp(prefix="ec2mp-memory-")
    try:
        _, counter_port = run.start_sts(args.moto_venv)
        sock = os.path.join(tmp, "docker.sock")
        run.start_fake_docker(sock, args.n)
        port = run.free_port()
        config = run.write_proxy_config(tmp, port, sock)
        log_file = open(os.path.join(tmp, "proxy.log"), "wb")
        proc = run.start("proxy", [os.path.abspath(args.proxy), "-c", config],
                         env=run.proxy_env(counter_port, args.log_level), stderr=log_file)
        ips = [run.container_ip(i) for i in range(min(args.n, 64))]
        _, first = run.timed_first_200(port, ips[0], time.monotonic())
        if first is None:
            raise RuntimeError("the proxy never served credentials")
        time.sleep(1)
        print("start-up           ", rollup(proc.pid))
        ok, _ = run.warm(port, [run.container_ip(i) for i in range(args.n)])
        time.sleep(1)
        print("%4d containers warm" % ok, rollup(proc.pid))
        for i in range(args.rounds):
            result = run.run_wrk(args, port, ips, 4, 128, proc.pid)
            print("load round %d       " % (i + 1), rollup(proc.pid),
                  "(%.0f req/s)" % (result["rps"] or 0))
        time.sleep(2)
        print("2 s after the load ", rollup(proc.pid))
        print("largest mappings:")
        print("\n".join(mappings(proc.pid)))
        log_file.close()
    finally:
        run.stop_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
