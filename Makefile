# ec2metaproxy: build, test, demo, benchmark and package.
#   make demo    run the proxy end to end on real containers (README's "run it")
#   make test    the whole test suite: unit + raw-request tests, real containers and SDKs, packaging
GIT_REF ?= HEAD
TAG ?= latest
IMAGE ?= ec2metaproxy
CARGO ?= cargo

.PHONY: build release test unit e2e packaging lint demo bench builder runner docker clean

build:
	$(CARGO) build --release --locked

release: build

# Fast tests anywhere Rust is, then the real thing (Docker, moto, real SDK
# clients), then the packaging (firewall script, systemd unit, the image).
test: unit e2e packaging

# The benchmark programs' own tests too (bench/*.rs, built as examples): the
# open-loop load generator is the p99 target's measure (an [[example]]
# test = true in Cargo.toml would break the image's dependency stage, which
# builds against a stub tree).
unit:
	$(CARGO) test --locked
	$(CARGO) test --locked --examples

e2e:
	scripts/e2e.sh

packaging:
	tests/packaging/run.sh

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --all-targets --locked -- -D warnings

demo:
	scripts/demo.sh

bench:
	scripts/bench.sh

# Two-stage image: the builder image compiles GIT_REF; running it writes a tar
# of the binary and Dockerfile.run, which `runner` builds into a small image.
builder:
	scripts/docker-image.sh builder "$(GIT_REF)" "$(TAG)" "$(IMAGE)"

runner:
	scripts/docker-image.sh runner "$(GIT_REF)" "$(TAG)" "$(IMAGE)"

docker: builder runner

clean:
	$(CARGO) clean
	rm -rf .venv
