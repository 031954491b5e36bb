#!/usr/bin/env bash
# Memory per stored entry (memory hot tier): wrk sends requests for DURATION seconds, each for
# a new object (a new query string) of OBJECT's size, so each is a miss that stores an entry.
# Prints the entries stored, what the store counts for them (the `daramjwee_stored_bytes`
# gauge), and the proxy's resident memory before and after: the last two per entry should be
# close. A store that keeps a slice of a larger buffer (hyper's read buffer, for header values)
# holds memory it does not count.
#
#   bash benches/proxy/footprint.sh              # about 10 s after the build (DURATION=5)
#   OBJECT=1m bash benches/proxy/footprint.sh    # 1k (default), 64k, 1m or 16m
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT

DURATION=${DURATION:-5}
OBJECT=${OBJECT:-1k} # one of the origin's sizes: 1k, 64k, 1m, 16m
ORIGIN=18480 PROXY=18481 ADMIN=18482

install_peers
log "building daramjwee and the origin (release)"
(cd "$ROOT" && cargo build --release --quiet --features proxy --bin daramjwee --example origin)
start_origin $ORIGIN 3600
start daramjwee "$REL/daramjwee" --listen "127.0.0.1:$PROXY" --admin "127.0.0.1:$ADMIN" \
    --upstream "http://127.0.0.1:$ORIGIN" --hot memory:4GiB --cold none --data-dir "$WORK/dj"
PID=$LAST_PID
wait_port $PROXY
wait_port $ADMIN
cat >"$WORK/unique.lua" <<'LUA'
n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/obj/OBJECT?u=" .. n .. "-" .. math.random(1, 1000000000))
end
LUA
sed -i "s/OBJECT/$OBJECT/" "$WORK/unique.lua"
rss_kib() { awk '/^VmRSS/ { print $2 }' "/proc/$PID/status"; }
stored() { # NAME: the sum of a gauge over tiers
    curl -s "http://127.0.0.1:$ADMIN/metrics" | awk -v n="$1" '$1 ~ "^"n"[{ ]" { s += $NF } END { printf "%.0f\n", s }'
}
before=$(rss_kib)
wrk -t1 -c8 -d"${DURATION}s" -s "$WORK/unique.lua" "http://127.0.0.1:$PROXY/" >"$WORK/wrk.out"
sleep 1
after=$(rss_kib)
entries=$(stored daramjwee_stored_entries)
bytes=$(stored daramjwee_stored_bytes)
grep -E "requests in" "$WORK/wrk.out"
awk -v e="$entries" -v b="$bytes" -v r0="$before" -v r1="$after" 'BEGIN {
    printf "entries stored: %d; counted by the store: %.1f MiB, %.0f bytes per entry\n", e, b / 1048576, b / e
    printf "resident: %.1f -> %.1f MiB, %.0f bytes per entry (%.2fx what the store counts)\n",
        r0 / 1024, r1 / 1024, (r1 - r0) * 1024 / e, (r1 - r0) * 1024 / b
}'
