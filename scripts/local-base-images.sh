#!/usr/bin/env bash
# Builds the two base images of the ec2metaproxy image locally, without any
# container registry: for machines (and CI) that cannot pull rust:1-slim-bookworm
# or debian:bookworm-slim.
#
#   ec2metaproxy-local/runtime-base:bookworm
#       Debian bookworm (debootstrap --variant=minbase) with ca-certificates,
#       docs and apt lists trimmed: a stand-in for debian:bookworm-slim.
#   ec2metaproxy-local/rust-base:<rustc version>-bookworm
#       the same plus gcc and libc6-dev (the linker and C compiler that cargo and
#       the aws-lc-sys build need), and this host's Rust toolchain (rustup's
#       active one: cargo, rustc, the standard library and rust-lld; no docs,
#       clippy or rustfmt) under /usr/local/rust: a stand-in for rust:1-slim-bookworm.
#       It also carries this host's CA bundle for cargo alone (CARGO_HTTP_CAINFO),
#       so that a build inside it reaches crates.io the way the host does (through
#       a TLS-inspecting egress proxy, say); /etc/ssl/certs stays Debian's, and
#       that is the bundle the runtime image gets.
#
# Each is built from Debian's own package mirror (debootstrap) and `docker import`ed.
# An image that already exists is reused; --rebuild replaces them.
#
# Usage: scripts/local-base-images.sh [--rebuild] [--print-env]
#   --print-env   print RUST_IMAGE=... and RUNTIME_IMAGE=... lines on stdout
#                 (all progress goes to stderr), for scripts/docker-image.sh
# Env:   DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#        DEBIAN_SUITE   (default bookworm; match the host: the toolchain is copied from it)
#        HOST_CA_BUNDLE (default $SSL_CERT_FILE, else /etc/ssl/certs/ca-certificates.crt)
#        EC2MP_BASE_CACHE  where debootstrap keeps downloaded .debs between runs
#                          (default /var/cache/ec2metaproxy-local/debootstrap)
# Needs: root, docker, debootstrap (apt-get install debootstrap), rustup or rustc on PATH.
set -euo pipefail

MIRROR="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
SUITE="${DEBIAN_SUITE:-bookworm}"
CACHE="${EC2MP_BASE_CACHE:-/var/cache/ec2metaproxy-local/debootstrap}"
LABEL="ec2metaproxy.local-base"
REBUILD=0
PRINT_ENV=0

for arg in "$@"; do
    case "$arg" in
        --rebuild) REBUILD=1 ;;
        --print-env) PRINT_ENV=1 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
        *) echo "local-base-images: unknown argument: $arg" >&2; exit 2 ;;
    esac
done

say() { echo "[local-base-images] $*" >&2; }
die() { say "error: $*"; exit 1; }

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap)"
command -v docker >/dev/null || die "docker not found"
command -v debootstrap >/dev/null || die "debootstrap not found: apt-get install -y debootstrap"

# The toolchain to copy: rustup's active one, else whatever rustc is on PATH.
if command -v rustup >/dev/null 2>&1; then
    TOOLCHAIN="$(cd "$(dirname "$(rustup which rustc)")/.." && pwd -P)"
else
    command -v rustc >/dev/null || die "neither rustup nor rustc on PATH"
    TOOLCHAIN="$(cd "$(dirname "$(readlink -f "$(command -v rustc)")")/.." && pwd -P)"
fi
HOST_TRIPLE="$(rustc -vV | sed -n 's/^host: //p')"
RUST_VERSION="$(rustc -vV | sed -n 's/^release: //p')"
[ -n "$HOST_TRIPLE" ] && [ -n "$RUST_VERSION" ] || die "cannot read rustc -vV"

HOST_CA="${HOST_CA_BUNDLE:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}"
[ -r "$HOST_CA" ] || HOST_CA=/etc/ssl/certs/ca-certificates.crt
[ -r "$HOST_CA" ] || die "no CA bundle to give cargo: set HOST_CA_BUNDLE"

RUNTIME_IMAGE="ec2metaproxy-local/runtime-base:${SUITE}"
RUST_IMAGE="ec2metaproxy-local/rust-base:${RUST_VERSION}-${SUITE}"

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

WORK=""
cleanup() {
    if [ -n "$WORK" ] && [ -d "$WORK" ]; then
        # debootstrap may leave mounts (proc, sys) behind when it fails half way.
        { grep -o " $WORK/[^ ]*" /proc/mounts 2>/dev/null || true; } | sort -r | while read -r m; do
            umount -l "$m" 2>/dev/null || true
        done
        rm -rf --one-file-system "$WORK"
    fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# debootstrap SUITE into $1 with the extra packages $2 (comma separated).
bootstrap() {
    local dir="$1" include="$2"
    mkdir -p "$CACHE"
    say "debootstrap --variant=minbase --include=$include $SUITE $dir $MIRROR"
    if ! debootstrap --variant=minbase --include="$include" --cache-dir="$CACHE" \
            "$SUITE" "$dir" "$MIRROR" >"$WORK/debootstrap.log" 2>&1; then
        tail -30 "$WORK/debootstrap.log" >&2
        die "debootstrap failed (full log above)"
    fi
}

# What debian:*-slim leaves out, and what must not be baked into an image.
trim() {
    local dir="$1"
    rm -rf "$dir"/var/cache/apt/archives/*.deb "$dir"/var/cache/apt/*.bin \
        "$dir"/var/lib/apt/lists/* "$dir"/var/log/* \
        "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* \
        "$dir"/usr/share/locale/* "$dir"/tmp/* "$dir"/var/tmp/*
    # The host's resolver config and name are not the image's.
    : > "$dir/etc/resolv.conf"
    echo localhost > "$dir/etc/hostname"
}

# docker import the tree at $1 as image $2 with extra Dockerfile instructions.
import() {
    local dir="$1" name="$2"; shift 2
    local changes=(--change "LABEL $LABEL=$(date -u +%Y-%m-%dT%H:%M:%SZ)")
    for c in "$@"; do changes+=(--change "$c"); done
    say "docker import -> $name"
    tar --numeric-owner --xattrs -C "$dir" -cf - . \
        | docker import "${changes[@]}" \
            --message "ec2metaproxy local base image (scripts/local-base-images.sh)" - "$name" >/dev/null
}

build_runtime() {
    local dir="$WORK/runtime"
    bootstrap "$dir" ca-certificates
    trim "$dir"
    import "$dir" "$RUNTIME_IMAGE" \
        'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'CMD ["bash"]'
}

build_rust() {
    local dir="$WORK/rust"
    bootstrap "$dir" ca-certificates,gcc,libc6-dev
    trim "$dir"
    local dest="$dir/usr/local/rust"
    say "copying the Rust toolchain $RUST_VERSION from $TOOLCHAIN"
    mkdir -p "$dest/bin" "$dest/lib/rustlib"
    cp -a "$TOOLCHAIN/bin/cargo" "$TOOLCHAIN/bin/rustc" "$dest/bin/"
    # librustc_driver, libLLVM: the compiler's own shared libraries.
    cp -a "$TOOLCHAIN"/lib/*.so* "$dest/lib/"
    # The standard library for the host target and rust-lld (the default linker).
    cp -a "$TOOLCHAIN/lib/rustlib/$HOST_TRIPLE" "$dest/lib/rustlib/"
    # On PATH through ENV, not symlinks: rustc finds its libraries relative to
    # its own directory ($ORIGIN/../lib).
    mkdir -p "$dir/usr/local/cargo" "$dir/usr/local/share/ec2metaproxy-local"
    cp "$HOST_CA" "$dir/usr/local/share/ec2metaproxy-local/host-ca-certificates.crt"
    import "$dir" "$RUST_IMAGE" \
        'ENV PATH=/usr/local/cargo/bin:/usr/local/rust/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
        'ENV CARGO_HOME=/usr/local/cargo' \
        'ENV CARGO_HTTP_CAINFO=/usr/local/share/ec2metaproxy-local/host-ca-certificates.crt' \
        'CMD ["bash"]'
    # Prove the copied toolchain runs there (rustc finds its libraries through
    # $ORIGIN, which needs /proc: a container, not a bare chroot).
    if ! docker run --rm --network none --label "$LABEL-check=1" "$RUST_IMAGE" sh -c 'rustc -vV && cargo -V && cc --version' >/dev/null; then
        docker rmi "$RUST_IMAGE" >/dev/null 2>&1 || true
        die "the toolchain copied into $RUST_IMAGE does not run there"
    fi
}

for pair in "runtime:$RUNTIME_IMAGE" "rust:$RUST_IMAGE"; do
    kind="${pair%%:*}" name="${pair#*:}"
    old_id=""
    if have_image "$name"; then
        if [ "$REBUILD" = 0 ]; then
            say "reusing $name"
            continue
        fi
        old_id="$(docker image inspect -f '{{.Id}}' "$name")"
    fi
    [ -n "$WORK" ] || WORK="$(mktemp -d /tmp/ec2mp-local-base-XXXXXX)"
    start=$SECONDS
    "build_$kind"
    rm -rf --one-file-system "${WORK:?}/$kind"
    # The image this one replaced, unless something still uses it.
    [ -z "$old_id" ] || docker rmi "$old_id" >/dev/null 2>&1 || true
    say "built $name in $((SECONDS - start)) s"
done

if [ "$PRINT_ENV" = 1 ]; then
    echo "RUST_IMAGE=$RUST_IMAGE"
    echo "RUNTIME_IMAGE=$RUNTIME_IMAGE"
fi
