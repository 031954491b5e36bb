#!/usr/bin/env bash
# Proxy bench (issue 8): the same wrk load against nginx proxy_cache, Varnish, and daramjwee
# with a memory and with a file hot tier, all in front of the same local origin, hot hits only.
# Then server CPU time per 1 KiB hit with the server pinned to CPU 0 and wrk to CPU 1.
# Every case runs ROUNDS times (default 3), the rounds interleaved (round 1 of every case, then
# round 2, ...) so a burst of load from elsewhere hits one sample of a case, not all; tables
# give the median of the rounds, and the per-round req/s.
#
#   bash benches/proxy/run.sh     # about 15 minutes after the build (DURATION=10 s, ROUNDS=3)
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DURATION=${DURATION:-10}
ROUNDS=${ROUNDS:-3}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
SIZES=${SIZES:-"1k 64k 1m 16m"}

install_peers
build_rust
echo "machine: $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"

ORIGIN=18280 NGX=18281 VAR=18282 DJM=18283 DJF=18284 STATIC=18285 ORIGIN2=18286 DJN=18287 FLOOR=18288
# `origin` is the origin itself, hit directly: objects from memory through axum and hyper with
# no cache in front. It is a reference (what the HTTP stack alone costs), not a peer.
SERVERS="nginx:$NGX varnish:$VAR daramjwee-mem:$DJM daramjwee-file:$DJF origin:$ORIGIN"

# wrk_run PORT PATH [taskset prefix...]: prints "req_s mb_s p50_ms p99_ms requests"
wrk_run() {
    local port=$1 path=$2
    shift 2
    "$@" wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --latency "http://127.0.0.1:$port$path" |
        awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        function mb(v) { if (v ~ /GB$/) return v*1024; if (v ~ /MB$/) return v+0; if (v ~ /KB$/) return v/1024; if (v ~ /B$/) return v/1048576; return v }
        /^ +50%/ { p50 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { reqs = $1 }
        /^Requests\/sec/ { rps = $2 }
        /^Transfer\/sec/ { xfer = mb($2) }
        /Non-2xx/ { bad = $NF }
        END { printf "%.0f %.1f %.3f %.3f %d %d\n", rps, xfer, p50, p99, reqs, bad }'
}

warm() { # PORT
    local s
    for s in $SIZES; do
        curl -s -o /dev/null "http://127.0.0.1:$1/obj/$s"
        curl -s -o /dev/null "http://127.0.0.1:$1/obj/$s"
    done
}

# median VALUES...: the median of numbers (the mean of the middle two for an even count).
median() {
    printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { if (NR % 2) print a[(NR + 1) / 2]; else printf "%g\n", (a[NR / 2] + a[NR / 2 + 1]) / 2 }'
}

# medians KEY ARRAY: field-wise medians of ARRAY[KEY,1..ROUNDS] ("req_s mb_s p50 p99 reqs bad"
# or "req_s us p99"); the last field (non-2xx, or p99) is a median too.
medians() {
    local key=$1 arr=$2 f r n out=()
    local -n A=$arr
    n=$(awk '{ print NF }' <<<"${A[$key,1]}")
    for f in $(seq "$n"); do
        local vals=()
        for r in $(seq "$ROUNDS"); do vals+=("$(awk -v f="$f" '{ print $f }' <<<"${A[$key,$r]}")"); done
        out+=("$(median "${vals[@]}")")
    done
    echo "${out[*]}"
}

# rounds KEY ARRAY: the req/s of each round, "a / b / c".
rounds() {
    local key=$1 arr=$2 r out=()
    local -n A=$arr
    for r in $(seq "$ROUNDS"); do out+=("$(awk '{ print $1 }' <<<"${A[$key,$r]}")"); done
    local IFS=/
    echo "${out[*]}" | sed 's|/| / |g'
}

start_origin $ORIGIN 86400

# --- Part 1: throughput and latency, servers and wrk share both cores -----------------------
log "part 1: ${DURATION}s per case, wrk -t$THREADS -c$CONNS"
start_nginx $NGX $ORIGIN
start_varnish $VAR $ORIGIN
start_daramjwee daramjwee-mem $DJM $ORIGIN memory:2GiB
start_daramjwee daramjwee-file $DJF $ORIGIN "file:$WORK/dj-file-hot:4GiB"
for srv in $SERVERS; do warm "${srv#*:}"; done

declare -A RR R
for round in $(seq "$ROUNDS"); do
    for s in $SIZES; do
        for srv in $SERVERS; do
            name=${srv%%:*}
            RR[$s,$name,$round]=$(wrk_run "${srv#*:}" "/obj/$s")
            log "round $round $s $name: ${RR[$s,$name,$round]}"
        done
    done
done
for s in $SIZES; do
    for srv in $SERVERS; do
        name=${srv%%:*}
        R[$s,$name]=$(medians "$s,$name" RR)
    done
done

echo
echo "Hot hits, wrk -t$THREADS -c$CONNS -d${DURATION}s, servers and wrk sharing 2 cores; median of $ROUNDS interleaved rounds:"
echo
printf '| size | server | req/s | MB/s | p50 ms | p99 ms | non-2xx | req/s per round |\n|---|---|---|---|---|---|---|---|\n'
for s in $SIZES; do
    for srv in $SERVERS; do
        name=${srv%%:*}
        read -r rps mbs p50 p99 _ bad <<<"${R[$s,$name]}"
        printf '| %s | %s | %s | %s | %s | %s | %s | %s |\n' "$s" "$name" "$rps" "$mbs" "$p50" "$p99" "$bad" "$(rounds "$s,$name" RR)"
    done
done
echo
echo "Ratios of the medians (req/s: higher is better for daramjwee; p99: lower is better):"
echo
printf '| size | mem/nginx req/s | mem/varnish req/s | file/nginx req/s | file/varnish req/s | file/mem req/s | mem p99/nginx p99 | mem p99/varnish p99 |\n|---|---|---|---|---|---|---|---|\n'
for s in $SIZES; do
    read -r n_rps _ _ n_p99 _ <<<"${R[$s,nginx]}"
    read -r v_rps _ _ v_p99 _ <<<"${R[$s,varnish]}"
    read -r m_rps _ _ m_p99 _ <<<"${R[$s,daramjwee-mem]}"
    read -r f_rps _ _ f_p99 _ <<<"${R[$s,daramjwee-file]}"
    awk -v s="$s" -v n="$n_rps" -v v="$v_rps" -v m="$m_rps" -v f="$f_rps" -v np="$n_p99" -v vp="$v_p99" -v mp="$m_p99" \
        'function r(a,b) { return b > 0 ? sprintf("%.2f", a/b) : "-" }
         BEGIN { printf "| %s | %s | %s | %s | %s | %s | %s | %s |\n", s, r(m,n), r(m,v), r(f,n), r(f,v), r(f,m), r(mp,np), r(mp,vp) }'
done

# Stop part 1's servers (by PID, origin kept) before pinning.
ORIGIN_PID=${PIDS[0]}
for pid in "${PIDS[@]:1}"; do kill -TERM "$pid" 2>/dev/null || true; done
for pid in "${PIDS[@]:1}"; do
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
done
PIDS=("$ORIGIN_PID")

# --- Part 2: CPU per 1 KiB hit, server on CPU 0, wrk on CPU 1 --------------------------------
if [ "$(nproc)" -ge 2 ] && [[ " $SIZES " == *" 1k "* ]]; then
    log "part 2: CPU per 1 KiB hit, server pinned to CPU 0, wrk to CPU 1"
    mkdir -p "$WORK/static/obj"
    curl -s -o "$WORK/static/obj/1k" "http://127.0.0.1:$ORIGIN/obj/1k"
    sdir="$WORK/nginx-static"
    mkdir -p "$sdir/tmp"
    cat >"$sdir/nginx.conf" <<CONF
user root;
worker_processes 1;
pid $sdir/nginx.pid;
events { worker_connections 8192; }
http {
    access_log off;
    sendfile off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    client_body_temp_path $sdir/tmp/body;
    proxy_temp_path $sdir/tmp/proxy;
    fastcgi_temp_path $sdir/tmp/fcgi;
    uwsgi_temp_path $sdir/tmp/uwsgi;
    scgi_temp_path $sdir/tmp/scgi;
    open_file_cache max=1000;
    server { listen 127.0.0.1:$STATIC backlog=4096; root $WORK/static; etag on; }
}
CONF
    PIN="taskset -c 0"
    declare -A CC C PINNED
    run_pinned() { # NAME PORT PID ROUND
        local before after out
        before=$(cpu_ns "$3")
        out=$(wrk_run "$2" /obj/1k taskset -c 1)
        after=$(cpu_ns "$3")
        read -r rps _ p50 p99 reqs _ <<<"$out"
        CC[$1,$4]=$(awk -v t=$((after - before)) -v n="$reqs" -v r="$rps" -v p="$p99" \
            'BEGIN { printf "%s %.2f %s", r, t / n / 1e3, p }')
        log "round $4 pinned $1: ${CC[$1,$4]}"
    }
    # All pinned servers are started first (idle ones cost nothing), then measured in rounds.
    ORDER="nginx-static nginx-proxy_cache varnish daramjwee-mem daramjwee-file daramjwee-mem-noids origin-axum hyper-floor"
    start "nginx-static" $PIN nginx -e "$sdir/error.log" -p "$sdir" -c "$sdir/nginx.conf" -g 'daemon off;'
    wait_port $STATIC
    PINNED[nginx-static]="$STATIC $LAST_PID"
    NGINX_WORKERS=1 start_nginx $NGX $ORIGIN $PIN
    PINNED[nginx-proxy_cache]="$NGX $LAST_PID"
    start_varnish $VAR $ORIGIN $PIN
    PINNED[varnish]="$VAR $LAST_PID"
    start_daramjwee daramjwee-mem $DJM $ORIGIN memory:2GiB $PIN
    PINNED[daramjwee-mem]="$DJM $LAST_PID"
    start_daramjwee daramjwee-file $DJF $ORIGIN "file:$WORK/dj-file-hot2:4GiB" $PIN
    PINNED[daramjwee-file]="$DJF $LAST_PID"
    # The same memory tier without request ids (`--request-ids false`): what that option saves.
    start daramjwee-mem-noids $PIN "$REL/daramjwee" --listen "127.0.0.1:$DJN" --admin off \
        --upstream "http://127.0.0.1:$ORIGIN" --hot memory:2GiB --cold none \
        --data-dir "$WORK/daramjwee-noids-data" --request-ids false
    wait_port $DJN
    PINNED[daramjwee-mem-noids]="$DJN $LAST_PID"
    start origin-pinned $PIN "$REL/examples/origin" "127.0.0.1:$ORIGIN2" 86400
    wait_port $ORIGIN2
    PINNED[origin-axum]="$ORIGIN2 $LAST_PID"
    # hyper alone, sending a memory hit's bytes and fields (`examples/hyper_floor.rs`): the
    # floor of a server built on hyper; daramjwee-mem minus this is the proxy's own work.
    start hyper-floor $PIN "$REL/examples/hyper_floor" "127.0.0.1:$FLOOR"
    wait_port $FLOOR
    PINNED[hyper-floor]="$FLOOR $LAST_PID"
    for k in $ORDER; do warm "${PINNED[$k]% *}"; done
    for round in $(seq "$ROUNDS"); do
        for k in $ORDER; do
            read -r port pid <<<"${PINNED[$k]}"
            run_pinned "$k" "$port" "$pid" "$round"
        done
    done
    echo
    echo "CPU per 1 KiB hit, server pinned to CPU 0, wrk -t$THREADS -c$CONNS on CPU 1; median of $ROUNDS interleaved rounds:"
    echo
    printf '| server | req/s | server CPU µs per hit | p99 ms | µs per hit per round |\n|---|---|---|---|---|\n'
    for k in $ORDER; do
        read -r rps us p99 <<<"$(medians "$k" CC)"
        per=$(for r in $(seq "$ROUNDS"); do awk '{ print $2 }' <<<"${CC[$k,$r]}"; done | paste -sd/ | sed 's|/| / |g')
        printf '| %s | %s | %s | %s | %s |\n' "$k" "$rps" "$us" "$p99" "$per"
    done
fi
echo
echo "after: $(uptime | sed 's/.*load/load/') (other jobs on this shared machine compete for the same cores)"
