#!/usr/bin/env bash
# Sourced by scripts/test.sh: starts a private Docker daemon (Debian docker.io) for the tests
# and stops it, by PID, when the calling shell exits. Exports DOCKER_HOST (inherited by the
# rocklets and the local worker the tests start) and QUARRY_TEST_DOCKER_IMAGE, a tiny busybox
# image imported from Debian's busybox-static (no registry, no network).
# The daemon has no bridge and no iptables rules: the tests only need containers to exist.

QUARRY_DOCKERD_DIR=${QUARRY_DOCKERD_DIR:-$PWD/target/test-dockerd}
if ! command -v dockerd >/dev/null 2>&1 || [ ! -x /bin/busybox ]; then
    DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends docker.io busybox-static >/dev/null
fi
mkdir -p "$QUARRY_DOCKERD_DIR"
export DOCKER_HOST="unix://$QUARRY_DOCKERD_DIR/docker.sock"
dockerd --host "$DOCKER_HOST" --data-root "$QUARRY_DOCKERD_DIR/data" \
    --exec-root "$QUARRY_DOCKERD_DIR/exec" --pidfile "$QUARRY_DOCKERD_DIR/docker.pid" \
    --bridge=none --iptables=false --ip-masq=false \
    >"$QUARRY_DOCKERD_DIR/dockerd.log" 2>&1 &
QUARRY_DOCKERD_PID=$!
trap 'kill "$QUARRY_DOCKERD_PID" 2>/dev/null; wait "$QUARRY_DOCKERD_PID" 2>/dev/null' EXIT
for _ in $(seq 1 60); do
    docker info >/dev/null 2>&1 && break
    kill -0 "$QUARRY_DOCKERD_PID" 2>/dev/null || { echo "dockerd died:"; tail -20 "$QUARRY_DOCKERD_DIR/dockerd.log"; exit 1; }
    sleep 0.5
done
docker info >/dev/null || { echo "dockerd did not become ready:"; tail -20 "$QUARRY_DOCKERD_DIR/dockerd.log"; exit 1; }

export QUARRY_TEST_DOCKER_IMAGE=quarry-test/busybox:1
if ! docker image inspect "$QUARRY_TEST_DOCKER_IMAGE" >/dev/null 2>&1; then
    rootfs=$(mktemp -d)
    mkdir -p "$rootfs/bin" "$rootfs/etc" "$rootfs/tmp"
    cp /bin/busybox "$rootfs/bin/"
    for a in sh ls cat echo sleep true env id date; do ln -s busybox "$rootfs/bin/$a"; done
    tar -C "$rootfs" -c . | docker import -c 'CMD ["/bin/sh"]' - "$QUARRY_TEST_DOCKER_IMAGE" >/dev/null
    rm -rf "$rootfs"
fi
echo "test dockerd: pid $QUARRY_DOCKERD_PID, $DOCKER_HOST, image $QUARRY_TEST_DOCKER_IMAGE"
