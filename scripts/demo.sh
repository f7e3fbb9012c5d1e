#!/usr/bin/env bash
# ec2metaproxy demo (`make demo`): three real containers, each receiving the IAM
# role its label names through the proxy. Prepares .venv and the builds the same
# way as the e2e suite, then runs scripts/demo.py (which removes everything it
# creates, on failure and Ctrl-C too). Needs root and a Docker Engine.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/e2e.sh --setup-only
exec .venv/bin/python scripts/demo.py "$@"
