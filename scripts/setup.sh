#!/usr/bin/env bash
# Installs what building and testing Quarry needs on a fresh clone; safe to run again.
#  - the wasm32-wasip2 Rust target (guests and built-in plugins are wasm components)
#  - target/rocklet-venv: a Python venv with ROCK's real rocklet from PyPI (rl-rock 1.11.0)
# Nothing is downloaded except through rustup, cargo and pip.
set -euo pipefail
cd "$(dirname "$0")/.."

rustup target add wasm32-wasip2

VENV=target/rocklet-venv
if ! "$VENV/bin/rocklet" --version >/dev/null 2>&1; then
    mkdir -p target
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps rl-rock==1.11.0
    "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/rocklet-requirements.txt
fi
echo "setup: wasm32-wasip2 target and $VENV/bin/rocklet ($("$VENV/bin/rocklet" --version 2>&1 | tail -1)) ready"
