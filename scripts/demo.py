"""ec2metaproxy demo: real containers, each handed its own IAM role through IMDS.

Run through scripts/demo.sh (`make demo`), which prepares .venv and the builds.
It shares tests/e2e/harness.py with the end-to-end tests: a uniquely named
Docker network, moto standing in for STS/IAM, the proxy on the network's
gateway, and three containers (labelled `web`, labelled `batch`, unlabelled).
Each container's view is obtained from inside its own network namespace
through the real metadata address 169.254.169.254, with no other credentials.
Secret keys and session tokens are never printed. Everything is removed at
the end, on failure and on Ctrl-C too.
"""

from __future__ import annotations

import json
import re
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests" / "e2e"))

import harness  # noqa: E402
from harness import CREDS_PATH, TOKEN_HEADER, TTL_HEADER  # noqa: E402

ROLES = {"web": "demo-web", "batch": "demo-batch", "default": "demo-default"}
CONTAINERS = [("web", "web"), ("batch", "batch"), ("plain", None)]  # (name, RoleAlias label)
GRANT = "host-batch"  # a grant of the container credentials door, for the host-network container

BOLD, DIM, RESET = ("\033[1m", "\033[2m", "\033[0m") if sys.stdout.isatty() else ("", "", "")


def say(text: str = "") -> None:
    print(text, flush=True)


def host_network_by_token(run: "harness.Run", proxy, port: int) -> bool:
    """A --network host container shares the host's addresses, so IMDS cannot
    tell it apart: it gets the grant's role through the container credentials
    door instead, with the grant's token file mounted read-only."""
    token_dir = proxy.config_path.parent / "proxy-state" / "grants" / GRANT
    name = f"{run.prefix}-hostnet"
    cid = harness.sh(["docker", "create", "--name", name, "--network", "host",
                      "--label", f"{harness.RUN_LABEL}={run.runid}",
                      "-v", f"{token_dir}:/run/secrets/aws:ro", run.image]).stdout.strip()
    c = harness.Container(name, "hostnet", cid, "", 0, {harness.RUN_LABEL: run.runid})
    run.containers[name] = c
    run.start_container(c, redirect=False)
    say(f"{BOLD}container {name}{RESET}  (--network host; grant {GRANT!r} -> alias batch, "
        f"token file mounted read-only)")
    url = f"http://127.0.0.1:{port}/creds"
    say(f"  AWS_CONTAINER_CREDENTIALS_FULL_URI={url}")
    say(f"  AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE=/run/secrets/aws/token "
        f"{DIM}(the token is never shown){RESET}")
    # The client runs in the container's (the host's) network namespace; it
    # reads the same file the container has mounted.
    res = run.boto3(c, env={"AWS_CONTAINER_CREDENTIALS_FULL_URI": url,
                            "AWS_CONTAINER_AUTHORIZATION_TOKEN_FILE": str(token_dir / "token"),
                            "AWS_EC2_METADATA_DISABLED": "true"})
    if not res.ok:
        say(f"  boto3 failed: {harness.redact(res.stderr).strip()[-500:]}")
        return False
    say(f"  boto3 default chain -> {BOLD}{res.arn}{RESET} (session named after the grant)")
    line = next((ln for ln in proxy.log_text().splitlines() if f"grant:{GRANT}" in ln), "")
    say(f"  {DIM}| {line}{RESET}")
    say()
    return True


def main() -> int:
    t0 = time.monotonic()
    signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
    run = harness.Run(kind="demo")
    try:
        say(f"{BOLD}ec2metaproxy demo{RESET} (run {run.runid})")
        run.build_image()
        net = run.create_network()
        moto = run.start_moto()
        arns = {alias: moto.create_role(role) for alias, role in ROLES.items()}
        run.start_upstream({"/latest/meta-data/instance-id": "i-0demo00000000001"})
        grant_port = harness.free_port("127.0.0.1")
        proxy = run.start_proxy(arns, "default", containerCredentials={
            "listen": [f"127.0.0.1:{grant_port}"], "grants": {GRANT: {"alias": "batch"}}})

        say(f"  network   {net.name}  {net.subnet}")
        say(f"  proxy     {proxy.ip}:{proxy.port}  (config {proxy.config_path.name}):")
        for line in json.dumps({k: v for k, v in proxy.config.items()
                                if k in ("aliasToARN", "defaultAlias")}, indent=2).splitlines():
            say(f"              {line}")
        say(f"  STS/IAM   moto at {moto.url}")
        say(f"  clients   run inside each container's network namespace, talking to "
            f"http://{harness.IMDS_IP}/ (DNAT to the proxy)")
        say()

        for short, alias in CONTAINERS:
            log_from = len(proxy.log_text())
            c = run.run_container(short, alias=alias)
            label = f"ec2metaproxy.RoleAlias={alias}" if alias else "no label -> defaultAlias"
            say(f"{BOLD}container {c.name}{RESET}  ({label}, IP {c.ip})")

            tok = run.request(c, "PUT", "/latest/api/token", {TTL_HEADER: "300"})
            h = {TOKEN_HEADER: tok.body} if tok.status == 200 else {}
            listing = run.request(c, "GET", CREDS_PATH, h)
            say(f"  IMDSv2 token PUT             -> {tok.status}"
                f" (TTL header echoed: {tok.header(TTL_HEADER)})")
            say(f"  GET {CREDS_PATH}  -> {listing.status} {listing.body!r}")
            if listing.status == 200:
                doc = run.request(c, "GET", CREDS_PATH + listing.body, h)
                if doc.status == 200:
                    d = doc.json()
                    say(f"  GET .../{listing.body}  -> {doc.status} Code={d.get('Code')} "
                        f"AccessKeyId={d.get('AccessKeyId')} Expiration={d.get('Expiration')} "
                        f"{DIM}(SecretAccessKey, Token: not shown){RESET}")
                else:
                    say(f"  GET .../{listing.body}  -> {doc.status}")
            iid = run.request(c, "GET", "/latest/meta-data/instance-id", h)
            say(f"  GET /latest/meta-data/instance-id -> {iid.status} {iid.body!r} (passed through)")

            rust = run.rust_client(c)
            if rust.ok:
                say("  aws-config + STS GetCallerIdentity (examples/imds_client):")
                say(f"      Arn          {BOLD}{rust.arn}{RESET}")
                say(f"      AccessKeyId  {rust.access_key_id}")
                say(f"      Expiration   {rust.expiration}")
            else:
                say(f"  imds_client failed (rc {rust.rc}): {harness.redact(rust.stderr).strip()}")
            cli = run.aws_cli(c)
            say(f"  aws sts get-caller-identity (AWS CLI): "
                f"{cli.arn if cli.ok else 'FAILED: ' + harness.redact(cli.stderr).strip()}")
            proxy.wait_log("response id=", timeout=1)
            lines = [ln for ln in proxy.log_text()[log_from:].splitlines()
                     if re.search(r"(request|response) id=", ln)]
            say(f"  {DIM}proxy log for this container ({len(lines)} request/response lines):{RESET}")
            for ln in lines:
                say(f"  {DIM}| {ln}{RESET}")
            say()

        by_token_ok = host_network_by_token(run, proxy, grant_port)

        leaked = [s for s in run.seen_secrets if s in proxy.log_text()]
        say()
        say(f"secrets handed to clients that appear in the proxy log: {len(leaked)}")
        say(f"done in {time.monotonic() - t0:.1f} s; cleaning up")
        return 0 if not leaked and by_token_ok else 1
    except KeyboardInterrupt:
        say("\ninterrupted; cleaning up")
        return 130
    except Exception as e:
        say(f"demo failed: {e}")
        if run.proxy:
            say("proxy log tail:\n" + harness.redact(run.proxy.tail(30)))
        return 1
    finally:
        run.close()


if __name__ == "__main__":
    sys.exit(main())
