"""The container credentials door, by token, with real parts: a plain host
process (not a container) running boto3 on its default chain, with
AWS_CONTAINER_CREDENTIALS_FULL_URI on loopback and the grant's token file,
gets its grant's role from moto; a wrong token, and a rotated one, get none.

IMDS is disabled in the client's environment: on this machine 169.254.169.254
is not reachable, and a fallback must not be what answers.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time

from conftest import DEFAULT_ALIAS, E2E
from harness import ACCOUNT, assumed_role, free_port, proxy_bin

GRANT = "host-b"
ALIAS = "b"


def whoami(e2e: E2E, url: str, **token) -> subprocess.CompletedProcess:
    run = e2e.run
    env = dict(run.client_env(), AWS_CONTAINER_CREDENTIALS_FULL_URI=url,
               AWS_EC2_METADATA_DISABLED="true", **token)
    return subprocess.run([sys.executable, "-c", run.BOTO3_SCRIPT], env=env,
                          capture_output=True, text=True, timeout=60)


def test_a_host_process_with_a_grant_token_file_gets_the_grants_role(e2e: E2E):
    run = e2e.run
    port = free_port("127.0.0.1")
    proxy = run.start_proxy(dict(e2e.arn_of), DEFAULT_ALIAS, name="ccdoor",
                            containerCredentials={"listen": [f"127.0.0.1:{port}"],
                                                  "grants": {GRANT: {"alias": ALIAS}}})
    token_file = run.tmp / "ccdoor-state" / "grants" / GRANT / "token"
    assert oct(token_file.stat().st_mode & 0o777) == "0o600"
    old_token = token_file.read_text()
    assert len(old_token) == 43 and not old_token.endswith("\n")
    url = f"http://127.0.0.1:{port}/creds"

    ok = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    assert ok.returncode == 0, ok.stderr[-2000:] + e2e.ctx(proxy.tail(20))
    doc = json.loads(ok.stdout)
    assert doc["method"] == "container-role", doc
    assert assumed_role(doc["arn"]) == (e2e.role_of[ALIAS], GRANT), doc["arn"]
    assert doc["arn"].startswith(f"arn:aws:sts::{ACCOUNT}:assumed-role/")
    assert proxy.wait_log(f"grant:{GRANT}"), proxy.tail(20)

    wrong = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN="A" * 43)
    assert wrong.returncode != 0, wrong.stdout
    assert proxy.wait_log("Authorization is no grant's current token"), proxy.tail(20)

    rotated = subprocess.run([str(proxy_bin()), "-c", str(proxy.config_path),
                              "--rotate-grant", GRANT], capture_output=True, text=True, timeout=30)
    assert rotated.returncode == 0, rotated.stderr
    assert old_token not in rotated.stdout + rotated.stderr
    new_token = token_file.read_text()
    assert new_token != old_token
    time.sleep(2)  # the proxy re-reads token files every second
    stale = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN=old_token)
    assert stale.returncode != 0, stale.stdout
    fresh = whoami(e2e, url, AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=str(token_file))
    assert fresh.returncode == 0, fresh.stderr[-2000:] + e2e.ctx(proxy.tail(20))

    log = proxy.log_text()
    for token in (old_token, new_token):
        assert token not in log, "a grant token reached the proxy log"
