#!/usr/bin/env bash
# A throwaway S3-compatible server for daramjwee's object-store tests.
#
#   eval "$(bash scripts/s3-server.sh start)"   # install if missing, start, create a bucket, print exports
#   bash scripts/s3-server.sh stop              # stop the server started above (by its PID file only)
#
# The server is moto (PyPI: `moto[server]`), run as `python -m moto.server` on 127.0.0.1 and a free port.
# Why moto: it installs from PyPI in seconds as pure-Python wheels (no compiler, no Rust build on our two
# cores), and it implements what the tests exercise: multipart upload, AbortMultipartUpload and
# ListMultipartUploads. It does not check request signatures, which lets the tests list in-progress
# multipart uploads with a plain HTTP GET (object_store has no ListMultipartUploads).
#
# Environment:
#   DARAMJWEE_S3_DIR     state directory: PID file, port, log (default: $TMPDIR/daramjwee-s3)
#                        use a different one to run a second, independent server
#   DARAMJWEE_S3_VENV    virtualenv moto is installed into (default: ~/.cache/daramjwee/moto-venv)
#   DARAMJWEE_S3_BUCKET  bucket to create (default: daramjwee-test)
#
# `start` prints only `export ...` lines on stdout; progress goes to stderr.
set -euo pipefail

STATE_DIR="${DARAMJWEE_S3_DIR:-${TMPDIR:-/tmp}/daramjwee-s3}"
VENV="${DARAMJWEE_S3_VENV:-${HOME:-/tmp}/.cache/daramjwee/moto-venv}"
BUCKET="${DARAMJWEE_S3_BUCKET:-daramjwee-test}"
MOTO_SPEC='moto[server]>=5.1,<6'
PID_FILE="$STATE_DIR/server.pid"
LOG_FILE="$STATE_DIR/server.log"

log() { echo "s3-server: $*" >&2; }

install() {
    if [ -x "$VENV/bin/python" ] && "$VENV/bin/python" -c 'import moto.server, flask_cors' 2>/dev/null; then
        return
    fi
    log "installing $MOTO_SPEC into $VENV"
    python3 -m venv "$VENV"
    "$VENV/bin/python" -m pip install --quiet --disable-pip-version-check "$MOTO_SPEC" >&2
}

# Whether the PID in the file is alive and still our moto server (a stale file's PID may have
# been reused by an unrelated process, which must never be killed).
running() {
    [ -f "$PID_FILE" ] || return 1
    local pid
    pid="$(cat "$PID_FILE")"
    kill -0 "$pid" 2>/dev/null || return 1
    if [ -r "/proc/$pid/cmdline" ]; then
        tr '\0' ' ' <"/proc/$pid/cmdline" | grep -q 'moto.server'
    fi
}

start() {
    mkdir -p "$STATE_DIR"
    if running; then
        log "already running (pid $(cat "$PID_FILE")); stop it first"
        exit 1
    fi
    install
    local py="$VENV/bin/python" port pid
    port="$("$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
    # A port picked this way can in theory be taken before moto binds it; readiness below catches that.
    "$py" -m moto.server -H 127.0.0.1 -p "$port" >"$LOG_FILE" 2>&1 &
    pid=$!
    echo "$pid" >"$PID_FILE"
    echo "$port" >"$STATE_DIR/port"

    # Wait for readiness (up to 30 s), then create the bucket. moto accepts unsigned requests.
    if ! "$py" - "$port" "$BUCKET" "$pid" <<'PY' >&2; then
import os, sys, time, urllib.request, urllib.error
port, bucket, pid = sys.argv[1], sys.argv[2], int(sys.argv[3])
base = f"http://127.0.0.1:{port}"
deadline = time.monotonic() + 30
while True:
    try:
        os.kill(pid, 0)
    except OSError:
        sys.exit("moto exited during startup")
    try:
        urllib.request.urlopen(base + "/", timeout=1).read()
        break
    except (urllib.error.URLError, ConnectionError, OSError):
        if time.monotonic() > deadline:
            sys.exit("moto did not become ready within 30 s")
        time.sleep(0.1)
req = urllib.request.Request(f"{base}/{bucket}", method="PUT")
urllib.request.urlopen(req, timeout=10).read()
PY
        log "start failed; log follows"
        cat "$LOG_FILE" >&2 || true
        stop
        exit 1
    fi
    log "moto pid $pid listening on 127.0.0.1:$port, bucket $BUCKET"
    cat <<EOF
export AWS_ENDPOINT=http://127.0.0.1:$port
export AWS_ACCESS_KEY_ID=testing
export AWS_SECRET_ACCESS_KEY=testing
export AWS_ALLOW_HTTP=true
export AWS_REGION=us-east-1
export DARAMJWEE_S3_BUCKET=$BUCKET
EOF
}

stop() {
    if [ ! -f "$PID_FILE" ]; then
        log "not running (no $PID_FILE)"
        return 0
    fi
    local pid
    pid="$(cat "$PID_FILE")"
    if running; then
        kill "$pid"
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        if kill -0 "$pid" 2>/dev/null; then
            kill -9 "$pid" 2>/dev/null || true
        fi
        log "stopped pid $pid"
    fi
    rm -f "$PID_FILE" "$STATE_DIR/port"
}

case "${1:-}" in
    start) start ;;
    stop) stop ;;
    install) install ;;
    *)
        echo "usage: $0 start|stop|install" >&2
        exit 2
        ;;
esac
