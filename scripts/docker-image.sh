#!/usr/bin/env bash
# Builds the ec2metaproxy Docker image in two stages (`make builder`, `make runner`,
# `make docker`):
#
#   builder  compiles GIT_REF with Dockerfile.build into IMAGE-builder:TAG
#   runner   runs IMAGE-builder:TAG, which writes a tar (binary + Dockerfile.run)
#            to stdout, and pipes it into `docker build -f Dockerfile.run -`,
#            making the small runtime image IMAGE:TAG
#
# Usage: scripts/docker-image.sh builder|runner|all GIT_REF TAG IMAGE
#   GIT_REF  a commit, tag or branch of this repository (default HEAD), built from
#            `git archive`, so uncommitted changes are left out; "." builds the work
#            tree as it is (tracked and untracked, not ignored, files). The
#            Dockerfiles themselves always come from the work tree, so an older ref
#            builds the same way.
#   e.g.     GIT_REF=efd25a2 TAG=1.0 make docker     -> ec2metaproxy:1.0
#
# Env:
#   RUST_IMAGE     builder base image (Dockerfile.build's default: rust:1-slim-bookworm)
#   RUNTIME_IMAGE  runtime base image (Dockerfile.run's default: debian:bookworm-slim)
#   LOCAL_BASES=1  no registry: build (or reuse) ec2metaproxy-local/rust-base and
#                  ec2metaproxy-local/runtime-base with scripts/local-base-images.sh and
#                  use them, unless RUST_IMAGE / RUNTIME_IMAGE are set
#   DOCKER_BUILDKIT  default 0 (the classic builder; Docker 20.10 without buildx)
set -euo pipefail

STAGE="${1:-}"
GIT_REF="${2:-HEAD}"
TAG="${3:-latest}"
IMAGE="${4:-ec2metaproxy}"
[ -n "$GIT_REF" ] || GIT_REF=HEAD
[ -n "$TAG" ] || TAG=latest
[ -n "$IMAGE" ] || IMAGE=ec2metaproxy

ROOT="$(cd "$(dirname "$0")/.." && pwd -P)"
BUILDER="${IMAGE}-builder:${TAG}"
RUNNER="${IMAGE}:${TAG}"
export DOCKER_BUILDKIT="${DOCKER_BUILDKIT:-0}"

say() { echo "[docker-image] $*" >&2; }
die() { say "error: $*"; exit 1; }

case "$STAGE" in
    builder|runner|all) ;;
    *) echo "usage: $0 builder|runner|all GIT_REF TAG IMAGE" >&2; exit 2 ;;
esac
command -v docker >/dev/null || die "docker not found"

if [ "${LOCAL_BASES:-0}" = 1 ] && { [ -z "${RUST_IMAGE:-}" ] || [ -z "${RUNTIME_IMAGE:-}" ]; }; then
    while IFS='=' read -r key value; do
        case "$key" in
            RUST_IMAGE) RUST_IMAGE="${RUST_IMAGE:-$value}" ;;
            RUNTIME_IMAGE) RUNTIME_IMAGE="${RUNTIME_IMAGE:-$value}" ;;
        esac
    done < <("$ROOT/scripts/local-base-images.sh" --print-env)
fi

TMP=""
cleanup() { [ -z "$TMP" ] || rm -rf "$TMP"; }
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# The build context: the sources of GIT_REF (or the work tree), with the work
# tree's packaging files.
make_context() {
    local ctx="$1"
    if [ "$GIT_REF" = "." ]; then
        REVISION="$(git -C "$ROOT" rev-parse HEAD)"
        if [ -n "$(git -C "$ROOT" status --porcelain --untracked-files=no)" ]; then
            REVISION="${REVISION}-dirty"
        fi
        (cd "$ROOT" && git ls-files -z --cached --others --exclude-standard \
            | xargs -0 -r sh -c 'for f; do if [ -e "$f" ]; then printf "%s\0" "$f"; fi; done' _ \
            | tar --null -T - -cf -) | tar -x -C "$ctx"
    else
        REVISION="$(git -C "$ROOT" rev-parse --verify --quiet "${GIT_REF}^{commit}")" \
            || die "GIT_REF \"$GIT_REF\" is not a commit of $ROOT"
        git -C "$ROOT" archive --format=tar "$REVISION" | tar -x -C "$ctx"
    fi
    cp "$ROOT/Dockerfile.build" "$ROOT/Dockerfile.run" "$ROOT/.dockerignore" "$ctx/"
}

build_builder() {
    TMP="$(mktemp -d /tmp/ec2mp-image-ctx-XXXXXX)"
    make_context "$TMP"
    local args=(--build-arg "GIT_REF=$REVISION" --label "ec2metaproxy.git-ref=$GIT_REF")
    [ -z "${RUST_IMAGE:-}" ] || args+=(--build-arg "RUST_IMAGE=$RUST_IMAGE")
    say "building $BUILDER from $GIT_REF ($REVISION)${RUST_IMAGE:+ on $RUST_IMAGE}"
    local start=$SECONDS
    docker build --force-rm -f Dockerfile.build -t "$BUILDER" "${args[@]}" "$TMP" || {
        [ -n "${RUST_IMAGE:-}" ] || say "hint: no registry reachable? LOCAL_BASES=1 builds the base images locally"
        exit 1
    }
    say "built $BUILDER in $((SECONDS - start)) s"
    rm -rf "$TMP"; TMP=""
}

build_runner() {
    docker image inspect "$BUILDER" >/dev/null 2>&1 \
        || die "no builder image $BUILDER: run \`make builder\` (same GIT_REF, TAG, IMAGE) first"
    local revision
    revision="$(docker image inspect -f '{{index .Config.Labels "org.opencontainers.image.revision"}}' "$BUILDER")"
    local args=(--build-arg "GIT_REF=$revision" --build-arg "TAG=$TAG")
    [ -z "${RUNTIME_IMAGE:-}" ] || args+=(--build-arg "RUNTIME_IMAGE=$RUNTIME_IMAGE")
    # The builder container only writes a tar: no network, removed when done,
    # named after this process so that parallel builds never collide.
    local name
    name="ec2metaproxy-builder-run-$$-$RANDOM"
    say "building $RUNNER from the output of $BUILDER${RUNTIME_IMAGE:+ on $RUNTIME_IMAGE}"
    local start=$SECONDS
    docker run --rm --network none --name "$name" --label ec2metaproxy.builder-run=1 "$BUILDER" \
        | docker build --force-rm -f Dockerfile.run -t "$RUNNER" "${args[@]}" - || {
        [ -n "${RUNTIME_IMAGE:-}" ] || say "hint: no registry reachable? LOCAL_BASES=1 builds the base images locally"
        exit 1
    }
    say "built $RUNNER ($(docker image inspect -f '{{.Size}}' "$RUNNER" | awk '{printf "%.1f MB", $1/1e6}')) in $((SECONDS - start)) s"
}

case "$STAGE" in
    builder) build_builder ;;
    runner) build_runner ;;
    all) build_builder; build_runner ;;
esac
