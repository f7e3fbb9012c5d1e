#!/usr/bin/env python3
"""The ec2metaproxy benchmark driver (stdlib only); scripts/bench.sh runs it.

For each container count N it starts a fake Docker Engine (bench/fake_docker.py)
with N containers at 127.10.x.y, and measures the IMDSv1 credentials route
  GET /latest/meta-data/iam/security-credentials/BenchRole
with wrk (many keep-alive connections, each from a container's address through
the bench/srcbind.c LD_PRELOAD shim) against:
  (a) ec2metaproxy (release build), default logging and RUST_LOG=warn
  (b) a bare hyper 1 server answering a document of the same size
  (c) lyft's metadataproxy (gunicorn, gevent workers) on the same fake Docker
and, for (a): p99 at half of (b)'s throughput (oha -q; and examples/
bench_open_loop.rs on one core with the servers on the other, both pinned
after start and, the target's measure, started there), peak RSS, time from
process start to first served request, first-request latency of a container
started during the run, and AssumeRole calls counted by bench/sts_counter.py
in front of moto. Prints a table and writes the full report to
target/bench/report.md (docs/performance.md is the summary of it).

It never fails because a machine is slow: it exits non-zero only when
something could not be run at all.
"""

import argparse
import concurrent.futures
import datetime
import http.client
import json
import os
import platform
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

ROLE = "BenchRole"
PATH = "/latest/meta-data/iam/security-credentials/" + ROLE
ALIASES = [
    ("default", "111111111111"),
    ("web", "222222222222"),
    ("batch", "333333333333"),
    ("worker", "444444444444"),
]
HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
CHILDREN = []  # every process started here, stopped by pid at exit


def log(message):
    print("bench: " + message, flush=True)


def container_ip(i):
    return "127.10.%d.%d" % (i // 250, i % 250 + 1)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start(name, argv, env=None, stdout=None, stderr=None, cwd=None, cpus=None):
    """Starts a child in its own session; on `cpus` from its first
    instruction when given, so that its runtime sizes itself to them."""
    full_env = dict(os.environ)
    full_env.update(env or {})
    proc = subprocess.Popen(
        argv,
        env=full_env,
        stdout=stdout if stdout is not None else subprocess.DEVNULL,
        stderr=stderr if stderr is not None else subprocess.DEVNULL,
        cwd=cwd,
        start_new_session=True,
        preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
    )
    proc.bench_name = name
    CHILDREN.append(proc)
    return proc


def stop(proc, timeout=5.0):
    if proc.poll() is None:
        try:
            os.killpg(proc.pid, signal.SIGTERM)  # its own group: start_new_session
        except ProcessLookupError:
            pass
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout)
    if proc in CHILDREN:
        CHILDREN.remove(proc)


def stop_all():
    for proc in list(CHILDREN):
        try:
            stop(proc)
        except Exception:
            pass


def wait_until(what, probe, timeout):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if probe():
                return True
        except OSError:
            pass
        time.sleep(0.02)
    raise RuntimeError("%s did not come up within %.0f s" % (what, timeout))


def get(port, path, source_ip=None, timeout=5.0):
    """One GET; returns (status, body bytes). source_ip: bind the client there."""
    conn = http.client.HTTPConnection(
        "127.0.0.1", port, timeout=timeout, source_address=(source_ip, 0) if source_ip else None
    )
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        return response.status, response.read()
    finally:
        conn.close()


def unix_request(sock_path, method, path, body=None):
    """One request to the fake Docker's unix socket; returns (status, body bytes).
    `body`, when given, is sent as JSON."""
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(5)
    s.connect(sock_path)
    conn = http.client.HTTPConnection("localhost")
    conn.sock = s
    try:
        if body is None:
            conn.request(method, path)
        else:
            conn.request(method, path, body=json.dumps(body).encode(),
                         headers={"Content-Type": "application/json"})
        r = conn.getresponse()
        return r.status, r.read()
    finally:
        conn.close()


def unix_get(sock_path, path):
    return unix_request(sock_path, "GET", path)


def unix_post(sock_path, path, body):
    return unix_request(sock_path, "POST", path, body)


def proc_status(pid):
    """VmHWM and VmRSS in KiB for pid."""
    out = {}
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith(("VmHWM:", "VmRSS:", "RssAnon:", "RssFile:")):
                    key, value = line.split(":", 1)
                    out[key] = int(value.split()[0])
    except OSError:
        pass
    return out


def tree_pids(pid):
    """pid and its descendants (gunicorn's master and workers)."""
    pids = [pid]
    try:
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
        for line in out.stdout.split():
            pids += tree_pids(int(line))
    except (OSError, ValueError):
        pass
    return pids


def peak_rss_mib(pid):
    return sum(proc_status(p).get("VmHWM", 0) for p in tree_pids(pid)) / 1024.0


def sts_counts(counter_port):
    status, body = get(counter_port, "/__bench/counts")
    return json.loads(body) if status == 200 else {}


def assume_role_calls(counter_port):
    return sts_counts(counter_port).get("AssumeRole", 0)


# ---------------------------------------------------------------- load tools

UNIT = {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}


def parse_duration_ms(text):
    m = re.match(r"([\d.]+)(us|ms|s|m)$", text.strip())
    return float(m.group(1)) * UNIT[m.group(2)] if m else None


def cpu_seconds(pids):
    """User + system CPU seconds of pids (from /proc/PID/stat)."""
    total = 0
    for pid in pids:
        try:
            with open("/proc/%d/stat" % pid) as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except (OSError, IndexError, ValueError):
            pass
    return total / os.sysconf("SC_CLK_TCK")


def shim_env(args, port, ips):
    """The environment of a load generator whose connections to `port` come
    from `ips` in turn (bench/srcbind.c)."""
    env = dict(os.environ)
    env.update({"LD_PRELOAD": args.shim, "SRCBIND_IPS": ",".join(ips), "SRCBIND_PORT": str(port)})
    return env


def run_wrk(args, port, ips, seconds, connections, pid=None):
    argv = [
        args.wrk, "-t%d" % args.threads, "-c%d" % connections, "-d%ds" % seconds,
        "--timeout", "5s", "--latency", "http://127.0.0.1:%d%s" % (port, PATH),
    ]
    load1 = os.getloadavg()[0]
    pids = tree_pids(pid) if pid else []
    cpu0 = cpu_seconds(pids)
    out = subprocess.run(argv, env=shim_env(args, port, ips), capture_output=True, text=True,
                         timeout=seconds + 30)
    cpu = cpu_seconds(pids) - cpu0
    text = out.stdout
    result = {"tool": "wrk", "raw": text, "rps": None, "p50": None, "p99": None,
              "non2xx": 0, "errors": 0, "requests": 0, "load1": load1}
    m = re.search(r"Requests/sec:\s+([\d.]+)", text)
    if m:
        result["rps"] = float(m.group(1))
    for pct, key in (("50", "p50"), ("99", "p99")):
        m = re.search(r"^\s+%s%%\s+(\S+)" % pct, text, re.M)
        if m:
            result[key] = parse_duration_ms(m.group(1))
    m = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", text)
    if m:
        result["non2xx"] = int(m.group(1))
    m = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", text)
    if m:
        result["errors"] = sum(int(g) for g in m.groups())
    m = re.search(r"(\d+) requests in", text)
    if m:
        result["requests"] = int(m.group(1))
        if pids and result["requests"]:
            # Server CPU per request: unlike req/s, barely moved by other work
            # on the machine.
            result["cpu_us"] = cpu / result["requests"] * 1e6
            result["cpu_s"] = cpu
    if result["rps"] is None:
        result["problem"] = "wrk printed no result: %s" % (out.stderr.strip() or text.strip())[:300]
    return result


def pin(pid, cpus):
    """Sets the CPU affinity of every thread of pid and its children."""
    for p in tree_pids(pid):
        try:
            tids = os.listdir("/proc/%d/task" % p)
        except OSError:
            continue
        for tid in tids:
            try:
                os.sched_setaffinity(int(tid), cpus)
            except OSError:
                pass


def split_cpus():
    """(servers' CPUs, load generator's CPUs) for the pinned run, or None
    with fewer than 2 CPUs."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return None
    half = len(cpus) // 2
    return set(cpus[:half]), set(cpus[half:])


#: Interleaved rounds of the pinned open-loop run (bench_open_loop), and
#: seconds each. This machine stops a busy core for tens of milliseconds now
#: and then, whatever runs on it, which spoils the p99 of the round it lands
#: in: more, shorter rounds let the median step over it.
OPEN_LOOP_ROUNDS = 9
OPEN_LOOP_SECONDS = 4


def run_oha(args, port, ips, seconds, connections, rate, cpus=None):
    """Open-loop load at `rate` req/s (oha -q with latency correction), on
    `cpus` when given."""
    argv = [
        args.oha, "-z", "%ds" % seconds, "-c", str(connections), "-q", str(int(rate)),
        "--latency-correction", "--no-tui", "--output-format", "json",
        "http://127.0.0.1:%d%s" % (port, PATH),
    ]
    out = subprocess.run(argv, env=shim_env(args, port, ips), capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None)
    result = {"tool": "oha", "rate": rate, "rps": None, "p50": None, "p99": None, "non2xx": 0, "errors": 0}
    try:
        data = json.loads(out.stdout)
    except ValueError:
        result["problem"] = "oha printed no JSON: %s" % (out.stderr.strip() or out.stdout.strip())[:300]
        return result
    summary = data.get("summary", {})
    result["rps"] = summary.get("requestsPerSec")
    pct = data.get("latencyPercentiles", {})
    if pct.get("p50") is not None:
        result["p50"] = pct["p50"] * 1000.0
    if pct.get("p99") is not None:
        result["p99"] = pct["p99"] * 1000.0
    codes = data.get("statusCodeDistribution", {})
    result["non2xx"] = sum(v for k, v in codes.items() if not str(k).startswith("2"))
    result["errors"] = sum((data.get("errorDistribution") or {}).values())
    return result


def run_open_loop(args, port, ips, seconds, connections, rate, cpus):
    """Open-loop load at `rate` req/s from bench/open_loop.rs on
    `cpus`: latency counted from each request's due time, send lag reported."""
    argv = [args.open_loop, "127.0.0.1:%d" % port, PATH, str(int(rate)), str(seconds), str(connections)]
    out = subprocess.run(argv, env=shim_env(args, port, ips), capture_output=True, text=True, timeout=seconds + 60,
                         preexec_fn=lambda: os.sched_setaffinity(0, cpus))
    result = {"tool": "bench_open_loop", "rate": rate, "rps": None, "p50": None, "p99": None,
              "non2xx": 0, "errors": 0}
    try:
        data = json.loads(out.stdout)
    except ValueError:
        result["problem"] = "bench_open_loop printed no JSON: %s" % (out.stderr.strip() or out.stdout.strip())[:300]
        return result
    result.update({"rps": data["requests_per_sec"], "p50": data["p50_ms"], "p99": data["p99_ms"],
                   "p999": data["p999_ms"], "max": data["max_ms"], "send_lag_p99": data["send_lag_p99_ms"],
                   "own_lag_p99": data.get("own_lag_p99_ms"),
                   "non2xx": data["non2xx"], "errors": data["errors"]})
    return result


#: Seconds of each phase of the machine's stall measure (bench_stalls).
STALL_SECONDS = 8


def machine_stalls(args, servers_cpus, load_cpus):
    """What the machine takes from a busy core: bench/stalls.rs on
    each of the servers' CPUs, first alone, then with one on each load CPU
    too, as in the open-loop rounds (where the generator spins). Keyed by
    phase, then CPU."""
    def phase(cpus):
        procs = {cpu: start("bench_stalls", [args.stalls, str(STALL_SECONDS)], stdout=subprocess.PIPE,
                            cpus={cpu}) for cpu in sorted(cpus)}
        found = {}
        for cpu, proc in procs.items():
            out, _ = proc.communicate(timeout=STALL_SECONDS + 30)
            CHILDREN.remove(proc)
            try:
                found[cpu] = json.loads(out)
            except ValueError:
                found[cpu] = {"problem": "bench_stalls printed no JSON (exit %s)" % proc.returncode}
        return found

    return {"seconds": STALL_SECONDS, "alone": phase(servers_cpus),
            "beside_load": phase(servers_cpus | load_cpus)}


#: The phases of machine_stalls, as the log and the report name them.
STALL_PHASES = (("alone", "the loop alone, on the servers' CPU"),
                ("beside_load", "a loop on every CPU at once, as in the open-loop rounds, where the load "
                 "generator spins on its own"))


def stall_lines(stalls):
    """One line per phase and CPU of machine_stalls' result."""
    for name, how in STALL_PHASES:
        for cpu, x in sorted(stalls[name].items()):
            yield "%s, CPU %s: %s" % (how, cpu, describe_stalls(x, stalls["seconds"]))


def describe_stalls(x, seconds):
    if x.get("problem"):
        return x["problem"]
    if not x["gaps_over_0_5_ms"]:
        return "no gap over 0.5 ms in %d s" % seconds
    gaps = x["gaps_over_1_ms"]
    return "%d %s over 1 ms in %d s (%.1f ms in all, longest %.2f ms), %d over 0.5 ms" % (
        gaps, "gap" if gaps == 1 else "gaps", seconds, x["lost_in_gaps_over_1_ms_ms"], x["longest_ms"],
        x["gaps_over_0_5_ms"])


def open_loop_rounds(args, servers, order, ips, rate, cpus):
    """OPEN_LOOP_ROUNDS interleaved rounds of bench_open_loop against each
    server in `order`, each with the server's CPU time per request."""
    runs = {k: [] for k in order}
    for _ in range(OPEN_LOOP_ROUNDS):
        for k in order:
            pids = tree_pids(servers[k].proc.pid)
            cpu0 = cpu_seconds(pids)
            x = run_open_loop(args, servers[k].port, ips, OPEN_LOOP_SECONDS, args.connections, rate, cpus)
            if x.get("rps"):
                x["cpu_s"] = cpu_seconds(pids) - cpu0
                x["requests"] = x["rps"] * OPEN_LOOP_SECONDS
            runs[k].append(x)
    return runs


def log_open_loop(name, rate, how, x):
    log("%s at %.0f req/s, %s, bench_open_loop: p50 %s, p99 %s (rounds: %s), send lag p99 %s, "
        "generator's own lag p99 %s (rounds: %s), CPU per request %s us" % (
            name, rate, how, ms(x.get("p50")), ms(x.get("p99")),
            ", ".join(ms(v) for v in x.get("rounds_p99", [])), ms(x.get("send_lag_p99")),
            ms(x.get("own_lag_p99")), ", ".join(ms(v) for v in x.get("rounds_own_lag_p99", [])),
            fmt(x.get("cpu_us"), "%.1f")))


def median_by_p99(runs):
    """The run with the median p99, with every run's p99 beside it."""
    good = sorted((x for x in runs if x.get("p99") is not None), key=lambda x: x["p99"])
    if not good:
        return runs[-1] if runs else {}
    chosen = dict(good[(len(good) - 1) // 2])
    chosen["rounds_p99"] = [x.get("p99") for x in runs]
    chosen["rounds_own_lag_p99"] = [x.get("own_lag_p99") for x in runs]
    requests = sum(x.get("requests", 0) for x in good)
    if requests and all("cpu_s" in x for x in good):
        chosen["cpu_us"] = sum(x["cpu_s"] for x in good) / requests * 1e6
    return chosen


# ---------------------------------------------------------------- servers


def warm_moto(port):
    """One AssumeRole straight to moto (not counted): its first one loads the
    STS backend and takes most of a second, which is moto's start-up, not the
    proxies'."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        body = "Action=AssumeRole&Version=2011-06-15&RoleSessionName=warm&RoleArn=" + \
            "arn:aws:iam::111111111111:role/" + ROLE
        conn.request("POST", "/", body=body, headers={
            "Content-Type": "application/x-www-form-urlencoded",
            "Authorization": "AWS4-HMAC-SHA256 Credential=testing/20260101/us-east-1/sts/aws4_request, "
                             "SignedHeaders=host, Signature=0",
        })
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def start_sts(moto_venv):
    """moto behind bench/sts_counter.py, warmed; returns (moto port, counter port)."""
    moto_port, counter_port = free_port(), free_port()
    start("moto", [os.path.join(moto_venv, "bin", "moto_server"), "-H", "127.0.0.1",
                   "-p", str(moto_port)])
    start("sts_counter", [sys.executable, os.path.join(HERE, "sts_counter.py"),
                          "--listen-port", str(counter_port), "--upstream-port", str(moto_port)])
    wait_until("moto", lambda: get(moto_port, "/moto-api/")[0] < 500, 60)
    wait_until("sts counter", lambda: get(counter_port, "/__bench/counts")[0] == 200, 10)
    warm_moto(moto_port)
    return moto_port, counter_port


def start_fake_docker(sock, n):
    """The fake Docker Engine on unix socket `sock`, holding n containers."""
    proc = start("fake_docker", [sys.executable, os.path.join(HERE, "fake_docker.py"), "--socket", sock,
                                 "--count", str(n), "--aliases",
                                 ",".join("%s=%s@%s" % (a, ROLE, acct) for a, acct in ALIASES)])
    wait_until("fake docker", lambda: unix_get(sock, "/_ping")[0] == 200, 10)
    return proc


def write_proxy_config(tmp, port, docker_sock):
    config = {
        "aliasToARN": {a: "arn:aws:iam::%s:role/%s" % (acct, ROLE) for a, acct in ALIASES},
        "defaultAlias": "default",
        "dockerHost": "unix://" + docker_sock,
        "listen": "127.0.0.1:%d" % port,
        "metadataURL": None,
        "stateDir": os.path.join(tmp, "state"),
        # The fake Docker's containers have no processes to prove their
        # connections in: served by address, as a proxy without the
        # capabilities would be told to.
        "requireCallerProof": False,
    }
    # The config gets a directory of its own: the proxy watches the config's
    # directory for changes, and a log file written beside it would wake that
    # watcher on every line.
    conf_dir = os.path.join(tmp, "conf")
    os.makedirs(conf_dir, exist_ok=True)
    path = os.path.join(conf_dir, "proxy-%d.json" % port)
    with open(path, "w") as f:
        json.dump(config, f, indent=2)
    return path


def aws_env(counter_port):
    endpoint = "http://127.0.0.1:%d" % counter_port
    return {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL_STS": endpoint,
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_EC2_METADATA_DISABLED": "true",
    }


def proxy_env(counter_port, log_level=None):
    """The proxy's environment: STS through the counter, and RUST_LOG when given."""
    env = aws_env(counter_port)
    env["AWS_REGION"] = "us-east-1"
    if log_level:
        env["RUST_LOG"] = log_level
    return env


def timed_first_200(port, source_ip, started, timeout=30.0):
    """Polls from source_ip until a 200; returns (ms to first HTTP answer, ms to first 200)."""
    first_answer = None
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            status, _ = get(port, PATH, source_ip, timeout=2)
            now = time.monotonic()
            if first_answer is None:
                first_answer = (now - started) * 1000
            if status == 200:
                return first_answer, (now - started) * 1000
        except OSError:
            pass
        time.sleep(0.002)
    return first_answer, None


def warm(port, ips, workers=16):
    """One request from each address; returns (ok count, body size of a 200)."""
    sizes = []

    def one(ip):
        for _ in range(3):
            try:
                status, body = get(port, PATH, ip, timeout=10)
                if status == 200:
                    return len(body)
            except OSError:
                time.sleep(0.05)
        return None

    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        sizes = list(pool.map(one, ips))
    ok = [s for s in sizes if s]
    return len(ok), (ok[0] if ok else None)


def new_container_latency(port, docker_sock, serial, delay):
    """Starts a container in the fake Docker (emitting its start event), waits
    `delay` s, then times the first request from its address."""
    i = 60000 + serial
    ip = "127.20.%d.%d" % (serial // 250, serial % 250 + 1)
    alias, acct = ALIASES[serial % len(ALIASES)]
    unix_post(docker_sock, "/bench/start", {
        "id": "%064x" % (0xC0000000 + i), "name": "bench-new-%d" % serial,
        "ip": ip, "alias": alias, "role": "%s@%s" % (ROLE, acct),
    })
    if delay:
        time.sleep(delay)
    t0 = time.monotonic()
    try:
        status, _ = get(port, PATH, ip, timeout=5)
    except OSError as e:
        return {"ms": None, "status": str(e)}
    ms = (time.monotonic() - t0) * 1000
    t1 = time.monotonic()
    status2, _ = get(port, PATH, ip, timeout=5)
    return {"ms": ms, "status": status, "second_ms": (time.monotonic() - t1) * 1000, "second_status": status2}


# ---------------------------------------------------------------- the cases


class Server:
    """A server under test: its process, port and what was measured at start."""

    def __init__(self, key, proc, port, info=None, log_path=None, log_file=None):
        self.key, self.proc, self.port = key, proc, port
        self.info = info or {}
        self.log_path, self.log_file = log_path, log_file

    def close(self):
        stop(self.proc)
        if self.log_file:
            self.log_file.close()
            self.info["log_bytes"] = os.path.getsize(self.log_path)
            os.unlink(self.log_path)  # hundreds of MB at info level


def start_proxy(args, tmp, n, docker_sock, counter_port, load_ips, log_level, cpus=None):
    """Starts ec2metaproxy, times its first answers and asks once from every
    container (so each has its credentials cached)."""
    port = free_port()
    config = write_proxy_config(tmp, port, docker_sock)
    env = proxy_env(counter_port, log_level)
    saved = os.environ.pop("RUST_LOG", None)
    label = "RUST_LOG=%s" % log_level if log_level else "default logging"
    # The log goes to a file, as it would to a log file or journald.
    os.makedirs(os.path.join(tmp, "logs"), exist_ok=True)
    log_path = os.path.join(tmp, "logs", "proxy-n%d-%s%s.log" % (n, log_level or "info", "-pinned" if cpus else ""))
    log_file = open(log_path, "wb")
    calls_before = assume_role_calls(counter_port)
    started = time.monotonic()
    proc = start("ec2metaproxy", [args.proxy, "-c", config], env=env, stderr=log_file, cpus=cpus)
    if saved is not None:
        os.environ["RUST_LOG"] = saved
    first_answer, first_200 = timed_first_200(port, load_ips[0], started)
    if first_200 is None:
        stop(proc)
        log_file.close()
        tail = open(log_path, "rb").read()[-2000:].decode("utf-8", "replace")
        raise RuntimeError("ec2metaproxy never served credentials; its log ends:\n" + tail)
    ok, size = warm(port, [container_ip(i) for i in range(n)])
    info = {
        "label": label, "startup_answer_ms": first_answer, "startup_200_ms": first_200,
        "warm_ok": ok, "size": size, "warm_assume_role": assume_role_calls(counter_port) - calls_before,
    }
    log("(a) ec2metaproxy, %s: first answer %.0f ms, first 200 %.0f ms after start; %d/%d containers "
        "warm with %d AssumeRole calls" % (label, first_answer or -1, first_200, ok, n, info["warm_assume_role"]))
    return Server("a_warn" if log_level else "a", proc, port, info, log_path, log_file)


def start_baseline(args, size, cpus=None):
    port = free_port()
    proc = start("bench_baseline", [args.baseline, "127.0.0.1:%d" % port, str(size)], cpus=cpus)
    wait_until("bench_baseline", lambda: get(port, PATH)[0] == 200, 10)
    return Server("b", proc, port, {"size": len(get(port, PATH)[1])})


def median_round(rounds):
    """The round with the median throughput, with CPU per request over all rounds."""
    good = [r for r in rounds if r.get("rps") is not None]
    if not good:
        return rounds[-1] if rounds else {}
    chosen = dict(sorted(good, key=lambda r: r["rps"])[len(good) // 2])
    requests = sum(r.get("requests", 0) for r in good)
    cpu = sum(r.get("cpu_s", 0) for r in good)
    if requests and any("cpu_s" in r for r in good):
        chosen["cpu_us"] = cpu / requests * 1e6
    chosen["rounds_rps"] = [r["rps"] for r in rounds]
    chosen["non2xx"] = sum(r.get("non2xx", 0) for r in rounds)
    chosen["errors"] = sum(r.get("errors", 0) for r in rounds)
    chosen["requests"] = requests
    return chosen


def perf_during(pid, data, load, record=(), report=()):
    """Runs load() while perf records process pid into file `data`;
    returns load()'s result and `perf report --stdio` of the recording."""
    rec = subprocess.Popen(["perf", "record", *record, "-p", str(pid), "-o", data],
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        result = load()
    finally:
        rec.send_signal(signal.SIGINT)
        rec.wait(30)
    out = subprocess.run(["perf", "report", "-i", data, "--stdio", *report], capture_output=True, text=True)
    return result, out.stdout


def profile(args, pid, port, load_ips, tmp, n):
    """perf record on the proxy under a short load; returns the top symbols."""
    _, out = perf_during(pid, os.path.join(tmp, "perf-%d.data" % n),
                         lambda: run_wrk(args, port, load_ips, 5, args.connections),
                         record=("-F", "999", "-g"),
                         report=("--no-children", "--percent-limit", "1.5", "-g", "none", "--sort", "symbol"))
    return out


def bench_n(args, tmp, n, sock, counter_port, load_ips, r):
    """(a) with both log levels and (b), running side by side and measured in
    interleaved rounds, so that other work on the machine weighs on all alike."""
    names = {"b": "(b) baseline", "a": "(a) default logging", "a_warn": "(a) RUST_LOG=warn"}
    servers = {}
    try:
        servers["a"] = start_proxy(args, tmp, n, sock, counter_port, load_ips, None)
        servers["a_warn"] = start_proxy(args, tmp, n, sock, counter_port, load_ips, "warn")
        servers["b"] = start_baseline(args, servers["a"].info["size"])
        order = ("b", "a", "a_warn")
        rounds = {k: [] for k in order}
        calls0 = assume_role_calls(counter_port)
        extra_warm_calls = 0  # the warm-ups of the servers started pinned
        for i in range(args.rounds):
            for k in order:
                srv = servers[k]
                rounds[k].append(run_wrk(args, srv.port, load_ips, args.seconds, args.connections, srv.proc.pid))
        for k in order:
            r[k] = dict(servers[k].info)
            r[k]["load"] = median_round(rounds[k])
            r[k]["rounds"] = rounds[k]
            x = r[k]["load"]
            log("%s: %s req/s (rounds: %s), p50 %s, p99 %s, %s us CPU per request" % (
                names[k], fmt(x.get("rps")), ", ".join(fmt(v) for v in x.get("rounds_rps", [])),
                ms(x.get("p50")), ms(x.get("p99")), fmt(x.get("cpu_us"), "%.1f")))
        half = (r["b"]["load"].get("rps") or 0) / 2
        if args.oha and half:
            for key, rate in (("rated", half), ("rated_low", args.low_rate)):
                if not rate:
                    continue
                for k in order:
                    x = r[k][key] = run_oha(args, servers[k].port, load_ips, args.rate_seconds,
                                            args.connections, rate)
                    log("%s at %.0f req/s open-loop: achieved %s, p50 %s, p99 %s" % (
                        names[k], rate, fmt(x.get("rps")), ms(x.get("p50")), ms(x.get("p99"))))
        split = split_cpus()
        if half and split and (args.oha or args.open_loop):
            # The same rate with the servers and the load generator on
            # separate cores, so that they do not take each other's CPU time.
            servers_cpus, load_cpus = split
            cpus = "servers on CPU %s, load generator on CPU %s" % (
                ",".join(map(str, sorted(servers_cpus))), ",".join(map(str, sorted(load_cpus))))
            everything = os.sched_getaffinity(0)
            for k in order:
                pin(servers[k].proc.pid, servers_cpus)
            try:
                for k in order if args.oha else ():
                    x = r[k]["rated_pinned"] = run_oha(args, servers[k].port, load_ips, args.rate_seconds,
                                                       args.connections, half, load_cpus)
                    x["cpus"] = cpus
                    log("%s at %.0f req/s open-loop, pinned (%s): achieved %s, p50 %s, p99 %s" % (
                        names[k], half, cpus, fmt(x.get("rps")), ms(x.get("p50")), ms(x.get("p99"))))
                # oha needs most of a core at this rate and its own queue
                # then dominates its corrected p99, so a lean open-loop
                # generator takes the load generator's core
                # (bench/NOTES.md), in interleaved rounds.
                runs = open_loop_rounds(args, servers, order, load_ips, half, load_cpus) if args.open_loop else {}
                for k in runs:
                    x = r[k]["rated_open_repinned"] = median_by_p99(runs[k])
                    x["cpus"] = cpus
                    log_open_loop(names[k], half, "pinned after start", x)
            finally:
                for k in order:
                    pin(servers[k].proc.pid, everything)
            if args.open_loop:
                # The target's measure: servers started on the servers' CPUs,
                # as under taskset or a cpuset, so that each runtime sizes
                # itself to one core. Pinned after start, two runtime workers
                # share that core and time-slice (NOTES.md, seventh pass).
                size = servers["a"].info["size"]
                if args.stalls:
                    r["stalls"] = machine_stalls(args, servers_cpus, load_cpus)
                    for line in stall_lines(r["stalls"]):
                        log("machine stalls, " + line)
                started = {}
                try:
                    started["a"] = start_proxy(args, tmp, n, sock, counter_port, load_ips, None, servers_cpus)
                    started["a_warn"] = start_proxy(args, tmp, n, sock, counter_port, load_ips, "warn",
                                                    servers_cpus)
                    started["b"] = start_baseline(args, size, servers_cpus)
                    extra_warm_calls = sum(started[k].info["warm_assume_role"] for k in ("a", "a_warn"))
                    runs = open_loop_rounds(args, started, order, load_ips, half, load_cpus)
                    for k in runs:
                        x = r[k]["rated_open"] = median_by_p99(runs[k])
                        x["cpus"] = cpus
                        x["threads"] = len(os.listdir("/proc/%d/task" % started[k].proc.pid))
                        log_open_loop(names[k], half, "started pinned", x)
                finally:
                    for srv in started.values():
                        srv.close()
        r["load_assume_role"] = assume_role_calls(counter_port) - calls0 - extra_warm_calls
        for k in order:
            r[k]["rss_mib"] = peak_rss_mib(servers[k].proc.pid)
            r[k]["rss_now"] = proc_status(servers[k].proc.pid)
        if args.profile:
            r["a_warn"]["perf"] = profile(args, servers["a_warn"].proc.pid, servers["a_warn"].port,
                                          load_ips, tmp, n)
            log("perf, (a) RUST_LOG=warn, N=%d (self time by symbol):\n%s" % (
                n, "\n".join(l.rstrip().rstrip("- ") for l in r["a_warn"]["perf"].splitlines()
                          if l.strip() and not l.startswith("#"))))
        a = servers["a"]
        calls1 = assume_role_calls(counter_port)
        r["a"]["new_now"] = new_container_latency(a.port, sock, 10 * n % 997, 0)
        r["a"]["new_later"] = new_container_latency(a.port, sock, 10 * n % 997 + 1, 0.3)
        r["new_assume_role"] = assume_role_calls(counter_port) - calls1
        for k in order:
            r[k]["alive"] = servers[k].proc.poll() is None
    finally:
        for k, srv in servers.items():
            srv.close()
            if k in r:
                r[k]["log_bytes"] = srv.info.get("log_bytes")


def docker_lists(sock):
    return json.loads(unix_get(sock, "/bench/stats")[1]).get("list", 0)


def bench_lyft(args, tmp, n, docker_sock, counter_port, load_ips):
    if not args.lyft_venv:
        return {"problem": "no venv for lyft's metadataproxy (see scripts/bench.sh output)"}
    gunicorn = os.path.join(args.lyft_venv, "bin", "gunicorn")
    if not os.path.exists(gunicorn):
        return {"problem": "gunicorn is not installed in %s" % args.lyft_venv}
    port = free_port()
    env = aws_env(counter_port)
    env.update({
        "MOCK_API": "true",
        "DOCKER_URL": "unix://" + docker_sock,
        "DEFAULT_ACCOUNT_ID": ALIASES[0][1],
        "AWS_DEFAULT_REGION": "us-east-1",
    })
    # metadataproxy builds https://sts.<AWS_REGION>.amazonaws.com itself when
    # AWS_REGION is set, which would bypass moto: leave it unset.
    full_env = {k: v for k, v in os.environ.items() if k not in ("AWS_REGION", "DEFAULT_ROLE")}
    full_env.update(env)
    log_path = os.path.join(tmp, "lyft-n%d.log" % n)
    log_file = open(log_path, "wb")
    calls_before = assume_role_calls(counter_port)
    started = time.monotonic()
    # As its README runs it: gunicorn metadataproxy:app --workers=2 -k gevent
    proc = subprocess.Popen(
        [gunicorn, "metadataproxy:app", "--workers=2", "-k", "gevent", "-b", "127.0.0.1:%d" % port,
         "--no-control-socket"],
        env=full_env, stdout=log_file, stderr=log_file, cwd=tmp, start_new_session=True,
    )
    proc.bench_name = "metadataproxy"
    CHILDREN.append(proc)
    first_answer, first_200 = timed_first_200(port, load_ips[0], started, timeout=60)
    if first_200 is None:
        stop(proc)
        log_file.close()
        tail = open(log_path, "rb").read()[-1500:].decode("utf-8", "replace")
        return {"problem": "metadataproxy never served credentials (first answer: %s); its log ends: %s"
                % (first_answer, tail.strip())}
    # Each gunicorn worker keeps its own IP -> container map, filled by listing
    # and inspecting Docker on a miss: load it from the same addresses until a
    # round passes without a container list (every worker knows every
    # address), within a bounded time.
    warm_t0 = time.monotonic()
    rounds = []
    lists = docker_lists(docker_sock)
    while time.monotonic() - warm_t0 < args.lyft_warmup_max:
        rounds.append(run_wrk(args, port, load_ips, args.lyft_warmup, args.connections))
        now_lists = docker_lists(docker_sock)
        if now_lists == lists:
            break
        lists = now_lists
    result = {
        "startup_answer_ms": first_answer, "startup_200_ms": first_200,
        "warmup_s": time.monotonic() - warm_t0, "warmup_rounds": len(rounds),
        "warm": bool(rounds) and docker_lists(docker_sock) == lists,
    }
    result["load"] = run_wrk(args, port, load_ips, args.seconds * args.rounds, args.connections, proc.pid)
    result["rss_mib"] = peak_rss_mib(proc.pid)
    result["new_now"] = new_container_latency(port, docker_sock, 500 + n % 97, 0)
    result["assume_role"] = assume_role_calls(counter_port) - calls_before
    stop(proc)
    log_file.close()
    return result


# ---------------------------------------------------------------- report


def fmt(value, spec="%.0f", none="n/a"):
    return none if value is None else spec % value


def ms(value):
    if value is None:
        return "n/a"
    return "%.3f ms" % value if value < 1 else ("%.2f ms" % value if value < 10 else "%.1f ms" % value)


def machine():
    cpu = "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    mem = "unknown"
    try:
        with open("/proc/meminfo") as f:
            kib = int(f.readline().split()[1])
            mem = "%.1f GiB" % (kib / 1024 / 1024)
    except (OSError, ValueError, IndexError):
        pass
    return {"nproc": os.cpu_count(), "cpu": cpu, "mem": mem, "kernel": platform.release()}


def tool_version(argv):
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (out.stdout or out.stderr).strip().splitlines()[0]
    except (OSError, IndexError, subprocess.TimeoutExpired):
        return "n/a"


def row(name, r):
    load = (r or {}).get("load") or {}
    bad = load.get("non2xx", 0) + load.get("errors", 0)
    note = load.get("problem") or (r or {}).get("problem") or ""
    if bad:
        note = ("%d non-2xx/errors of %d. " % (bad, load.get("requests", 0)) + note).strip()
    if load.get("load1") is not None:
        note = ("load %.1f before. " % load["load1"] + note).strip()
    return "| %s | %s | %s | %s | %s | %s | %s |" % (
        name, fmt(load.get("rps")), ms(load.get("p50")), ms(load.get("p99")),
        fmt(load.get("cpu_us"), "%.1f µs"), fmt((r or {}).get("rss_mib"), "%.1f MiB"), note)


def cpu_ratio(b, a):
    """How much CPU (b) spends per request relative to (a): (a)/(b) were both CPU-bound."""
    try:
        return b["load"]["cpu_us"] / a["load"]["cpu_us"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def ratio(a, b):
    try:
        return a["load"]["rps"] / b["load"]["rps"]
    except (KeyError, TypeError, ZeroDivisionError):
        return None


def round_ratios(a, b):
    """(a)/(b) within each interleaved round: the two ran seconds apart, so
    a change in the machine's other work between rounds cancels out."""
    try:
        pairs = zip(a["rounds"], b["rounds"])
        return [x["rps"] / y["rps"] for x, y in pairs if x.get("rps") and y.get("rps")]
    except (KeyError, TypeError):
        return []


def paired_ratio(a, b):
    """The median of the per-round ratios, or None."""
    ratios = sorted(round_ratios(a or {}, b or {}))
    return ratios[len(ratios) // 2] if ratios else None


def report(args, results, wall, started_at):
    m = machine()
    lines = []
    out = lines.append
    out("# Performance")
    out("")
    out("Measured by `make bench` (`scripts/bench.sh`, driver `bench/run.py`) on %s UTC; "
        "the whole run took %.0f s." % (started_at.strftime("%Y-%m-%d %H:%M"), wall))
    out("")
    out("Machine: %s cores (`nproc`), %s, %s memory, Linux %s. Load generator and servers share these cores."
        % (m["nproc"], m["cpu"], m["mem"], m["kernel"]))
    out("")
    out("Command: `make bench` (= `scripts/bench.sh`; `BENCH_SECONDS=%d BENCH_ROUNDS=%d BENCH_CONNECTIONS=%d "
        "BENCH_ADDRESSES=%d BENCH_NS=%s`). "
        "Closed-loop load: `%s`, %d threads, %d keep-alive connections, each from a container's address "
        "(127.10.x.y, LD_PRELOAD shim `bench/srcbind.c`); (a) with both log levels and (b) run side by side "
        "and are loaded in %d interleaved rounds of %d s (b, a, a-warn, b, ...); the table shows the median "
        "round, and CPU per request over all rounds; the throughput ratio is the median of each round's own "
        "ratio. (c) gets one run of %d s. Open-loop: `%s`, %d s per server, and `bench/open_loop.rs` "
        "(pinned, below)."
        % (args.seconds, args.rounds, args.connections, args.addresses, ",".join(map(str, args.ns)),
           tool_version([args.wrk, "-v"]), args.threads, args.connections, args.rounds, args.seconds,
           args.seconds * args.rounds,
           tool_version([args.oha, "--version"]) if args.oha else "not available", args.rate_seconds))
    out("")
    out("Route: `GET %s` (IMDSv1), credentials cached (every container asked once before the run)." % PATH)
    out("")
    for n in args.ns:
        r = results[n]
        a, aw, b, c = r.get("a"), r.get("a_warn"), r.get("b"), r.get("c")
        out("## N = %d containers" % n)
        out("")
        size = (a or {}).get("size")
        out("Distinct source addresses in the load: %d. Response body: %s bytes (the baseline serves the same size)."
            % (len(r["load_ips"]), size))
        out("")
        out("| server | requests/s | p50 | p99 | server CPU per request | peak RSS | notes |")
        out("| --- | ---: | ---: | ---: | ---: | ---: | --- |")
        out(row("(a) ec2metaproxy, default logging (info)", a))
        out(row("(a) ec2metaproxy, `RUST_LOG=warn`", aw))
        out(row("(b) bare hyper 1 baseline", b))
        out(row("(c) lyft metadataproxy (gunicorn, 2 gevent workers)", c))
        out("")
        for which, what in (("rated", "half of (b)'s throughput"),
                            ("rated_pinned", "half of (b)'s throughput, pinned"),
                            ("rated_low", "a fixed low rate")):
            if not any((r.get(k) or {}).get(which) for k in ("a", "a_warn", "b")):
                continue
            first = next((r.get(k) or {}).get(which) for k in ("b", "a", "a_warn") if (r.get(k) or {}).get(which))
            rate = first.get("rate")
            if first.get("cpus"):
                what += ": %s, one server at a time" % first["cpus"]
            out("Open loop at %s req/s (%s), oha `-q` with latency correction:" % (fmt(rate), what))
            out("")
            out("| server | achieved req/s | p50 | p99 | errors |")
            out("| --- | ---: | ---: | ---: | --- |")
            for key, name in (("a", "(a) default logging"), ("a_warn", "(a) `RUST_LOG=warn`"),
                              ("b", "(b) baseline")):
                x = (r.get(key) or {}).get(which) or {}
                if x:
                    out("| %s | %s | %s | %s | %s |" % (
                        name, fmt(x.get("rps")), ms(x.get("p50")), ms(x.get("p99")),
                        x.get("problem") or (x.get("non2xx", 0) + x.get("errors", 0))))
            out("")
        for which, how in (
                ("rated_open", "the servers started on their CPU, so that each runtime sizes itself to one "
                 "core, as under taskset or a cpuset. This is the target's measure"),
                ("rated_open_repinned", "the servers of the table above, pinned after start: two runtime "
                 "workers share the one core")):
            if not any((r.get(k) or {}).get(which) for k in ("a", "a_warn", "b")):
                continue
            first = next((r.get(k) or {}).get(which) for k in ("b", "a", "a_warn") if (r.get(k) or {}).get(which))
            out("Open loop at %s req/s (half of (b)'s throughput, pinned: %s, one server at a time), "
                "`bench/open_loop.rs`, %d connections, %d interleaved rounds of %d s, the median "
                "round by p99; latency from each request's due time (send lag: due time to the request "
                "leaving, which a saturated generator would show; the generator's own lag: due time to the "
                "first pass of its loop that saw the request due, before any wait for a free connection, "
                "which no server can shorten); CPU per request over all rounds. "
                "With %s:"
                % (fmt(first.get("rate")), first.get("cpus"), args.connections, OPEN_LOOP_ROUNDS,
                   OPEN_LOOP_SECONDS, how))
            out("")
            out("| server | achieved req/s | p50 | p99 | p99 of each round | p99.9 | send lag p99 | "
                "generator's own lag p99 of each round | CPU per request | threads | errors |")
            out("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |")
            for key, name in (("a", "(a) default logging"), ("a_warn", "(a) `RUST_LOG=warn`"),
                              ("b", "(b) baseline")):
                x = (r.get(key) or {}).get(which) or {}
                if x:
                    out("| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |" % (
                        name, fmt(x.get("rps")), ms(x.get("p50")), ms(x.get("p99")),
                        ", ".join(ms(v) for v in x.get("rounds_p99", [])), ms(x.get("p999")),
                        ms(x.get("send_lag_p99")),
                        ", ".join(ms(v) for v in x.get("rounds_own_lag_p99", [])) or "n/a",
                        fmt(x.get("cpu_us"), "%.1f µs"), x.get("threads", ""),
                        x.get("problem") or (x.get("non2xx", 0) + x.get("errors", 0))))
            out("")
        stalls = r.get("stalls")
        if stalls:
            out("The machine's own stalls, measured just before the rounds on servers started on their CPU: "
                "`bench/stalls.rs`, a loop that only reads the monotonic clock, pinned, %d s per "
                "phase. A gap between two readings is time the core was taken away; a request that arrives "
                "during a gap longer than 1 ms cannot be answered within 1 ms by any server." % stalls["seconds"])
            out("")
            for line in stall_lines(stalls):
                out("- %s." % line)
            out("")
        for key, name in (("a", "default logging"), ("a_warn", "RUST_LOG=warn")):
            x = r.get(key) or {}
            out("- Ratios, %s: (a)/(b) = %s, the median of the rounds' own ratios (%s), %s between the median "
                "rounds above; (a)/(c) = %s; by server CPU per request, (b)/(a) = %s." % (
                    name, fmt(paired_ratio(x, b), "%.2f"),
                    ", ".join("%.2f" % q for q in round_ratios(x, b or {})) or "n/a",
                    fmt(ratio(x, b), "%.2f"), fmt(ratio(x, c), "%.1f"), fmt(cpu_ratio(b, x), "%.2f")))
        if a:
            out("- (a) start-up: first HTTP answer %s, first 200 credentials %s after the process was started "
                "(includes the Docker list and one AssumeRole)." % (ms(a.get("startup_answer_ms")),
                                                                      ms(a.get("startup_200_ms"))))
            for key, what in (("new_now", "asked right after its `start` event was sent"),
                              ("new_later", "asked 300 ms after its `start` event")):
                nc = a.get(key)
                if nc:
                    out("- (a) new container, %s: first request %s (status %s), second %s."
                        % (what, ms(nc.get("ms")), nc.get("status"), ms(nc.get("second_ms"))))
            out("- (a) AssumeRole calls: %s and %s while each proxy started and every one of the %d containers "
                "asked once (one cache key per container session); %s during all the load above; %s for the "
                "2 containers started afterwards (both proxies watch the same Docker and each prefetches them)."
                % (a.get("warm_assume_role"), (aw or {}).get("warm_assume_role"), n, r.get("load_assume_role"),
                   r.get("new_assume_role")))
            out("- (a) info log written: %.0f MB over the run." % ((a.get("log_bytes") or 0) / 1e6))
            now = a.get("rss_now") or {}
            if now:
                out("- (a) memory after the run: RSS %.1f MiB = %.1f MiB anonymous (heap, stacks) + %.1f MiB "
                    "file-backed (the mapped binary and libraries); peak %.1f MiB."
                    % (now.get("VmRSS", 0) / 1024, now.get("RssAnon", 0) / 1024, now.get("RssFile", 0) / 1024,
                       now.get("VmHWM", 0) / 1024))
        if c and not c.get("problem"):
            out("- (c) start-up: first 200 %s; warm-up (each worker maps IP -> container by listing and "
                "inspecting) %.1f s in %d rounds%s; new container first request %s; AssumeRole calls %s."
                % (ms(c.get("startup_200_ms")), c.get("warmup_s", 0), c.get("warmup_rounds", 0),
                   "" if c.get("warm") else " (still listing Docker when the warm-up time ran out)",
                   ms((c.get("new_now") or {}).get("ms")), c.get("assume_role")))
        elif c:
            out("- (c) could not be measured: %s" % c["problem"])
        out("")
    # Targets
    out("## Targets (issue 4)")
    out("")
    out("| target | measured | met |")
    out("| --- | --- | --- |")
    big = max(args.ns)
    rb = results[big]
    checks = []
    for n in args.ns:
        r = results[n]
        for key, name in (("a", "info"), ("a_warn", "warn")):
            q = paired_ratio(r.get(key), r.get("b"))
            cq = cpu_ratio(r.get("b") or {}, r.get(key) or {})
            checks.append(("cached throughput >= 0.8x baseline (N=%d, %s)" % (n, name),
                           "%s, median of the rounds' ratios (of the median rounds: %s; by CPU per request: %s)"
                           % (fmt(q, "%.3fx"), fmt(ratio(r.get(key) or {}, r.get("b") or {}), "%.3fx"),
                              fmt(cq, "%.2fx")),
                           q is not None and q >= 0.8))
    for n in args.ns:
        for key, name in (("a", "info"), ("a_warn", "warn")):
            mine, base = results[n].get(key) or {}, results[n].get("b") or {}
            rated = mine.get("rated_open") or {}
            p99 = rated.get("p99")
            achieved = rated.get("rps") and rated.get("rate") and rated["rps"] >= 0.95 * rated["rate"]
            oha = "; pinned after start: %s (the baseline's: %s); oha `-q`: %s pinned, %s unpinned " \
                  "(the baseline's: %s, %s)" % (
                ms((mine.get("rated_open_repinned") or {}).get("p99")),
                ms((base.get("rated_open_repinned") or {}).get("p99")),
                ms((mine.get("rated_pinned") or {}).get("p99")), ms((mine.get("rated") or {}).get("p99")),
                ms((base.get("rated_pinned") or {}).get("p99")), ms((base.get("rated") or {}).get("p99")))
            beside = sorted(((r.get("stalls") or {}).get("beside_load") or {}).items())
            # What the machine adds whatever the server: the generator's
            # own lateness, and cores stopped (bench_stalls).
            own = [v for v in rated.get("rounds_own_lag_p99", []) if v is not None]
            floor = "; the load generator's own lag p99, by round: %s" % ", ".join(map(ms, own)) if own else ""
            if beside:
                floor += "; the machine stopped a busy core for over 1 ms %s times in %s s (%s)" % (
                    " and ".join(str(x.get("gaps_over_1_ms")) for _, x in beside),
                    r["stalls"]["seconds"], " and ".join("CPU %s" % cpu for cpu, _ in beside))
            checks.append(("p99 < 1 ms at half baseline throughput (N=%d, %s)" % (n, name),
                           "%s at %s req/s, started pinned, bench_open_loop (the baseline's own p99 there: %s)%s%s"
                           % (ms(p99), fmt(rated.get("rps")), ms((base.get("rated_open") or {}).get("p99")), oha,
                              floor),
                           p99 is not None and p99 < 1.0 and bool(achieved)))
    for n in args.ns:
        for key, name in (("a", "info"), ("a_warn", "warn")):
            q = ratio(results[n].get(key) or {}, results[n].get("c") or {})
            checks.append(("throughput >= 20x lyft metadataproxy (N=%d, %s)" % (n, name),
                           fmt(q, "%.0fx"), q is not None and q >= 20))
    rss = (rb.get("a") or {}).get("rss_mib")
    rss_warn = (rb.get("a_warn") or {}).get("rss_mib")
    anon = ((rb.get("a") or {}).get("rss_now") or {}).get("RssAnon")
    checks.append(("RSS < 20 MB at N=%d" % big,
                   "peak %s = %s (info), %s (warn); anonymous part %s"
                   % (fmt(rss, "%.1f MiB"), fmt(rss and rss * 1.048576, "%.2f MB"), fmt(rss_warn, "%.1f MiB"),
                      fmt(anon and anon / 1024, "%.1f MiB")),
                   rss is not None and rss * 1.048576 < 20))
    for n in args.ns:
        r = results[n]
        warm_calls = [(r.get(k) or {}).get("warm_assume_role") for k in ("a", "a_warn")]
        ok = (all(c is not None and c <= n for c in warm_calls) and r.get("load_assume_role") == 0
              and r.get("new_assume_role") is not None and r["new_assume_role"] <= 4)
        checks.append(("<= 1 AssumeRole per key per refresh window (N=%d)" % n,
                       "%s per proxy for %d keys; %s under load; %s for 2 new keys x 2 proxies"
                       % (" and ".join(map(str, warm_calls)), n, r.get("load_assume_role"),
                          r.get("new_assume_role")), ok))
    for name, measured, ok in checks:
        out("| %s | %s | %s |" % (name, measured, "yes" if ok else "**no**"))
    out("")
    return "\n".join(lines)


# ---------------------------------------------------------------- main


def main():
    parser = argparse.ArgumentParser(description="ec2metaproxy benchmark")
    parser.add_argument("--proxy", required=True)
    parser.add_argument("--baseline", required=True)
    parser.add_argument("--moto-venv", required=True)
    parser.add_argument("--lyft-venv")
    parser.add_argument("--shim", required=True)
    parser.add_argument("--wrk", default=shutil.which("wrk"))
    parser.add_argument("--oha", default=shutil.which("oha"))
    parser.add_argument("--open-loop", help="bench/open_loop.rs, built (the pinned p99 run)")
    parser.add_argument("--stalls", help="bench/stalls.rs, built (the machine's own stalls)")
    parser.add_argument("--seconds", type=int, default=4, help="seconds per round of closed-loop load")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--rate-seconds", type=int, default=8, help="seconds of each open-loop run")
    parser.add_argument("--low-rate", type=int, default=5000,
                        help="a second open-loop rate, well below saturation (0: none)")
    parser.add_argument("--lyft-warmup", type=int, default=3, help="seconds per warm-up round")
    parser.add_argument("--lyft-warmup-max", type=int, default=60)
    parser.add_argument("--addresses", type=int, default=64,
                        help="distinct container addresses the load comes from (at most N)")
    parser.add_argument("--connections", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--ns", default="10,1000")
    parser.add_argument("--out", default=os.path.join(ROOT, "target", "bench", "report.md"))
    parser.add_argument("--profile", action="store_true", help="perf record the warn proxy")
    parser.add_argument("--skip-lyft", action="store_true")
    parser.add_argument("--from-results", help="re-render the report from a results.json")
    parser.add_argument("--wall", type=float, help="with --from-results: the run's wall time")
    parser.add_argument("--started", help="with --from-results: the run's start, ISO 8601")
    args = parser.parse_args()
    args.ns = [int(x) for x in args.ns.split(",")]
    for key in ("proxy", "baseline", "open_loop", "stalls", "moto_venv", "lyft_venv", "shim"):
        if getattr(args, key):
            setattr(args, key, os.path.abspath(getattr(args, key)))
    if args.from_results:
        # Re-render the report of an earlier run (its results.json).
        with open(args.from_results) as f:
            saved = json.load(f)
        results = {int(k): v for k, v in saved.get("results", saved).items()}
        args.ns = sorted(results)
        text = report(args, results, saved.get("wall", args.wall or 0),
                      datetime.datetime.fromisoformat(saved.get("started_at") or args.started))
        with open(args.out, "w") as f:
            f.write(text + "\n")
        log("wrote %s from %s" % (args.out, args.from_results))
        return 0
    if not args.wrk:
        log("wrk is not installed (apt-get install wrk)")
        return 2
    started_at = datetime.datetime.now(datetime.timezone.utc)
    t_start = time.monotonic()
    tmp = tempfile.mkdtemp(prefix="ec2mp-bench-")
    results = {}
    try:
        moto_port, counter_port = start_sts(args.moto_venv)
        log("moto on 127.0.0.1:%d behind the AssumeRole counter on :%d" % (moto_port, counter_port))
        for n in args.ns:
            r = results[n] = {}
            sock = os.path.join(tmp, "docker-%d.sock" % n)
            start_fake_docker(sock, n)
            load_ips = [container_ip(i) for i in range(min(n, args.addresses))]
            r["load_ips"] = load_ips
            log("N=%d: fake Docker up with %d containers; load from %d addresses" % (n, n, len(load_ips)))
            bench_n(args, tmp, n, sock, counter_port, load_ips, r)
            if args.skip_lyft:
                r["c"] = {"problem": "skipped (--skip-lyft)"}
            else:
                c = r["c"] = bench_lyft(args, tmp, n, sock, counter_port, load_ips)
                if c.get("problem"):
                    log("(c) metadataproxy: %s" % c["problem"])
                else:
                    log("(c) metadataproxy: %s req/s, p50 %s, p99 %s (after %.1f s warm-up)"
                        % (fmt(c["load"]["rps"]), ms(c["load"]["p50"]), ms(c["load"]["p99"]), c["warmup_s"]))
            status, body = unix_get(sock, "/bench/stats")
            r["docker_stats"] = json.loads(body)
            for proc in list(CHILDREN):
                if proc.bench_name == "fake_docker":
                    stop(proc)
        r = None
        wall = time.monotonic() - t_start
        text = report(args, results, wall, started_at)
        print()
        print(text)
        if args.out:
            os.makedirs(os.path.dirname(args.out), exist_ok=True)
            with open(args.out, "w") as f:
                f.write(text + "\n")
            log("wrote %s" % os.path.relpath(args.out, ROOT))
        with open(os.path.join(tmp, "results.json"), "w") as f:
            json.dump({"wall": wall, "started_at": started_at.isoformat(), "results": results}, f,
                      indent=1, default=str)
        log("raw results: %s/results.json; wall time %.0f s" % (tmp, wall))
        return 0
    except Exception as e:  # report what could not run, then fail
        log("could not run: %s" % e)
        return 1
    finally:
        stop_all()


if __name__ == "__main__":
    sys.exit(main())
