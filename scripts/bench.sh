#!/usr/bin/env bash
# Benchmark: ec2metaproxy vs a bare hyper server vs lyft's metadataproxy, on
# a fake Docker Engine and moto, all on loopback (bench/run.py); then the SDK
# session with the proof of the caller, on real containers (bench/sdk_session.py).
# Prints the figures and writes the full report to target/bench/report.md
# (docs/performance.md summarises it). Never fails because the
# machine is slow; exits non-zero only when something could not run.
#
# Needs: cargo, python3 with venv, gcc, wrk (Debian: apt-get install wrk).
# Installs on first use: .venv-bench/{moto,lyft} from PyPI, and oha
# (`cargo install oha`, several minutes once) for the fixed-rate run.
#
# Env: BENCH_SECONDS=4       seconds per round of closed-loop load
#      BENCH_ROUNDS=5        interleaved rounds (median reported)
#      BENCH_RATE_SECONDS=8  seconds of the open-loop (fixed-rate) run
#      BENCH_CONNECTIONS=128 keep-alive connections
#      BENCH_ADDRESSES=64    container addresses the load comes from (at most N)
#      BENCH_NS=10,1000      container counts
#      BENCH_NO_OHA=1        skip installing oha (no fixed-rate p99 then)
#      BENCH_PROFILE=1       also perf-record the RUST_LOG=warn proxy
#      BENCH_SKIP_LYFT=1     leave out lyft's metadataproxy
#      BENCH_SKIP_SESSION=1  leave out the SDK session on real containers
set -euo pipefail

cd "$(dirname "$0")/.."
VENV=.venv-bench
started=$(date +%s)

need() {
    local missing=()
    for t in cargo python3 gcc; do
        command -v "$t" >/dev/null 2>&1 || missing+=("$t")
    done
    if ! command -v wrk >/dev/null 2>&1; then
        if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
            echo "==> apt-get install wrk"
            apt-get install -y -qq wrk >/dev/null 2>&1 || { apt-get update -qq && apt-get install -y -qq wrk; } >/dev/null 2>&1 || true
        fi
        command -v wrk >/dev/null 2>&1 || missing+=("wrk")
    fi
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "bench: missing tools: ${missing[*]} (Debian: apt-get install wrk gcc python3-venv)" >&2
        exit 2
    fi
}

# venv NAME REQUIREMENTS [extra pip args for a second, --no-deps install]
venv() {
    local dir="$VENV/$1" reqs="$2" want have=""
    want="$(sha256sum < "$reqs" | cut -d' ' -f1)"
    [ -f "$dir/.requirements.sha256" ] && have="$(cat "$dir/.requirements.sha256")"
    if [ "$want" != "$have" ]; then
        echo "==> $dir: pip install -r $reqs"
        [ -x "$dir/bin/python" ] || python3 -m venv "$dir" || return 1
        "$dir/bin/python" -m pip install -q --disable-pip-version-check -r "$reqs" || return 1
        if [ "$1" = lyft ]; then
            "$dir/bin/python" -m pip install -q --disable-pip-version-check --no-deps \
                metadataproxy==2.2.0 || return 1
        fi
        echo "$want" > "$dir/.requirements.sha256"
    fi
}

need
venv moto bench/requirements-moto.txt
LYFT_ARGS=()
if [ -z "${BENCH_SKIP_LYFT:-}" ]; then
    if venv lyft bench/requirements-lyft.txt; then
        LYFT_ARGS=(--lyft-venv "$VENV/lyft")
    else
        echo "bench: could not install lyft's metadataproxy; measuring without it" >&2
        LYFT_ARGS=(--skip-lyft)
    fi
else
    LYFT_ARGS=(--skip-lyft)
fi

OHA="$(command -v oha || true)"
if [ -z "$OHA" ] && [ -x "$HOME/.cargo/bin/oha" ]; then OHA="$HOME/.cargo/bin/oha"; fi
if [ -z "$OHA" ] && [ -z "${BENCH_NO_OHA:-}" ]; then
    echo "==> cargo install oha --locked (once; for the fixed-rate p99)"
    if cargo install --quiet oha --locked; then OHA="$HOME/.cargo/bin/oha"; else
        echo "bench: oha did not install; the fixed-rate p99 is left out" >&2
    fi
fi

echo "==> cargo build --release (proxy and the load programs in bench/*.rs)"
cargo build --release --quiet
cargo build --release --quiet --example bench_baseline --example bench_open_loop \
    --example bench_stalls --example bench_sdk_session
mkdir -p target/bench
gcc -O2 -shared -fPIC -o target/bench/libsrcbind.so bench/srcbind.c -ldl

echo "==> bench/run.py"
set +e
python3 bench/run.py \
    --proxy target/release/ec2metaproxy \
    --baseline target/release/examples/bench_baseline \
    --open-loop target/release/examples/bench_open_loop \
    --stalls target/release/examples/bench_stalls \
    --moto-venv "$VENV/moto" \
    --shim "$PWD/target/bench/libsrcbind.so" \
    ${OHA:+--oha "$OHA"} \
    --seconds "${BENCH_SECONDS:-4}" \
    --rounds "${BENCH_ROUNDS:-5}" \
    --rate-seconds "${BENCH_RATE_SECONDS:-8}" \
    --connections "${BENCH_CONNECTIONS:-128}" \
    --addresses "${BENCH_ADDRESSES:-64}" \
    --ns "${BENCH_NS:-10,1000}" \
    ${BENCH_PROFILE:+--profile} \
    "${LYFT_ARGS[@]}"
rc=$?

# The SDK session on real containers, with the proof of the caller: the e2e
# harness (its venv, moto and pause image) builds the containers.
if [ "$(id -u)" = 0 ] && [ -z "${BENCH_SKIP_SESSION:-}" ]; then
    echo "==> bench/sdk_session.py (real containers; BENCH_SKIP_SESSION=1 leaves it out)"
    scripts/e2e.sh --setup-only >/dev/null
    EC2METAPROXY_BIN=target/release/ec2metaproxy .venv/bin/python bench/sdk_session.py \
        --load target/release/examples/bench_sdk_session \
        --baseline target/release/examples/bench_baseline \
        --rounds "${BENCH_ROUNDS:-5}" || rc=$?
else
    echo "bench: the SDK-session run needs root and Docker; left out" >&2
fi
echo "==> make bench took $(( $(date +%s) - started )) s (exit $rc)"
exit $rc
