"""Raw HTTP probe, run by harness.py inside a container's network namespace.

Reads a JSON list of requests from env E2E_HTTP_REQUESTS (each: method, host,
port, path, headers, timeout), sends each on its own connection with
http.client (paths are sent exactly as given, no normalisation), and prints a
JSON list of results: status, headers (list of pairs), body, error, ms, sent_at.
A request with a "raw" string sends those bytes verbatim instead (see raw()).
A request with "steps" sends them all on one keep-alive connection, as SDKs
do (see keepalive()).
With env E2E_HOLD it is a slow-loris caller instead (see hold()).
Standard library only.
"""
import http.client
import json
import os
import socket
import sys
import time


def one(r):
    out = {"status": None, "headers": [], "body": "", "error": None}
    t0 = time.monotonic()
    out["sent_at"] = time.time()
    conn = http.client.HTTPConnection(r["host"], r["port"], timeout=r.get("timeout", 5))
    try:
        conn.putrequest(r["method"], r["path"], skip_accept_encoding=True)
        for k, v in r.get("headers", {}).items():
            conn.putheader(k, v)
        body = r.get("body")
        if body is not None:
            conn.putheader("Content-Length", str(len(body.encode())))
        conn.endheaders(body.encode() if body is not None else None)
        resp = conn.getresponse()
        out["status"] = resp.status
        out["headers"] = [[k, v] for k, v in resp.getheaders()]
        out["body"] = resp.read().decode("utf-8", "replace")
    except Exception as e:  # report, do not crash: the caller asserts
        out["error"] = f"{type(e).__name__}: {e}"
    finally:
        conn.close()
    out["ms"] = (time.monotonic() - t0) * 1000
    return out


def raw(r):
    """Send r["raw"] bytes as is on one connection; read until the server closes
    it or the timeout passes. body = everything read; status = first status line."""
    out = {"status": None, "headers": [], "body": "", "error": None}
    t0 = time.monotonic()
    out["sent_at"] = time.time()
    data = b""
    try:
        with socket.create_connection((r["host"], r["port"]), timeout=r.get("timeout", 5)) as s:
            s.sendall(r["raw"].encode("latin-1"))
            deadline = t0 + r.get("timeout", 5)
            while len(data) < 1 << 20 and time.monotonic() < deadline:
                s.settimeout(max(0.01, deadline - time.monotonic()))
                try:
                    chunk = s.recv(65536)
                except socket.timeout:
                    out["error"] = "timeout (connection still open)"
                    break
                if not chunk:
                    break
                data += chunk
    except Exception as e:
        out["error"] = f"{type(e).__name__}: {e}"
    out["body"] = data.decode("latin-1")
    first = out["body"].split("\r\n", 1)[0].split(" ")
    if len(first) >= 2 and first[1].isdigit():
        out["status"] = int(first[1])
    out["ms"] = (time.monotonic() - t0) * 1000
    return out


def keepalive(r):
    """Send r["steps"] (each: method, path, headers) on one HTTP/1.1 connection,
    in order. A step {"signal": PATH, "wait_for": PATH} writes the first file
    and waits (at most the timeout) for the second, so the test can change the
    proxy between requests of the same connection. Returns one result per
    request step, with "local_port" telling that the connection stayed the same."""
    results = []
    conn = http.client.HTTPConnection(r["host"], r["port"], timeout=r.get("timeout", 5))
    try:
        for step in r["steps"]:
            if "wait_for" in step:
                with open(step["signal"], "w") as f:
                    f.write("waiting\n")
                deadline = time.monotonic() + r.get("timeout", 5)
                while not os.path.exists(step["wait_for"]) and time.monotonic() < deadline:
                    time.sleep(0.02)
                continue
            out = {"status": None, "headers": [], "body": "", "error": None}
            t0 = time.monotonic()
            out["sent_at"] = time.time()
            try:
                conn.request(step["method"], step["path"], headers=step.get("headers", {}))
                resp = conn.getresponse()
                out["status"] = resp.status
                out["headers"] = [[k, v] for k, v in resp.getheaders()]
                out["body"] = resp.read().decode("utf-8", "replace")
                out["local_port"] = conn.sock.getsockname()[1] if conn.sock else None
            except Exception as e:  # report, do not crash: the caller asserts
                out["error"] = f"{type(e).__name__}: {e}"
            out["ms"] = (time.monotonic() - t0) * 1000
            results.append(out)
    finally:
        conn.close()
    return results


def hold(spec):
    """Slow-loris caller: open `count` connections, send an unfinished request
    head on each, keep them open up to `seconds`, and report how many the server
    closed and when. Bounded in count and time."""
    conns, opened, errors = [], 0, []
    t0 = time.monotonic()
    for _ in range(min(int(spec["count"]), 1000)):
        try:
            s = socket.create_connection((spec["host"], spec["port"]), timeout=2)
            s.sendall(b"GET /latest/meta-data/ HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            s.setblocking(False)
            conns.append(s)
            opened += 1
        except OSError as e:
            errors.append(str(e))
    print(json.dumps({"opened": opened, "errors": errors[:3]}), flush=True)
    closed_at = {}
    deadline = t0 + min(float(spec["seconds"]), 60)
    while time.monotonic() < deadline and len(closed_at) < len(conns):
        for i, s in enumerate(conns):
            if i in closed_at:
                continue
            try:
                if s.recv(4096) == b"":
                    closed_at[i] = time.monotonic() - t0
            except BlockingIOError:
                pass
            except OSError:
                closed_at[i] = time.monotonic() - t0
        time.sleep(0.05)
    for s in conns:
        s.close()
    times = sorted(closed_at.values())
    print(json.dumps({"opened": opened, "closed": len(times),
                      "first_closed_s": times[0] if times else None,
                      "last_closed_s": times[-1] if times else None}), flush=True)


def main():
    if "E2E_HOLD" in os.environ:
        hold(json.loads(os.environ["E2E_HOLD"]))
        return
    reqs = json.loads(os.environ["E2E_HTTP_REQUESTS"])
    if len(reqs) == 1 and "steps" in reqs[0]:
        json.dump(keepalive(reqs[0]), sys.stdout)
        return
    json.dump([raw(r) if "raw" in r else one(r) for r in reqs], sys.stdout)


if __name__ == "__main__":
    main()
