# dbsync — common entry points. `make test` is what CI runs (.ci/run).
CARGO ?= cargo
export CARGO_TERM_COLOR ?= never

.PHONY: all build test test-unit bench demo lint fmt deps clean

all: build

build:
	$(CARGO) build --workspace

# Installs what the tests need on a fresh machine (PostgreSQL server binaries), then runs
# every test: unit tests, the stand-in conformance suite and the end-to-end suites.
test: deps
	$(CARGO) build --workspace --bins
	$(CARGO) test --workspace -- --test-threads=2

bench: deps
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p dbsync-testkit --bin dbsync-bench -- all

demo: deps
	$(CARGO) build --release --workspace --bins
	$(CARGO) run --release -p dbsync-testkit --bin dbsync-demo

lint:
	$(CARGO) fmt --all -- --check
	$(CARGO) clippy --workspace --all-targets -- -D warnings

fmt:
	$(CARGO) fmt --all

deps:
	@./scripts/install-deps.sh

clean:
	$(CARGO) clean
