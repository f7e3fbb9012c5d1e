"""Raw HTTP probe, run by harness.py inside a container's network namespace.

Reads a JSON list of requests from env E2E_HTTP_REQUESTS (each: method, host,
port, path, headers, timeout), sends each on its own connection with
http.client (paths are sent exactly as given, no normalisation), and prints a
JSON list of results: status, headers (list of pairs), body, error, ms, sent_at.
Standard library only.
"""
import http.client
import json
import os
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


def main():
    reqs = json.loads(os.environ["E2E_HTTP_REQUESTS"])
    json.dump([one(r) for r in reqs], sys.stdout)


if __name__ == "__main__":
    main()
