#!/usr/bin/env bash
# Quarry's benchmarks, one command from a fresh clone: installs what they need, builds in
# release, runs every scenario, prints the tables and writes them (with the machine and the
# date) into docs/benchmarks.md. Not a test: nothing fails on a missed target.
#
#  - scripts/setup.sh: the wasm32-wasip2 target and target/rocklet-venv (the real rocklet);
#  - target/bench-venv: ROCK's scheduler (PyPI rl-rock 1.11.0 and the exact set of packages in
#    bench/rock-requirements.txt; Ray is stubbed by bench/rock_driver.py);
#  - target/bench-componentize-py: componentize-py, for the Python guest of the overhead table;
#  - the built-in plugins and the bench guest (bench/guests) for wasm32-wasip2, release;
#  - quarry-bench (the host, release), then `quarry-bench suite`.
# The installs (network-bound) run in the background while the host builds (CPU-bound).
#
# Steps: QUARRY_BENCH_STEPS (default all: overhead,plugins,versus,scale,statedb); each step's
# tables replace only their own block of docs/benchmarks.md.
# Budget: 15 minutes in all (QUARRY_BENCH_BUDGET_SECS, default 900). The suite skips, and
# reports as skipped, any scenario that would not fit in what the installs and builds left.
# Scratch files and logs: target/bench-work (results.json, logs/, the rocklets' access logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
BUDGET=${QUARRY_BENCH_BUDGET_SECS:-900}
say() { echo "[bench $(($(date +%s) - START))s] $*" >&2; }
mkdir -p target/bench-logs

# --- installs, in the background ------------------------------------------------------------

ROCK_VENV=target/bench-venv
ROCK_CHECK='import sys, types; sys.modules.setdefault("ray", types.ModuleType("ray")); import rock.admin.scheduler.scheduler, rock.admin.scheduler.tasks.file_cleanup_task'
install_rock() {
    if "$ROCK_VENV/bin/python" -c "$ROCK_CHECK" >/dev/null 2>&1; then
        return 0
    fi
    echo "installing ROCK's scheduler into $ROCK_VENV (rl-rock 1.11.0, pinned set)"
    rm -rf "$ROCK_VENV"
    python3 -m venv "$ROCK_VENV"
    "$ROCK_VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r bench/rock-requirements.txt
    "$ROCK_VENV/bin/python" -c "$ROCK_CHECK"
}

# componentize-py as scripts/build-examples.sh pins it (same version, same world).
CPY_VENV=target/bench-componentize-py
CPY_VERSION=$(sed -n 's/^COMPONENTIZE_PY_VERSION=//p' scripts/build-examples.sh 2>/dev/null | head -1)
CPY_VERSION=${CPY_VERSION:-0.25.1}
PY_WORLD=$(sed -n 's/^WORLD=//p' scripts/build-examples.sh 2>/dev/null | head -1)
PY_WORLD=${PY_WORLD:-task-plugin}
install_componentize_py() {
    if [[ $("$CPY_VENV/bin/componentize-py" --version 2>/dev/null) == "componentize-py $CPY_VERSION" ]]; then
        return 0
    fi
    rm -rf "$CPY_VENV"
    python3 -m venv "$CPY_VENV"
    "$CPY_VENV/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$CPY_VERSION"
}

say "installing in the background: wasm target and rocklet (scripts/setup.sh), ROCK's scheduler, componentize-py"
(bash scripts/setup.sh) >target/bench-logs/setup.log 2>&1 &
SETUP_PID=$!
(set -e; install_rock) >target/bench-logs/rock-venv.log 2>&1 &
ROCK_PID=$!
(set -e; install_componentize_py) >target/bench-logs/componentize-py.log 2>&1 &
CPY_PID=$!

# --- the host, in release -------------------------------------------------------------------

say "building quarry-bench (release; a first build compiles wasmtime and takes minutes)"
BUILD_START=$(date +%s)
cargo build --release --locked -p quarry-bench
BUILD_SECS=$(($(date +%s) - BUILD_START))

wait_for() { # pid name log
    if ! wait "$1"; then
        echo "bench: $2 failed; its log ($3):" >&2
        tail -30 "$3" >&2
        exit 1
    fi
}
wait_for $SETUP_PID "scripts/setup.sh" target/bench-logs/setup.log
wait_for $ROCK_PID "installing ROCK's scheduler" target/bench-logs/rock-venv.log
CPY_OK=1
wait "$CPY_PID" || {
    CPY_OK=0
    say "componentize-py did not install (target/bench-logs/componentize-py.log); the Python row stays a TODO"
}

# --- the guests -----------------------------------------------------------------------------

say "building the wasm components (release)"
cargo build --quiet --release --locked --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml --target-dir target/wasm
cargo build --quiet --release --locked --target wasm32-wasip2 \
    --manifest-path bench/guests/Cargo.toml --target-dir target/wasm

# The Python guest of the host-overhead table: examples/python/disk_usage, built the way
# scripts/build-examples.sh builds it, but only this example (the JavaScript and C toolchains
# take many minutes to install).
PY_GUEST=()
if [[ $CPY_OK == 1 && -f examples/python/disk_usage/app.py ]]; then
    say "building the Python guest (componentize-py $CPY_VERSION)"
    out=target/bench-guests
    rm -rf "$out/py-src" && mkdir -p "$out/py-src" && cp examples/python/disk_usage/*.py "$out/py-src/"
    if (cd "$out" && "$ROOT/$CPY_VENV/bin/componentize-py" -d "$ROOT/wit" -w "$PY_WORLD" \
        componentize -p py-src app -o disk_usage_py.wasm >/dev/null); then
        PY_GUEST=(--python-guest "$out/disk_usage_py.wasm")
    else
        say "the Python guest did not build; its row stays a TODO"
    fi
fi

# --- the suite ------------------------------------------------------------------------------

say "running the suite"
target/release/quarry-bench suite \
    --started-at "$START" --budget-secs "$BUDGET" \
    --steps "${QUARRY_BENCH_STEPS:-overhead,plugins,versus,scale,statedb}" \
    --fact "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --fact "command=${QUARRY_BENCH_STEPS:+QUARRY_BENCH_STEPS=$QUARRY_BENCH_STEPS }bash scripts/bench.sh" \
    --fact "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')" \
    --fact "rustc=$(rustc --version)" \
    --fact "ROCK=rl-rock $("$ROCK_VENV/bin/pip" show rl-rock 2>/dev/null | sed -n 's/^Version: //p'), $("$ROCK_VENV/bin/python" --version 2>&1)" \
    --fact "release build of quarry-bench=${BUILD_SECS} s" \
    --fact "installs and builds before the suite=$(($(date +%s) - START)) s" \
    "${PY_GUEST[@]}" \
    --out docs/benchmarks.md
say "done in $(($(date +%s) - START))s; tables in docs/benchmarks.md, raw data in target/bench-work/results.json"
