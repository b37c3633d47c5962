#!/usr/bin/env bash
# Installs what the dashboard's browser test (tests/dashboard/) needs; safe to run again:
#  - Debian's Chromium at /usr/bin/chromium (apt-get update + install, only when it is missing)
#  - playwright-core, pinned in tests/dashboard/package-lock.json (npm ci, only when the
#    lockfile changed since the last install; npm's cache under ~/.cache/quarry/npm)
# Nothing else is downloaded: playwright-core drives the system Chromium and fetches no browser.
# Quiet on success (one summary line); on failure it prints its log and exits non-zero.
set -euo pipefail
cd "$(dirname "$0")/.."

LOG="${QUARRY_SETUP_LOG:-target/setup-browser.log}"
mkdir -p "$(dirname "$LOG")"
LOG="$(cd "$(dirname "$LOG")" && pwd)/$(basename "$LOG")" # the npm step runs in another folder
: >"$LOG"
fail() {
    echo "setup-browser: $1 failed; its log ($LOG):" >&2
    cat "$LOG" >&2
    exit 1
}

if [ ! -x /usr/bin/chromium ]; then
    SUDO=()
    [ "$(id -u)" -eq 0 ] || SUDO=(sudo)
    "${SUDO[@]}" apt-get update >>"$LOG" 2>&1 || fail "apt-get update"
    DEBIAN_FRONTEND=noninteractive "${SUDO[@]}" apt-get install -y --no-install-recommends chromium \
        >>"$LOG" 2>&1 || fail "apt-get install chromium"
fi

DIR=tests/dashboard
# The lockfile may name the npm registry only: no git, tarball or other hosts.
if grep -E '"(resolved|version)": "(git|https?|file):' "$DIR/package-lock.json" \
    | grep -v '"resolved": "https://registry.npmjs.org/' >>"$LOG"; then
    fail "the lockfile check (a dependency not from the npm registry)"
fi
STAMP="$DIR/node_modules/.quarry-lock.sha256"
WANT="$(sha256sum "$DIR/package-lock.json" | cut -d' ' -f1)"
if [ "$(cat "$STAMP" 2>/dev/null)" != "$WANT" ]; then
    (cd "$DIR" && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund \
        --cache "$HOME/.cache/quarry/npm") >>"$LOG" 2>&1 || fail "npm ci in $DIR"
    echo "$WANT" >"$STAMP"
fi

CHROMIUM_VERSION="$(/usr/bin/chromium --version 2>>"$LOG")" || fail "chromium --version"
PW_VERSION="$(cd "$DIR" && node -p 'require("playwright-core/package.json").version' 2>>"$LOG")" \
    || fail "loading playwright-core"
echo "setup-browser: $CHROMIUM_VERSION and playwright-core $PW_VERSION ready"
