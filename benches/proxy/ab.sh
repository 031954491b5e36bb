#!/usr/bin/env bash
# A/B of two daramjwee binaries on 1 KiB hot hits: BASE (e.g. a build of an older commit) and
# this tree's release build, the same wrk load against each, ROUNDS interleaved rounds (base,
# new, base, new, ...). Prints each round and the medians.
#
#   git archive OLD | tar -x -C /tmp/old && (cd /tmp/old && CARGO_TARGET_DIR=$PWD/target \
#       cargo build --release --features proxy --bin daramjwee) && cp target/release/daramjwee /tmp/base
#   BASE=/tmp/base bash benches/proxy/ab.sh
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

: "${BASE:?set BASE to the binary to compare against}"
DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-1}
CONNS=${CONNS:-32}

command -v wrk >/dev/null || { log "wrk is missing (apt-get install wrk)"; exit 1; }
log "building daramjwee and the origin (release)"
(cd "$ROOT" && cargo build --release --quiet --features proxy --bin daramjwee --example origin)

ORIGIN=18390 A=18391 B=18392
start_origin "$ORIGIN" 3600
for pair in "base:$A:$BASE" "new:$B:$REL/daramjwee"; do
    IFS=: read -r name port bin <<<"$pair"
    start "dj-$name" "$bin" --listen "127.0.0.1:$port" --admin off \
        --upstream "http://127.0.0.1:$ORIGIN" --hot memory:64MiB --cold none \
        --data-dir "$WORK/dj-$name"
    wait_port "$port"
    curl -s -o /dev/null "http://127.0.0.1:$port/obj/1k"
done

echo "machine: $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"
ab_rounds base "$A" new "$B"
echo "after: $(uptime | sed 's/.*load/load/')"
