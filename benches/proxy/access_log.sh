#!/usr/bin/env bash
# Access-log cost (issue 16): req/s of 1 KiB hot hits through daramjwee with the access log off
# and on (combined format, to a file), the same wrk load against each, ROUNDS interleaved
# rounds (off, on, off, on, ...) so a burst of load from elsewhere hits one sample, not a whole
# case. Prints each round and the medians; the goal is "on" within 5% of "off". The same is
# measured for nginx proxy_cache with its own access log off and on, as the reference.
#
# Three layouts: "unpinned" (the proxies and wrk share both cores) and "pinned" (each proxy on
# core 0, wrk on core 1, so req/s follows the proxy's CPU per request; on two cores, unpinned
# req/s also moves with how often the proxy's threads park and wake), as in run.sh; and
# "side-by-side": off and on pinned to core 0 and loaded at once, each by its own wrk on core 1,
# and their CPU per request compared within each round (see `side_by_side` in lib.sh). The
# machine's noise moves one case's req/s 3-8% between rounds, as much as the goal; side by
# side, both cases see the same moment and the ratio moved by 1-3% over five rounds.
#
#   bash benches/proxy/access_log.sh     # about 10 minutes after the build (DURATION=10, ROUNDS=5)
#   LAYOUTS=pinned bash benches/proxy/access_log.sh
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-5}
THREADS=${THREADS:-1}
CONNS=${CONNS:-32}

install_peers # wrk, and nginx for the reference
log "building daramjwee and the origin (release)"
(cd "$ROOT" && cargo build --release --quiet --features proxy --bin daramjwee --example origin)

ORIGIN=18380 OFF=18381 ON=18382
start_origin "$ORIGIN" 3600
for case in off on; do
    port=$OFF extra=()
    if [ "$case" = on ]; then port=$ON extra=(--access-log "$WORK/access.log"); fi
    start "dj-$case" "$REL/daramjwee" --listen "127.0.0.1:$port" --admin off \
        --upstream "http://127.0.0.1:$ORIGIN" --hot memory:64MiB --cold none \
        --data-dir "$WORK/dj-$case" "${extra[@]}"
    wait_port "$port"
    curl -s -o /dev/null "http://127.0.0.1:$port/obj/1k"
done

pin_proxies() { # CPU list for every server's threads
    local port pid
    for port in $OFF $ON; do
        taskset -a -p -c "$1" "$(pgrep -f -- "--listen 127.0.0.1:$port")" >/dev/null
    done
    for port in $NGX_OFF $NGX_ON; do
        # The master (its command line names the config) and its workers.
        pid=$(pgrep -f -- "nginx-$port/nginx.conf")
        for pid in $pid $(pgrep -P "$pid"); do
            taskset -a -p -c "$1" "$pid" >/dev/null
        done
    done
}
# The reference: nginx proxy_cache with its access log off and on, buffered as an operator
# tuning for speed would set it, with the same fields as daramjwee's line (`log_format
# daramjwee` in lib.sh: the bytes written per request drive much of the cost), same load, same
# layouts.
NGX_OFF=18383 NGX_ON=18384
NGINX_WORKERS=1 start_nginx "$NGX_OFF" "$ORIGIN"
NGINX_WORKERS=1 NGINX_ACCESS_LOG="$WORK/nginx-access.log daramjwee buffer=64k flush=1s" \
    start_nginx "$NGX_ON" "$ORIGIN"
for port in $NGX_OFF $NGX_ON; do
    wait_port "$port"
    curl -s -o /dev/null "http://127.0.0.1:$port/obj/1k"
done

echo "machine: $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"
for layout in ${LAYOUTS:-unpinned pinned side-by-side}; do
    echo "layout: $layout"
    if [ "$layout" = side-by-side ]; then
        pin_proxies 0
        side_by_side off "$(pgrep -f -- "--listen 127.0.0.1:$OFF")" "$OFF" \
            on "$(pgrep -f -- "--listen 127.0.0.1:$ON")" "$ON"
        echo "nginx proxy_cache:"
        side_by_side off "$(pgrep -f -- "nginx-$NGX_OFF/nginx.conf")" "$NGX_OFF" \
            on "$(pgrep -f -- "nginx-$NGX_ON/nginx.conf")" "$NGX_ON"
        pin_proxies "0-$(($(nproc) - 1))"
    elif [ "$layout" = pinned ]; then
        pin_proxies 0
        WRK_PIN="taskset -c 1" ab_rounds off "$OFF" on "$ON"
        echo "nginx proxy_cache:"
        WRK_PIN="taskset -c 1" ab_rounds off "$NGX_OFF" on "$NGX_ON"
        pin_proxies "0-$(($(nproc) - 1))"
    else
        ab_rounds off "$OFF" on "$ON"
        echo "nginx proxy_cache:"
        ab_rounds off "$NGX_OFF" on "$NGX_ON"
    fi
done
for f in access nginx-access; do
    echo "$f.log: $(wc -l <"$WORK/$f.log") lines, $(($(wc -c <"$WORK/$f.log") / $(wc -l <"$WORK/$f.log"))) bytes each; last: $(tail -1 "$WORK/$f.log")"
done
echo "after: $(uptime | sed 's/.*load/load/')"
