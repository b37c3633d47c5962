#!/usr/bin/env bash
# Installs what the tests need (scripts/setup.sh), then runs every test, both tiers:
#  - the host's unit tests, the SDK's (also with its `fake` feature) and the test kit's tests
#    and doctests, and the integration tests in tests/ (which build plugins/ and tests/guests/
#    from source): the hermetic ones, and with QUARRY_TEST_REAL_PARTS=1 those that start real
#    rocklets on 127.0.0.1 random ports, against a private dockerd, a registry, an S3-compatible
#    store, Ray and docuum this script provides;
#  - the built-in plugins' native unit tests.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
# A private Docker daemon for the tests (stopped by PID when this script exits).
source scripts/test-dockerd.sh
# A private registry (htpasswd auth, 127.0.0.1, random port) for image_pull's logins.
source scripts/test-registry.sh
# An S3-compatible store (moto in server mode, authentication on, 127.0.0.1, random port) for
# sandbox_log_archive's uploads.
source scripts/test-s3.sh
# The example tasks in Python, JavaScript and C, built from source (toolchains from PyPI, npm,
# Debian and crates.io, installed on first use into ~/.cache/quarry/toolchains).
bash scripts/build-examples.sh target/examples-wasm
# Debian's Chromium and playwright-core (npm) for the dashboard's real-browser test.
bash scripts/setup-browser.sh
export QUARRY_TEST_EXAMPLES_DIR=$PWD/target/examples-wasm
# A real Ray (PyPI ray[default]) for the worker-discovery tests, installed once per machine;
# the tests start a head and a worker node on loopback addresses and stop them by pid.
RAY_VENV=${XDG_CACHE_HOME:-$HOME/.cache}/quarry/ray-venv
if ! "$RAY_VENV/bin/ray" --version 2>/dev/null | grep -q "2.60.0"; then
    python3 -m venv "$RAY_VENV"
    "$RAY_VENV/bin/pip" install --quiet --disable-pip-version-check 'ray[default]==2.60.0'
fi
export QUARRY_TEST_RAY_BIN=$RAY_VENV/bin/ray
# Real docuum from crates.io for image_cleanup's tests (Quarry never pipes an installer into a
# shell), installed once per machine into the cache.
TOOLS=${XDG_CACHE_HOME:-$HOME/.cache}/quarry/tools
if ! "$TOOLS/bin/docuum" --version 2>/dev/null | grep -q "0.27.3"; then
    cargo install --locked --quiet --root "$TOOLS" docuum --version 0.27.3
fi
export QUARRY_TEST_DOCUUM_BIN=$TOOLS/bin/docuum
# The real-parts tier: without it those tests skip themselves; with it a missing part fails.
export QUARRY_TEST_REAL_PARTS=1
cargo test --workspace --locked
# The SDK's fake worker (feature `fake`, used by the plugins' tests): its doctest.
cargo test -p quarry-sdk --features fake --locked --doc
cargo test --manifest-path plugins/Cargo.toml --locked
