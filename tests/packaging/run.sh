#!/usr/bin/env bash
# Packaging tests: the Docker image and the host firewall script, on real
# containers (tests/packaging, using the e2e harness in tests/e2e/harness.py).
#
#   test_firewall*.py  scripts/setup-firewall.sh on a test bridge: a container's
#                      plain request to 169.254.169.254 reaches the proxy
#                      (target/debug/ec2metaproxy) through the host's DNAT
#   test_firewall_ipv6.py  its ip6tables part: [fd00:ec2::254] on a --ipv6 bridge
#   test_firewall_by_address.py  --address-port: an SDK told only
#                      AWS_CONTAINER_CREDENTIALS_RELATIVE_URI reaches the proxy's
#                      by-address door through the host's DNAT of 169.254.170.2
#   test_antispoof.py  setup-firewall.sh --anti-spoof (--follow): a container
#                      with Docker's default capabilities cannot wear a
#                      neighbour's address on the test bridge (nftables)
#   test_systemd.py    contrib/ec2metaproxy.service under a real systemd (a
#                      debootstrapped root booted as a container, no network):
#                      starts, runs unprivileged and sandboxed, reloads, stops
#   test_image.py      `LOCAL_BASES=1 make docker` (two stages, base images built
#                      locally with debootstrap, no registry), then the image run
#                      with the Docker socket and --network host serves a
#                      container its role's credentials from moto's STS
#
# Needs: root, Docker, iptables, nsenter, gcc + libc6-dev (the pause image),
# python3-venv, debootstrap and nftables (installed with apt-get when missing,
# as root; nftables not under CI=true, where .ci/run installs it).
# Everything a run creates is named ec2mp-pkg-<runid>-..., labelled, and removed
# at the end, pass or fail; the base images ec2metaproxy-local/* are kept and
# reused (scripts/local-base-images.sh --rebuild replaces them).
#
# Usage: tests/packaging/run.sh [pytest args...]     e.g. -k firewall
# Env:   EC2MP_PKG_IMAGE=repo:tag    test an existing image instead of building one
#        EC2MP_PKG_GIT_REF=REF       the ref to build (default HEAD; "." = work tree)
#        EC2MP_E2E_NO_APT=1          never apt-get install debootstrap
set -euo pipefail
cd "$(dirname "$0")/../.."

# On a fresh Debian machine `make test` installs it, as e2e installs its
# clients (EC2MP_E2E_NO_APT=1 turns both off).
if ! command -v debootstrap >/dev/null 2>&1 && [ -z "${EC2MP_PKG_IMAGE:-}" ] \
    && [ -z "${EC2MP_E2E_NO_APT:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install debootstrap (local base images)"
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap; } \
        >/dev/null 2>&1 || true
fi
# nft for the anti-spoofing tests, the same way; under CI a missing nft is
# .ci/run's to fix, and test_antispoof.py fails saying so.
if ! command -v nft >/dev/null 2>&1 && [ "${CI:-}" != true ] \
    && [ -z "${EC2MP_E2E_NO_APT:-}" ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "==> apt-get install nftables (anti-spoofing tests)"
    { apt-get update -qq \
        && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends nftables; } \
        >/dev/null 2>&1 || true
fi
if ! command -v debootstrap >/dev/null 2>&1 && [ -z "${EC2MP_PKG_IMAGE:-}" ]; then
    echo "packaging: debootstrap is needed for the local base images: apt-get install -y debootstrap" >&2
    exit 2
fi
# The venv (moto, boto3, the AWS CLI, pytest) and the debug proxy, as for e2e.
scripts/e2e.sh --setup-only
echo "==> pytest tests/packaging"
exec .venv/bin/python -m pytest tests/packaging -v "$@"
