#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh), then runs every test:
#  - the host's unit tests, the SDK's tests and doctests, and the integration tests in tests/
#    (which build plugins/ and tests/guests/ from source and start real rocklets on 127.0.0.1
#    random ports, against a private dockerd this script starts);
#  - the built-in plugins' native unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A private Docker daemon for the tests (stopped by PID when this script exits).
source scripts/test-dockerd.sh
# The example tasks in Python, JavaScript and C, built from source (toolchains from PyPI, npm,
# Debian and crates.io, installed on first use into ~/.cache/quarry/toolchains).
bash scripts/build-examples.sh target/examples-wasm
export QUARRY_TEST_EXAMPLES_DIR=$PWD/target/examples-wasm
cargo test --workspace --locked
cargo test --manifest-path plugins/Cargo.toml --locked
