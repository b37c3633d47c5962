#!/usr/bin/env bash
# Builds the example tasks written in Python, JavaScript and C into OUT_DIR:
#
#   scripts/build-examples.sh OUT_DIR
#     -> OUT_DIR/disk_usage_py.wasm   examples/python/disk_usage/app.py  (componentize-py)
#        OUT_DIR/disk_usage_js.wasm   examples/js/disk_usage/app.js      (componentize-js)
#        OUT_DIR/disk_usage_c.wasm    examples/c/disk_usage/app.c        (wit-bindgen c + clang + wasm-tools)
#
# Installs what is missing first, into $QUARRY_TOOLCHAINS_DIR (default ~/.cache/quarry/toolchains,
# shared by clones so that the 10-20 minute cargo installs happen once per machine; nothing else outside the repository except
# Debian packages and cargo's download cache):
#   - py/       a venv with componentize-py (pip)
#   - js/       componentize-js from examples/js/disk_usage/package{,-lock}.json (npm)
#   - bin/      wasm-tools and wit-bindgen-cli (cargo install --locked)
#   - adapter/  the wasi_snapshot_preview1 reactor adapter, taken from the crates.io package
#               wasi-preview1-component-adapter-provider (fetched by cargo)
#   - clang, lld, wasi-libc and compiler-rt for wasm32 (apt-get), only when clang cannot build
#     a wasm32-wasi reactor.
# Nothing is downloaded except through pip, npm, cargo and apt-get.
#
# Idempotent and quick once installed: each component is built in target/examples-build/ and
# rebuilt only when its inputs (sources, WIT, toolchain versions, this script) change; OUT_DIR
# gets a copy, replaced atomically. Heavy steps run under `nice -n 19`.
set -euo pipefail

COMPONENTIZE_PY_VERSION=0.25.1
COMPONENTIZE_JS_VERSION=0.23.0 # must match examples/js/disk_usage/package.json
WASM_TOOLS_VERSION=1.263.0
WIT_BINDGEN_VERSION=0.63.0
ADAPTER_CRATE=wasi-preview1-component-adapter-provider
ADAPTER_VERSION=48.0.8
APT_PACKAGES=(clang lld wasi-libc libclang-rt-14-dev-wasm32)
CLANG=${CLANG:-clang}
WORLD=task-plugin

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
TC=${QUARRY_TOOLCHAINS_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/quarry/toolchains}
BUILD=$ROOT/target/examples-build
WIT=$ROOT/wit
EX=$ROOT/examples
NICE=(nice -n 19)

say() { echo "build-examples: $*" >&2; }
die() {
    echo "build-examples: error: $*" >&2
    exit 1
}
need() {
    command -v "$1" >/dev/null 2>&1 || die "'$1' not found on PATH; $2"
}
elapsed() { echo "$((SECONDS - $1)) s"; }

if [[ $# -ne 1 || $1 == -h || $1 == --help ]]; then
    echo "usage: $0 OUT_DIR   (writes disk_usage_py.wasm, disk_usage_js.wasm, disk_usage_c.wasm)" >&2
    exit 2
fi
mkdir -p "$1" || die "cannot create output directory $1"
OUT=$(cd "$1" && pwd)

need python3 "install Python 3 (with the venv module)"
need node "install Node.js (>= 20.19) and npm"
need npm "install npm"
need cargo "install Rust with rustup"
need sha256sum "install coreutils"
mkdir -p "$TC" "$BUILD"

# ---------------------------------------------------------------------------------------------
# Toolchains

ensure_componentize_py() {
    local bin=$TC/py/bin/componentize-py
    if [[ -x $bin && $("$bin" --version 2>/dev/null) == "componentize-py $COMPONENTIZE_PY_VERSION" ]]; then
        return
    fi
    local t=$SECONDS
    say "installing componentize-py $COMPONENTIZE_PY_VERSION into $TC/py (pip)"
    rm -rf "$TC/py"
    python3 -m venv "$TC/py" || die "python3 -m venv failed (on Debian: apt-get install python3-venv)"
    "${NICE[@]}" "$TC/py/bin/pip" install --quiet --disable-pip-version-check \
        "componentize-py==$COMPONENTIZE_PY_VERSION" || die "pip install componentize-py==$COMPONENTIZE_PY_VERSION failed"
    [[ $("$bin" --version 2>/dev/null) == "componentize-py $COMPONENTIZE_PY_VERSION" ]] ||
        die "componentize-py was installed but '$bin --version' does not say $COMPONENTIZE_PY_VERSION"
    say "componentize-py installed in $(elapsed $t)"
}

# package.json also pins @bytecodealliance/preview2-shim: componentize-js 0.23.0 imports it at
# run time but lists it only as a devDependency, so without the pin it is present or not
# depending on how npm hoists jco's copies ("Cannot find package '@bytecodealliance/preview2-shim'").
#
# npm installs into a copy of the committed package.json + package-lock.json, so that
# node_modules never lands in examples/. `npm ci` is not used: a lock written where the registry
# serves only some of rolldown's platform binaries lacks the others, and `npm ci` then refuses
# ("Missing: @rolldown/binding-... from lock file"); `npm install` follows the lock regardless.
ensure_componentize_js() {
    local dir=$TC/js src=$EX/js/disk_usage
    local pkg=$dir/node_modules/@bytecodealliance/componentize-js/package.json
    if [[ -x $dir/node_modules/.bin/componentize-js && -f $pkg ]] &&
        cmp -s "$src/package.json" "$dir/package.json" &&
        cmp -s "$src/package-lock.json" "$dir/package-lock.json.committed"; then
        return
    fi
    local t=$SECONDS
    say "installing componentize-js $COMPONENTIZE_JS_VERSION into $dir (npm install, from $src/package-lock.json)"
    mkdir -p "$dir"
    rm -rf "$dir/node_modules"
    cp "$src/package.json" "$dir/package.json"
    cp "$src/package-lock.json" "$dir/package-lock.json"
    (cd "$dir" && "${NICE[@]}" npm install --no-audit --no-fund --loglevel=error >&2) || die "npm install in $dir failed"
    local got
    got=$(node -p "require(process.argv[1]).version" "$pkg" 2>/dev/null) || got=none
    [[ $got == "$COMPONENTIZE_JS_VERSION" ]] ||
        die "npm installed componentize-js $got, expected $COMPONENTIZE_JS_VERSION (check $src/package.json)"
    cp "$src/package-lock.json" "$dir/package-lock.json.committed" # marks the install as done
    say "componentize-js installed in $(elapsed $t)"
}

ensure_cargo_tool() { # crate version binary expected-version-line
    local crate=$1 version=$2 bin=$TC/bin/$3 expect=$4
    if [[ -x $bin && $("$bin" --version 2>/dev/null) == "$expect" ]]; then
        return
    fi
    local t=$SECONDS
    say "installing $crate $version into $TC/bin (cargo install --locked; takes several minutes)"
    "${NICE[@]}" cargo install --locked --quiet --root "$TC" "$crate@$version" || die "cargo install $crate@$version failed"
    [[ $("$bin" --version 2>/dev/null) == "$expect" ]] ||
        die "cargo installed $crate but '$bin --version' does not say '$expect'"
    say "$crate installed in $(elapsed $t)"
}

# The adapter ships as a file inside the crate: a throwaway crate depending on it makes cargo
# download and unpack it (cargo metadata), and cargo metadata tells where it was unpacked.
ADAPTER=$TC/adapter/wasi_snapshot_preview1.reactor.wasm
ensure_adapter() {
    [[ -s $ADAPTER && -f $TC/adapter/version && $(cat "$TC/adapter/version") == "$ADAPTER_VERSION" ]] && return
    local t=$SECONDS dir=$TC/adapter
    say "fetching $ADAPTER_CRATE $ADAPTER_VERSION with cargo"
    mkdir -p "$dir/src"
    : >"$dir/src/lib.rs"
    cat >"$dir/Cargo.toml" <<EOF
[package]
name = "fetch-wasi-adapter"
version = "0.0.0"
edition = "2021"
publish = false

[lib]
path = "src/lib.rs"

[dependencies]
$ADAPTER_CRATE = "=$ADAPTER_VERSION"

# Not a member of the repository's workspace.
[workspace]
EOF
    local manifest
    manifest=$(cargo metadata --quiet --format-version 1 --manifest-path "$dir/Cargo.toml" |
        python3 -c 'import json, sys
name, version = sys.argv[1], sys.argv[2]
for p in json.load(sys.stdin)["packages"]:
    if p["name"] == name and p["version"] == version:
        print(p["manifest_path"])' "$ADAPTER_CRATE" "$ADAPTER_VERSION") ||
        die "cargo could not fetch $ADAPTER_CRATE $ADAPTER_VERSION"
    [[ -n $manifest ]] || die "cargo metadata did not list $ADAPTER_CRATE $ADAPTER_VERSION"
    local file
    file=$(dirname "$manifest")/artefacts/wasi_snapshot_preview1.reactor.wasm
    [[ -s $file ]] || die "$file is missing from the $ADAPTER_CRATE crate"
    cp "$file" "$ADAPTER.tmp" && mv "$ADAPTER.tmp" "$ADAPTER"
    echo "$ADAPTER_VERSION" >"$dir/version"
    say "adapter ready in $(elapsed $t) ($file)"
}

# clang must compile and link a wasm32-wasi reactor against wasi-libc (malloc, snprintf: libc
# and compiler-rt builtins); only when it cannot, install the Debian packages.
clang_works() {
    local d=$BUILD/clang-check
    mkdir -p "$d"
    printf '%s\n' '#include <stdio.h>' '#include <stdlib.h>' \
        'int probe(int n) { char b[32]; char *p = malloc((size_t)n + 1); int r = snprintf(b, sizeof b, "%lld %f", (long long)n * 3, n / 7.0); free(p); return r; }' \
        >"$d/probe.c"
    command -v "$CLANG" >/dev/null 2>&1 &&
        "$CLANG" --target=wasm32-wasi -O2 -mexec-model=reactor -o "$d/probe.wasm" "$d/probe.c" >"$d/log" 2>&1
}
ensure_clang() {
    clang_works && return
    local t=$SECONDS sudo=()
    say "clang cannot build for wasm32-wasi ($(tail -1 "$BUILD/clang-check/log" 2>/dev/null || echo "$CLANG not found")); installing ${APT_PACKAGES[*]} (apt-get)"
    if [[ $(id -u) -ne 0 ]]; then
        command -v sudo >/dev/null 2>&1 || die "not root and no sudo: run 'apt-get install -y ${APT_PACKAGES[*]}' as root"
        sudo=(sudo)
    fi
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get install -y "${APT_PACKAGES[@]}" ||
        die "apt-get install -y ${APT_PACKAGES[*]} failed (run 'apt-get update' first?)"
    clang_works || die "clang still cannot build for wasm32-wasi after apt-get install: $(cat "$BUILD/clang-check/log")"
    say "clang toolchain installed in $(elapsed $t)"
}

ensure_componentize_py
ensure_componentize_js
ensure_cargo_tool wasm-tools "$WASM_TOOLS_VERSION" wasm-tools "wasm-tools $WASM_TOOLS_VERSION"
ensure_cargo_tool wit-bindgen-cli "$WIT_BINDGEN_VERSION" wit-bindgen "wit-bindgen-cli $WIT_BINDGEN_VERSION"
ensure_adapter
ensure_clang
WASM_TOOLS=$TC/bin/wasm-tools
WIT_BINDGEN=$TC/bin/wit-bindgen

# ---------------------------------------------------------------------------------------------
# Components

# shellcheck disable=SC2054 # the comma in -Wl,--strip-debug is part of the flag
C_FLAGS=(--target=wasm32-wasi -Oz -mexec-model=reactor -Wall -Wextra -Werror -Wl,--strip-debug)

# Prints a hash of the given files' contents plus the toolchain versions and this script.
inputs_hash() {
    {
        printf '%s\n' "$COMPONENTIZE_PY_VERSION" "$COMPONENTIZE_JS_VERSION" "$WASM_TOOLS_VERSION" \
            "$WIT_BINDGEN_VERSION" "$ADAPTER_VERSION" "${C_FLAGS[*]}" "$("$CLANG" --version | head -1)"
        sha256sum "$ROOT/scripts/build-examples.sh" "$WIT"/*.wit "$@"
    } | sha256sum | cut -d' ' -f1
}

# Checks a built component: the host provides quarry:task/host and WASI, nothing else (a
# componentize-js build without `-d http fetch-event` would import wasi:http).
check_component() {
    local wasm=$1 wit
    wit=$("$WASM_TOOLS" component wit "$wasm") || die "$wasm is not a valid component"
    grep -q "export quarry:task/task@" <<<"$wit" || die "$wasm does not export quarry:task/task"
    local bad
    bad=$(grep -E '^\s*import ' <<<"$wit" | grep -vE 'import (wasi:(io|cli|clocks|filesystem|random|sockets)/|quarry:task/host@)' || true)
    [[ -z $bad ]] || die "$wasm imports what the Quarry host does not provide: $bad"
}

# build NAME INPUT_FILE... -- COMMAND...: runs COMMAND (which writes $BUILD/NAME.wasm.tmp) unless
# $BUILD/NAME.wasm is up to date, then copies it into OUT_DIR.
build() {
    local name=$1
    shift
    local inputs=()
    while [[ $1 != -- ]]; do
        inputs+=("$1")
        shift
    done
    shift
    local built=$BUILD/$name.wasm stamp=$BUILD/$name.inputs hash
    hash=$(inputs_hash "${inputs[@]}")
    if [[ -s $built && -f $stamp && $(cat "$stamp") == "$hash" ]]; then
        say "$name: up to date"
    else
        local t=$SECONDS
        say "$name: building"
        rm -f "$built.tmp" "$stamp"
        "$@" || die "$name: build failed (command: $*)"
        [[ -s $built.tmp ]] || die "$name: the build wrote no $built.tmp"
        check_component "$built.tmp"
        mv "$built.tmp" "$built"
        echo "$hash" >"$stamp"
        say "$name: built in $(elapsed $t), $(stat -c %s "$built") bytes"
    fi
    if ! cmp -s "$built" "$OUT/$name.wasm"; then
        # a hidden temporary name: the host skips dot-files, so it never sees a partial file
        cp "$built" "$OUT/.$name.wasm.tmp" && mv "$OUT/.$name.wasm.tmp" "$OUT/$name.wasm"
    fi
}

# Python: componentize-py generates the bindings itself. It imports app.py while pre-initialising,
# which writes __pycache__ next to it, so it builds from a copy of the sources.
build_py() {
    local src=$BUILD/py-src
    rm -rf "$src"
    mkdir -p "$src" || return
    cp "$EX/python/disk_usage/"*.py "$src/" || return
    (cd "$BUILD" && "${NICE[@]}" "$TC/py/bin/componentize-py" -d "$WIT" -w "$WORLD" \
        componentize -p "$src" app -o "$BUILD/disk_usage_py.wasm.tmp" >/dev/null)
}

# JavaScript: componentize-js (not jco componentize). `-d http fetch-event` keeps wasi:http out.
build_js() {
    "${NICE[@]}" "$TC/js/node_modules/.bin/componentize-js" "$EX/js/disk_usage/app.js" \
        --wit "$WIT" --world-name "$WORLD" -d http fetch-event -o "$BUILD/disk_usage_js.wasm.tmp" >/dev/null
}

# C: bindings from wit-bindgen c (into target/, never committed), a wasm32-wasi reactor core
# module from Debian's clang + wasi-libc, made a component with the preview1 reactor adapter.
# (`set -e` does not apply inside a function called as `f || die`: every step checks itself.)
build_c() {
    local gen=$BUILD/c-gen core=$BUILD/disk_usage_c.core.wasm
    rm -rf "$gen" "$core"
    "$WIT_BINDGEN" c "$WIT" --world "$WORLD" --out-dir "$gen" >"$BUILD/c-gen.log" 2>&1 ||
        { cat "$BUILD/c-gen.log" >&2; return 1; }
    "${NICE[@]}" "$CLANG" "${C_FLAGS[@]}" -I "$gen" -o "$core" \
        "$EX/c/disk_usage/app.c" "$gen/task_plugin.c" "$gen/task_plugin_component_type.o" || return
    "$WASM_TOOLS" component new "$core" --adapt "wasi_snapshot_preview1=$ADAPTER" \
        -o "$BUILD/disk_usage_c.wasm.tmp"
}

build disk_usage_py "$EX/python/disk_usage/"*.py -- build_py
build disk_usage_js "$EX/js/disk_usage/app.js" "$EX/js/disk_usage/package.json" "$EX/js/disk_usage/package-lock.json" -- build_js
build disk_usage_c "$EX/c/disk_usage/app.c" -- build_c

say "done: $OUT/disk_usage_py.wasm, $OUT/disk_usage_js.wasm, $OUT/disk_usage_c.wasm"
