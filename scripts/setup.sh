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
    # pip's output (including its notice that rl-rock's server-side dependencies are not
    # installed, on purpose: only the rocklet's are) goes to a log, shown only on failure.
    LOG=target/setup-rocklet.log
    if ! {
        python3 -m venv "$VENV" &&
            "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps rl-rock==1.11.0 &&
            "$VENV/bin/pip" install --quiet --disable-pip-version-check -r scripts/rocklet-requirements.txt
    } >"$LOG" 2>&1; then
        echo "setup: installing the rocklet into $VENV failed; its log ($LOG):" >&2
        cat "$LOG" >&2
        exit 1
    fi
fi
echo "setup: wasm32-wasip2 target and $VENV/bin/rocklet ($("$VENV/bin/rocklet" --version 2>&1 | tail -1)) ready"
