#!/usr/bin/env bash
# Sourced by the scripts that start a test server on loopback (test-registry.sh, test-s3.sh).
#
# quarry_serve_on_free_port NAME LOG START: calls the function START with a port that was free
# a moment ago (the kernel's choice); START starts the server in the background on
# 127.0.0.1:PORT, logging to LOG. Waits up to 20 s for the port to accept connections, and
# retries with another port (five in all) if the server exits or never listens, in case
# someone took the port. Sets QUARRY_SERVED_PID and QUARRY_SERVED_PORT; exits showing LOG's
# tail when the server never starts. Then, on EXIT, the server is stopped by PID before the
# EXIT trap that was already set runs.
quarry_serve_on_free_port() {
    local name=$1 log=$2 start=$3 _try _wait
    for _try in 1 2 3 4 5; do
        QUARRY_SERVED_PORT=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
        "$start" "$QUARRY_SERVED_PORT" >"$log" 2>&1 &
        QUARRY_SERVED_PID=$!
        for _wait in $(seq 1 200); do
            kill -0 "$QUARRY_SERVED_PID" 2>/dev/null || break
            if (exec 3<>"/dev/tcp/127.0.0.1/$QUARRY_SERVED_PORT") 2>/dev/null; then
                quarry_stop_on_exit "$QUARRY_SERVED_PID"
                return 0
            fi
            sleep 0.1
        done
        kill "$QUARRY_SERVED_PID" 2>/dev/null || true
        wait "$QUARRY_SERVED_PID" 2>/dev/null || true
    done
    echo "$name did not start:"
    tail -20 "$log"
    exit 1
}

# quarry_stop_on_exit PID: on EXIT, kills PID and waits for it, then runs the EXIT trap that
# was set before.
quarry_stop_on_exit() {
    local previous
    previous=$(eval "set -- $(trap -p EXIT)"; printf '%s' "${3:-}")
    # shellcheck disable=SC2064 # the pid and the previous trap are fixed now, on purpose
    trap "kill $1 2>/dev/null || true; wait $1 2>/dev/null || true; $previous" EXIT
}
