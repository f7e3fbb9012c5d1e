#!/usr/bin/env bash
# Real-container end-to-end tests for ec2metaproxy (tests/e2e).
#
# Needs: root, a Docker Engine at /var/run/docker.sock, gcc with static libc
# (Debian: gcc libc6-dev), nsenter (util-linux), iptables, python3 with venv.
# No image is pulled: the test image is built FROM scratch from a static binary.
#
# The client matrix (tests/e2e/test_matrix.py) also needs Debian's AWS clients:
# they are apt-get installed here when missing (see CLIENT_PKGS).
#
# Usage: scripts/e2e.sh [pytest args...]    e.g. scripts/e2e.sh -k reuse -x
#        scripts/e2e.sh --setup-only        venv + builds only (used by scripts/demo.sh)
#        scripts/e2e.sh --update-docs       run the client matrix and rewrite the
#                                           table in docs/compatibility.md
# Env:   EC2METAPROXY_BIN   proxy binary to test (default target/debug/ec2metaproxy)
#        EC2MP_E2E_KEEP=1   keep the run's temp dir (proxy log) even when all pass
#        EC2MP_E2E_NO_APT=1 never apt-get install the matrix's clients (they are
#                           then skipped, except under CI=true, where they fail)
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

# The client matrix's Debian packages: AWS CLI v2, Go (GOPATH-mode builds against
# the packaged SDKs), aws-sdk-go v1 and v2, Ruby and its AWS SDK core (with STS).
CLIENT_PKGS=(awscli golang-go golang-github-aws-aws-sdk-go-dev
             golang-github-aws-aws-sdk-go-v2-dev ruby ruby-aws-sdk-core)

install_clients() {
    local missing=() p
    for p in "${CLIENT_PKGS[@]}"; do
        dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q "install ok installed" \
            || missing+=("$p")
    done
    [ "${#missing[@]}" -eq 0 ] && return 0
    if [ -n "${EC2MP_E2E_NO_APT:-}" ] || ! command -v apt-get >/dev/null 2>&1; then
        echo "e2e: client matrix packages missing (${missing[*]}): those clients will be skipped" >&2
        return 0
    fi
    echo "==> apt-get install ${missing[*]} (client matrix)"
    if ! { apt-get update -qq \
           && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
                "${missing[@]}" >/dev/null; }; then
        echo "e2e: apt-get install failed: the matrix will skip (or, under CI, fail) those clients" >&2
    fi
}

build() {
    echo "==> cargo build (proxy) and cargo build --example imds_client"
    cargo build --quiet
    cargo build --quiet --example imds_client
}

check_tools
setup_venv
install_clients
build
if [ "${1:-}" = "--setup-only" ]; then
    exit 0
fi
if [ "${1:-}" = "--update-docs" ]; then
    shift
    echo "==> pytest tests/e2e/test_matrix.py (rewriting docs/compatibility.md)"
    EC2MP_UPDATE_DOCS=1 exec "$VENV/bin/python" -m pytest tests/e2e/test_matrix.py -v "$@"
fi

echo "==> pytest tests/e2e"
exec "$VENV/bin/python" -m pytest tests/e2e -v "$@"
