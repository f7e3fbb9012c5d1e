"""contrib/ec2metaproxy.service under a real systemd, hardening and all.

A Debian bookworm root (debootstrap: systemd, ca-certificates, procps, curl)
with the proxy (target/debug/ec2metaproxy), contrib/ec2metaproxy.sysusers and
contrib/ec2metaproxy.service installed as docs/host-setup.md says, booted as a
container (systemd as PID 1, no network, the host's Docker socket mounted, a
stand-in docker.service since the engine is the host's). The unit must start,
run as its own user with the socket's group, no capabilities but the two
that prove callers (CAP_SYS_ADMIN, CAP_SYS_PTRACE), no new privileges and a
seccomp filter, read Docker through ProtectSystem=strict,
write token.key privately in its StateDirectory, reload and stop cleanly.

Skipped (with the reason) where systemd cannot boot in a container here.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time

import pytest

import harness
from conftest import REPO

CACHE = os.environ.get("EC2MP_BASE_CACHE", "/var/cache/ec2metaproxy-local/debootstrap")
MIRROR = os.environ.get("DEBIAN_MIRROR", "http://deb.debian.org/debian")
SUITE = os.environ.get("DEBIAN_SUITE", "bookworm")


class Booted:
    def __init__(self, name: str):
        self.name = name

    def sh(self, script: str, check: bool = True, timeout: float = 60) -> subprocess.CompletedProcess:
        return harness.sh(["docker", "exec", self.name, "sh", "-c", script],
                          check=check, timeout=timeout)

    def journal(self) -> str:
        return self.sh("journalctl -u ec2metaproxy --no-pager -o cat", check=False).stdout

    def wait_journal(self, needle: str, timeout: float = 15) -> str:
        """The unit's journal once it holds `needle` (lines arrive a moment late)."""
        deadline = time.monotonic() + timeout
        while True:
            text = self.journal()
            if needle in text or time.monotonic() > deadline:
                return text
            time.sleep(0.25)

    def main_pid(self) -> int:
        return int(self.sh("systemctl show -p MainPID --value ec2metaproxy").stdout.strip())


@pytest.fixture(scope="module")
def booted(pkg) -> Booted:
    if shutil.which("debootstrap") is None:
        pytest.skip("debootstrap is not installed")
    run = pkg.run
    root = run.tmp / "systemd-root"
    os.makedirs(CACHE, exist_ok=True)
    # Several hundred MB: removed as soon as it is imported, and on any failure.
    run.cleanup.push(lambda: shutil.rmtree(root, ignore_errors=True), "remove the systemd root")
    t0 = time.monotonic()
    cp = subprocess.run(
        ["debootstrap", "--variant=minbase", "--include=systemd,systemd-sysv,ca-certificates,procps,curl",
         f"--cache-dir={CACHE}", SUITE, str(root), MIRROR],
        capture_output=True, text=True, timeout=1200)
    if cp.returncode != 0:
        pytest.fail(f"debootstrap failed:\n{cp.stdout[-3000:]}\n{cp.stderr[-3000:]}")
    harness.log(f"systemd root bootstrapped in {time.monotonic() - t0:.0f} s")

    # Installed as docs/host-setup.md says.
    def install(src, dest, mode):
        dest = root / dest.lstrip("/")
        dest.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(src, dest)
        dest.chmod(mode)
        return dest

    install(harness.proxy_bin(), "/usr/local/bin/ec2metaproxy", 0o755)
    install(REPO / "contrib" / "ec2metaproxy.sysusers", "/usr/lib/sysusers.d/ec2metaproxy.conf", 0o644)
    unit = install(REPO / "contrib" / "ec2metaproxy.service",
                   "/etc/systemd/system/ec2metaproxy.service", 0o644)
    (root / "etc/ec2metaproxy").mkdir(mode=0o755, exist_ok=True)
    (root / "etc/ec2metaproxy/config.json").write_text(
        '{"aliasToARN": {"default": "arn:aws:iam::123456789012:role/ContainerDefault"},\n'
        ' "defaultAlias": "default", "listen": "127.0.0.1:18000", "metadataURL": null}\n')
    (root / "etc/ec2metaproxy/config.json").chmod(0o644)
    (root / "etc/default/ec2metaproxy").write_text(
        "AWS_REGION=us-east-1\nAWS_ACCESS_KEY_ID=testing\nAWS_SECRET_ACCESS_KEY=testing\n"
        "AWS_EC2_METADATA_DISABLED=true\n")
    # The engine is the host's (its socket is mounted): a stand-in unit for Requires=.
    (root / "etc/systemd/system/docker.service").write_text(
        "[Unit]\nDescription=stand-in for the host's Docker engine (socket mounted)\n"
        "[Service]\nType=oneshot\nRemainAfterExit=yes\nExecStart=/bin/true\n"
        "[Install]\nWantedBy=multi-user.target\n")
    wants = root / "etc/systemd/system/multi-user.target.wants"
    wants.mkdir(parents=True, exist_ok=True)
    for name in ("docker.service", "ec2metaproxy.service"):
        (wants / name).symlink_to(f"/etc/systemd/system/{name}")
    sock_gid = os.stat("/var/run/docker.sock").st_gid
    with open(root / "etc/group", "a") as f:
        f.write(f"docker:x:{sock_gid}:\n")
    (root / "etc/resolv.conf").write_text("")
    assert unit.exists()

    image = f"{run.prefix}-systemd:test"
    run.cleanup.push(lambda: harness.sh(["docker", "rmi", "-f", image], check=False),
                     "remove the systemd test image")
    tar = subprocess.Popen(["tar", "--numeric-owner", "-C", str(root), "-cf", "-", "."],
                           stdout=subprocess.PIPE)
    imp = subprocess.run(["docker", "import", "--change", 'CMD ["/sbin/init"]',
                          "--change", f"LABEL {harness.RUN_LABEL}={run.runid}", "-", image],
                         stdin=tar.stdout, capture_output=True, text=True, timeout=600)
    tar.stdout.close()
    tar.wait(60)
    shutil.rmtree(root, ignore_errors=True)
    assert imp.returncode == 0, imp.stderr

    name = f"{run.prefix}-systemd"
    run.cleanup.push(lambda: harness.sh(["docker", "rm", "-f", name], check=False),
                     "remove the systemd test container")
    harness.sh(["docker", "run", "-d", "--name", name,
                "--label", f"{harness.RUN_LABEL}={run.runid}",
                # What systemd as PID 1 needs to set up the unit's sandbox (mount
                # namespaces, seccomp filters) and to grant the unit its two
                # capabilities, and nothing of the host's network.
                "--cap-add", "SYS_ADMIN", "--cap-add", "SYS_PTRACE",
                "--security-opt", "seccomp=unconfined",
                "--security-opt", "apparmor=unconfined", "--network", "none",
                "--tmpfs", "/run", "--tmpfs", "/run/lock",
                "-v", "/sys/fs/cgroup:/sys/fs/cgroup:ro",
                "-v", "/var/run/docker.sock:/var/run/docker.sock", image])
    b = Booted(name)
    state = ""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        state = b.sh("systemctl is-system-running", check=False).stdout.strip()
        if state in ("running", "degraded"):
            break
        time.sleep(0.5)
    if state not in ("running", "degraded"):
        logs = harness.sh(["docker", "logs", "--tail", "30", name], check=False)
        pytest.skip(f"systemd did not boot in a container here (state {state!r}):\n"
                    f"{logs.stdout}{logs.stderr}")
    # Wait for the unit itself (it may still be starting).
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b.sh("systemctl is-active ec2metaproxy", check=False).stdout.strip() in ("active", "failed"):
            break
        time.sleep(0.5)
    return b


def test_unit_starts_and_serves(booted):
    state = booted.sh("systemctl is-active ec2metaproxy", check=False).stdout.strip()
    assert state == "active", booted.sh("systemctl status ec2metaproxy --no-pager -l",
                                        check=False).stdout + booted.journal()
    journal = booted.wait_journal("indexed")
    assert ": OK:" in journal, journal            # ExecStartPre --check ran
    assert "indexed" in journal, journal          # the Docker socket is readable
    # 127.0.0.1 is no container: 404, served by the sandboxed proxy.
    code = booted.sh("curl -s -o /dev/null -w '%{http_code}' "
                     "http://127.0.0.1:18000/latest/meta-data/iam/security-credentials/").stdout
    assert code == "404", code


def test_unit_runs_unprivileged_in_its_sandbox(booted):
    pid = booted.main_pid()
    status = booted.sh(f"cat /proc/{pid}/status").stdout
    fields = dict(re.findall(r"^(\w+):\s*(.*)$", status, re.M))
    uid = booted.sh("id -u ec2metaproxy").stdout.strip()
    assert fields["Uid"].split() == [uid] * 4 and uid != "0", fields["Uid"]
    sock_gid = str(os.stat("/var/run/docker.sock").st_gid)
    assert sock_gid in fields["Groups"].split(), fields["Groups"]
    assert fields["NoNewPrivs"] == "1"
    assert fields["Seccomp"] == "2"               # a system-call filter is in force
    # Only what proving callers needs: setns (SYS_ADMIN) into another
    # user's process's namespace (SYS_PTRACE).
    proof = (1 << 21) | (1 << 19)
    assert int(fields["CapEff"], 16) == proof and int(fields["CapBnd"], 16) == proof, fields
    # ProtectSystem=strict: / is read-only for it, the state directory is not.
    mounts = booted.sh(f"cat /proc/{pid}/mountinfo").stdout
    root_line = next(line for line in mounts.splitlines() if line.split()[4] == "/")
    assert "ro" in root_line.split()[5].split(","), root_line
    state_line = [line for line in mounts.splitlines()
                  if line.split()[4] == "/var/lib/ec2metaproxy"]
    assert state_line and "rw" in state_line[-1].split()[5].split(","), state_line


def test_token_key_is_private_in_the_state_directory(booted):
    out = booted.sh("stat -c '%a %U' /var/lib/ec2metaproxy /var/lib/ec2metaproxy/token.key").stdout
    assert out.split("\n")[:2] == ["700 ec2metaproxy", "600 ec2metaproxy"], out


def test_reload_and_stop(booted):
    pid = booted.main_pid()
    r = booted.sh("systemctl reload ec2metaproxy", check=False)
    assert r.returncode == 0, r.stderr + booted.journal()
    assert booted.main_pid() == pid, "reload must not restart the process"
    booted.sh("systemctl stop ec2metaproxy", timeout=30)
    state = booted.sh("systemctl is-active ec2metaproxy", check=False).stdout.strip()
    assert state == "inactive", state
    journal = booted.wait_journal("] stopped")
    assert "] stopped" in journal, journal[-2000:]   # a graceful exit
