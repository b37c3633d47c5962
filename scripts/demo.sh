#!/usr/bin/env bash
# Quarry demo: file_cleanup on the embedded `local` worker (no rocklet needed).
# Builds the host and the built-in plugins, creates demo/ with files of every kind, runs the
# task once, and shows what was deleted and what was kept.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
bash scripts/setup.sh >/dev/null

echo "== building the built-in plugins (wasm32-wasip2) and the quarry host"
cargo build --quiet --release --target wasm32-wasip2 --manifest-path plugins/Cargo.toml --target-dir target/wasm
mkdir -p target/quarry-plugins
cp target/wasm/wasm32-wasip2/release/file_cleanup.wasm target/quarry-plugins/
cargo build --quiet -p quarry-host
QUARRY=$ROOT/target/debug/quarry

echo "== plugins"
"$QUARRY" plugins --plugins-dir target/quarry-plugins

echo "== creating demo/"
rm -rf demo && mkdir -p demo/data/logs/web-1 demo/data/logs/nested/empty-old demo/bin
D=$ROOT/demo/data/logs
old() { touch -d '3 days ago' "$@"; }
echo old   > "$D/old.log";            old "$D/old.log"
echo young > "$D/young.log"
head -c 2097152 /dev/zero > "$D/big.bin"                 # young but 2 MiB > max_file_size 1M
echo keep  > "$D/docuum.log";         old "$D/docuum.log"      # excluded by name
echo keep  > "$D/rocklet.log";        old "$D/rocklet.log"     # excluded as ./rocklet.log
echo keep  > "$D/web-1/app.log";      old "$D/web-1/app.log"   # dir of a running container
echo old   > "$D/nested/stale.txt";   old "$D/nested/stale.txt"
old "$D/nested/empty-old"                                      # old empty dir: pruned
# A stand-in `docker` on the local worker's PATH that reports one running container, web-1,
# so the demo shows container protection without a Docker daemon.
cat > demo/bin/docker <<'SH'
#!/bin/sh
[ "$1" = ps ] && { echo web-1; exit 0; }
echo "demo docker: unsupported: $*" >&2; exit 1
SH
chmod +x demo/bin/docker

echo "-- before:"; (cd "$D" && find . -mindepth 1 | sort)

PARAMS=$(cat <<JSON
{"target_dirs": [{"path": "$D", "exclude_files": ["docuum.log", "./rocklet.log"]}],
 "max_age_mins": 60, "max_file_size": "1M"}
JSON
)
echo "== quarry run file_cleanup (worker: local)"
PATH=$ROOT/demo/bin:$PATH "$QUARRY" run file_cleanup --plugins-dir target/quarry-plugins \
    --params "$PARAMS" --status-dir "$ROOT/demo/status" --report-dir "$ROOT/demo/reports" \
    > demo/report.json
echo "-- run report (demo/reports/file_cleanup_run_report.json):"; cat demo/report.json
echo "-- the worker's status file is demo/status/file_cleanup_status.json (its extra is the detail above)"
echo "-- after (kept):"; (cd "$D" && find . -mindepth 1 | sort)
