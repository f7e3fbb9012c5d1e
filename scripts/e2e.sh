#!/usr/bin/env bash
# Real-container end-to-end tests for ec2metaproxy (tests/e2e).
#
# Needs: root, a Docker Engine at /var/run/docker.sock, gcc with static libc
# (Debian: gcc libc6-dev), nsenter (util-linux), iptables, python3 with venv.
# No image is pulled: the test image is built FROM scratch from a static binary.
#
# Usage: scripts/e2e.sh [pytest args...]    e.g. scripts/e2e.sh -k reuse -x
#        scripts/e2e.sh --setup-only        venv + builds only (used by scripts/demo.sh)
# Env:   EC2METAPROXY_BIN   proxy binary to test (default target/debug/ec2metaproxy)
#        EC2MP_E2E_KEEP=1   keep the run's temp dir (proxy log) even when all pass
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv
REQS=tests/e2e/requirements.txt

check_tools() {
    local missing=()
    for t in docker gcc nsenter iptables python3 cargo sha256sum; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "e2e: missing tools: ${missing[*]}" >&2
        echo "e2e: on Debian: apt-get install -y docker.io gcc libc6-dev util-linux iptables python3-venv" >&2
        exit 2
    fi
    if [ "$(id -u)" != 0 ]; then
        echo "e2e: must run as root (nsenter and iptables inside container network namespaces)" >&2
        exit 2
    fi
    if ! docker version --format '{{.Server.Version}}' >/dev/null 2>&1; then
        echo "e2e: the Docker daemon is not reachable at /var/run/docker.sock" >&2
        exit 2
    fi
}

# Create .venv if missing; (re)install the requirements when they changed.
setup_venv() {
    if [ ! -x "$VENV/bin/python" ]; then
        echo "==> python3 -m venv $VENV"
        python3 -m venv "$VENV"
    fi
    local want have=""
    want="$(sha256sum "$REQS" | cut -d' ' -f1)"
    [ -f "$VENV/.e2e-requirements.sha256" ] && have="$(cat "$VENV/.e2e-requirements.sha256")"
    if [ "$want" != "$have" ]; then
        echo "==> pip install -r $REQS"
        "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$REQS"
        echo "$want" > "$VENV/.e2e-requirements.sha256"
    fi
}

build() {
    echo "==> cargo build (proxy) and cargo build --example imds_client"
    cargo build --quiet
    cargo build --quiet --example imds_client
}

check_tools
setup_venv
build
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi

echo "==> pytest tests/e2e"
exec "$VENV/bin/python" -m pytest tests/e2e -v "$@"
