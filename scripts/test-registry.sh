#!/usr/bin/env bash
# Sourced by scripts/test.sh after scripts/test-dockerd.sh: starts a private Docker registry
# (Debian docker-registry, distribution 2.8) on 127.0.0.1:<free port>, plain HTTP with htpasswd
# (bcrypt) auth and a config of its own (never the package's, which listens on :5000 on every
# interface), and stops it, by PID, when the calling shell exits (after whatever EXIT trap was
# already set, such as the test dockerd's). The dockerd treats 127.0.0.0/8 as an insecure
# registry, so HTTP login, push and pull work without a daemon.json.
# Exports QUARRY_TEST_REGISTRY (127.0.0.1:PORT), QUARRY_TEST_REGISTRY_USER and
# QUARRY_TEST_REGISTRY_PASSWORD (random, with shell metacharacters on purpose).

QUARRY_REGISTRY_DIR=${QUARRY_REGISTRY_DIR:-$PWD/target/test-registry}
if ! command -v docker-registry >/dev/null 2>&1 || ! command -v htpasswd >/dev/null 2>&1; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker-registry apache2-utils >/dev/null
fi
rm -rf "$QUARRY_REGISTRY_DIR"
mkdir -p "$QUARRY_REGISTRY_DIR/data"

export QUARRY_TEST_REGISTRY_USER=quarry-test
# Random, so that finding it anywhere (a command line, a log) can only mean it leaked; quotes,
# `$()`, backticks and `;` so that any shell parsing on its way would break the login.
QUARRY_TEST_REGISTRY_PASSWORD="pw-$(head -c 12 /dev/urandom | od -An -tx1 | tr -d ' \n')-'\"\$(true)\`true\`;"
export QUARRY_TEST_REGISTRY_PASSWORD
# bcrypt only: the registry refuses MD5 (-m) entries with 401.
htpasswd -Bbn "$QUARRY_TEST_REGISTRY_USER" "$QUARRY_TEST_REGISTRY_PASSWORD" >"$QUARRY_REGISTRY_DIR/htpasswd"

# Starts the registry on 127.0.0.1:$1 with a config of its own.
quarry_registry_start() {
    cat >"$QUARRY_REGISTRY_DIR/config.yml" <<EOF
version: 0.1
log: {level: warn}
storage: {filesystem: {rootdirectory: $QUARRY_REGISTRY_DIR/data}, delete: {enabled: true}}
http: {addr: 127.0.0.1:$1, secret: quarry-test-only}
auth: {htpasswd: {realm: quarry-test, path: $QUARRY_REGISTRY_DIR/htpasswd}}
EOF
    exec docker-registry serve "$QUARRY_REGISTRY_DIR/config.yml"
}
source scripts/test-serve.sh
# Stopped on exit, before the EXIT trap that was there before (the dockerd's).
quarry_serve_on_free_port docker-registry "$QUARRY_REGISTRY_DIR/registry.log" quarry_registry_start
QUARRY_REGISTRY_PID=$QUARRY_SERVED_PID
port=$QUARRY_SERVED_PORT
export QUARRY_TEST_REGISTRY=127.0.0.1:$port
echo "test registry: pid $QUARRY_REGISTRY_PID, $QUARRY_TEST_REGISTRY, user $QUARRY_TEST_REGISTRY_USER"
