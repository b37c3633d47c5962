#!/usr/bin/env bash
# Quarry's benchmarks, one command from a fresh clone: installs what they need, builds in
# release, runs every scenario, prints the tables and writes them (with the machine and the
# date) into docs/benchmarks.md. Not a test: nothing fails on a missed target.
#
#  - scripts/setup.sh: the wasm32-wasip2 target and target/rocklet-venv (the real rocklet);
#  - target/bench-venv: ROCK's scheduler (PyPI rl-rock 1.11.0 and the exact set of packages in
#    bench/rock-requirements.txt; Ray is stubbed by bench/rock_driver.py);
#  - the built-in plugins and the bench guest (bench/guests) for wasm32-wasip2, release;
#  - quarry-bench (the host, release), then `quarry-bench suite`.
#
# Budget: 15 minutes in all (QUARRY_BENCH_BUDGET_SECS, default 900). The suite skips, and
# reports as skipped, any scenario that would not fit in what the installs and builds left.
# Scratch files and logs: target/bench-work (results.json, logs/, the rocklets' access logs).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
START=$(date +%s)
BUDGET=${QUARRY_BENCH_BUDGET_SECS:-900}
say() { echo "[bench $(( $(date +%s) - START ))s] $*" >&2; }

say "setup: wasm target and rocklet venv"
bash scripts/setup.sh >&2

VENV=target/bench-venv
ROCK_CHECK='import sys, types; sys.modules.setdefault("ray", types.ModuleType("ray")); import rock.admin.scheduler.scheduler, rock.admin.scheduler.tasks.file_cleanup_task'
if ! "$VENV/bin/python" -c "$ROCK_CHECK" >/dev/null 2>&1; then
    say "installing ROCK's scheduler into $VENV (rl-rock 1.11.0, pinned set)"
    rm -rf "$VENV"
    mkdir -p target
    python3 -m venv "$VENV"
    "$VENV/bin/pip" install --quiet --disable-pip-version-check --no-deps -r bench/rock-requirements.txt
    "$VENV/bin/python" -c "$ROCK_CHECK"
fi

say "building the wasm components (release)"
cargo build --quiet --release --locked --target wasm32-wasip2 \
    --manifest-path plugins/Cargo.toml --target-dir target/wasm
cargo build --quiet --release --locked --target wasm32-wasip2 \
    --manifest-path bench/guests/Cargo.toml --target-dir target/wasm

say "building quarry-bench (release; the first build compiles wasmtime and takes minutes)"
BUILD_START=$(date +%s)
cargo build --release --locked -p quarry-bench
BUILD_SECS=$(( $(date +%s) - BUILD_START ))

# The Python guest of the host-overhead row: examples/python/disk_usage built with
# componentize-py the way scripts/build-examples.sh builds it (same version, same world), but
# only this example: the others need toolchains that take many minutes to install.
PY_GUEST=()
build_python_guest() {
    local version world venv=target/bench-componentize-py out=target/bench-guests
    version=$(sed -n 's/^COMPONENTIZE_PY_VERSION=//p' scripts/build-examples.sh 2>/dev/null | head -1)
    world=$(sed -n 's/^WORLD=//p' scripts/build-examples.sh 2>/dev/null | head -1)
    version=${version:-0.25.1}
    world=${world:-task-plugin}
    if [[ $("$venv/bin/componentize-py" --version 2>/dev/null) != "componentize-py $version" ]]; then
        rm -rf "$venv"
        python3 -m venv "$venv" &&
            "$venv/bin/pip" install --quiet --disable-pip-version-check "componentize-py==$version" || return 1
    fi
    rm -rf "$out/py-src" && mkdir -p "$out/py-src" && cp examples/python/disk_usage/*.py "$out/py-src/" || return 1
    (cd "$out" && "$ROOT/$venv/bin/componentize-py" -d "$ROOT/wit" -w "$world" \
        componentize -p py-src app -o disk_usage_py.wasm >/dev/null) || return 1
    PY_GUEST=(--python-guest "$out/disk_usage_py.wasm")
}
if [ -f examples/python/disk_usage/app.py ]; then
    say "building the Python guest (componentize-py)"
    build_python_guest || say "the Python guest did not build; its row stays a TODO"
fi

say "running the suite"
target/release/quarry-bench suite \
    --started-at "$START" --budget-secs "$BUDGET" \
    --fact "date=$(date -u '+%Y-%m-%d %H:%M UTC')" \
    --fact "command=bash scripts/bench.sh" \
    --fact "commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' + uncommitted changes')" \
    --fact "rustc=$(rustc --version)" \
    --fact "ROCK=rl-rock $("$VENV/bin/pip" show rl-rock 2>/dev/null | sed -n 's/^Version: //p'), $("$VENV/bin/python" --version 2>&1)" \
    --fact "release build of quarry-bench=${BUILD_SECS} s" \
    --fact "installs and builds before the suite=$(( $(date +%s) - START )) s" \
    "${PY_GUEST[@]}" \
    --out docs/benchmarks.md
say "done in $(( $(date +%s) - START ))s; tables in docs/benchmarks.md, raw data in target/bench-work/results.json"
