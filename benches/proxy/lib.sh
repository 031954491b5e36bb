# Shared helpers of benches/proxy/run.sh and benches/stampede/run.sh (sourced, not run).
#
# Everything listens on 127.0.0.1 only. Every process started here is recorded in PIDS and
# stopped by PID on exit (TERM, then KILL after a bound); nothing is stopped by name.

ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
REL="$ROOT/target/release"
WORK=$(mktemp -d /tmp/daramjwee-bench.XXXXXX)
PIDS=()

log() { printf '%s\n' "$*" >&2; }

cleanup() {
    local pid
    for pid in "${PIDS[@]}"; do
        kill -TERM "$pid" 2>/dev/null || true
    done
    for pid in "${PIDS[@]}"; do
        for _ in $(seq 50); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 0.1
        done
        kill -KILL "$pid" 2>/dev/null || true
        wait "$pid" 2>/dev/null || true
    done
    PIDS=()
    rm -rf "$WORK"
}

# Installs the peers and wrk from Debian packages when missing (apt-get update once).
install_peers() {
    if ! command -v nginx >/dev/null || ! command -v varnishd >/dev/null || ! command -v wrk >/dev/null; then
        log "installing nginx, varnish and wrk from Debian packages"
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx varnish wrk >/dev/null
    fi
}

build_rust() {
    log "building daramjwee, the origin, hyper's floor and the stampede client (release)"
    (cd "$ROOT" && cargo build --release --quiet --features proxy \
        --bin daramjwee --example origin --example hyper_floor --example stampede_client)
}

# start NAME CMD...: runs CMD in the background, logs to $WORK/NAME.log, records its PID.
start() {
    local name=$1
    shift
    "$@" >"$WORK/$name.log" 2>&1 &
    PIDS+=($!)
    LAST_PID=$!
}

# wait_port PORT: waits (at most 10 s) until 127.0.0.1:PORT accepts connections.
wait_port() {
    for _ in $(seq 200); do
        if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then return 0; fi
        sleep 0.05
    done
    log "port $1 did not open; logs:"
    tail -n 20 "$WORK"/*.log >&2 || true
    return 1
}

start_origin() { # PORT MAX_AGE
    start origin "$REL/examples/origin" "127.0.0.1:$1" "$2"
    wait_port "$1"
}

start_daramjwee() { # NAME PORT ORIGIN_PORT HOT [taskset prefix...]
    local name=$1 port=$2 origin=$3 hot=$4
    shift 4
    start "$name" "$@" "$REL/daramjwee" --listen "127.0.0.1:$port" --admin off \
        --upstream "http://127.0.0.1:$origin" --hot "$hot" --cold none \
        --data-dir "$WORK/$name-data"
    wait_port "$port"
}

start_nginx() { # PORT ORIGIN_PORT [taskset prefix...]
    local port=$1 origin=$2
    shift 2
    local dir="$WORK/nginx-$port"
    mkdir -p "$dir/cache" "$dir/tmp"
    cat >"$dir/nginx.conf" <<CONF
user root;
worker_processes ${NGINX_WORKERS:-auto};
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 8192; }
http {
    # The fields of daramjwee's combined line (duration, upstream time, cache outcome, request
    # id), for a like-for-like access log cost (NGINX_ACCESS_LOG="FILE daramjwee ...").
    log_format daramjwee '\$remote_addr - \$remote_user [\$time_local] "\$request" \$status '
        '\$body_bytes_sent "\$http_referer" "\$http_user_agent" rt=\$request_time '
        'urt=\$upstream_response_time cs="\$upstream_cache_status" rid=\$request_id';
    access_log ${NGINX_ACCESS_LOG:-off};
    # At their best on loopback: sendfile on stalls ~64 KiB hits (see issue 8).
    sendfile off;
    tcp_nodelay on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    proxy_cache_path $dir/cache levels=1:2 keys_zone=c:64m max_size=8g inactive=1h use_temp_path=off;
    upstream origin { server 127.0.0.1:$origin; keepalive 64; }
    server {
        listen 127.0.0.1:$port backlog=4096;
        location / {
            proxy_pass http://origin;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_cache c;
            proxy_cache_lock on;
            proxy_cache_lock_timeout 60s;
            proxy_cache_lock_age 60s;
            proxy_buffering on;
            proxy_buffers 64 64k;
            output_buffers 2 256k;
            add_header X-Cache-Status \$upstream_cache_status;
        }
    }
}
CONF
    start "nginx-$port" "$@" nginx -e "$dir/error.log" -p "$dir" -c "$dir/nginx.conf" -g 'daemon off;'
    wait_port "$port"
}

start_varnish() { # PORT ORIGIN_PORT [taskset prefix...]
    local port=$1 origin=$2
    shift 2
    local dir="$WORK/varnish-$port"
    mkdir -p "$dir"
    cat >"$dir/default.vcl" <<VCL
vcl 4.1;
backend default { .host = "127.0.0.1"; .port = "$origin"; }
VCL
    start "varnish-$port" "$@" varnishd -F -j none -n "$dir/n" -a "127.0.0.1:$port" \
        -f "$dir/default.vcl" -s malloc,4G -p thread_pool_min=200 -p thread_pool_max=5000 \
        -p thread_pools=2
    wait_port "$port"
}

origin_calls() { # ORIGIN_PORT
    curl -s "http://127.0.0.1:$1/calls"
}

# ab_rounds NAME_A PORT_A NAME_B PORT_B: ROUNDS interleaved wrk runs of 1 KiB hits against A
# then B (so a burst of load from elsewhere hits one sample, not a whole case); prints each
# round, then the medians (the lower middle for an even count) and B/A.
ab_rounds() {
    local na=$1 pa=$2 nb=$3 pb=$4 r ma mb
    local as=() bs=()
    rps_1k() {
        # WRK_PIN: an optional prefix for wrk (e.g. "taskset -c 1").
        ${WRK_PIN:-} wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$1/obj/1k" |
            awk '/^Requests\/sec/ { printf "%.0f\n", $2 }'
    }
    lower_median() { printf '%s\n' "$@" | sort -g | awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }'; }
    for r in $(seq "$ROUNDS"); do
        as+=("$(rps_1k "$pa")")
        bs+=("$(rps_1k "$pb")")
        echo "round $r: $na ${as[-1]} req/s, $nb ${bs[-1]} req/s"
    done
    ma=$(lower_median "${as[@]}") mb=$(lower_median "${bs[@]}")
    echo "median: $na $ma req/s, $nb $mb req/s, $nb/$na $(awk -v a="$mb" -v b="$ma" 'BEGIN { printf "%.3f", a / b }')"
}

# cpu_ns PID: nanoseconds on a CPU so far of PID, its threads and its children's (nginx's
# workers), from /proc/*/task/*/schedstat: exact, where /proc/*/stat counts ticks.
cpu_ns() {
    local p total=0
    for p in $1 $(ps -o pid= --ppid "$1" 2>/dev/null); do
        total=$((total + $(cat /proc/"$p"/task/*/schedstat 2>/dev/null | awk '{ s += $1 } END { printf "%.0f\n", s }')))
    done
    echo $total
}

# side_by_side NAME_A PID_A PORT_A NAME_B PID_B PORT_B: ROUNDS rounds in which A and B (both
# pinned to core 0 by the caller) are loaded at once by two wrk (-t1 -c$CONNS, on core 1), so
# both see the same moment of a noisy machine and share one core; prints each one's CPU per
# request (from `cpu_ns`) per round, then the median of B's over A's. Two cases measured one
# after the other differ by 3-8% from round to round here; side by side, by 1-3%.
side_by_side() {
    local na=$1 ida=$2 pa=$3 nb=$4 idb=$5 pb=$6 r ca0 cb0 ca1 cb1 qa qb wa ratios=()
    for r in $(seq "$ROUNDS"); do
        ca0=$(cpu_ns "$ida") cb0=$(cpu_ns "$idb")
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$pa/obj/1k" >"$WORK/sbs-a" &
        wa=$!
        taskset -c 1 wrk -t1 -c"$CONNS" -d"${DURATION}s" "http://127.0.0.1:$pb/obj/1k" >"$WORK/sbs-b"
        wait "$wa"
        ca1=$(cpu_ns "$ida") cb1=$(cpu_ns "$idb")
        qa=$(awk '/requests in/ { print $1 }' "$WORK/sbs-a")
        qb=$(awk '/requests in/ { print $1 }' "$WORK/sbs-b")
        ratios+=("$(awk -v a=$((ca1 - ca0)) -v b=$((cb1 - cb0)) -v qa="$qa" -v qb="$qb" \
            'BEGIN { printf "%.3f", (b / qb) / (a / qa) }')")
        awk -v a=$((ca1 - ca0)) -v b=$((cb1 - cb0)) -v qa="$qa" -v qb="$qb" -v r="$r" \
            -v na="$na" -v nb="$nb" -v x="${ratios[-1]}" -v d="$DURATION" \
            'BEGIN { printf "round %d: %s %.0f req/s %.0f ns/req, %s %.0f req/s %.0f ns/req, %s/%s %s\n",
                r, na, qa / d, a / qa, nb, qb / d, b / qb, nb, na, x }'
    done
    echo "median CPU per request, $nb/$na: $(printf '%s\n' "${ratios[@]}" | sort -g |
        awk '{ a[NR] = $1 } END { print a[int((NR + 1) / 2)] }')"
}
