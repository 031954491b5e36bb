#!/usr/bin/env bash
# Tail latency of large hot hits (issue 19): long wrk runs against Varnish, nginx proxy_cache and
# daramjwee's memory tier, interleaved in rounds, reporting p50 / p90 / p99 / max per run.
# VARIANTS adds daramjwee servers started under an `env` prefix, for experiments with a build
# that reads such settings (name=VAR=value[,VAR=value]; see docs/bench-proxy.md, "Tails").
#
#   bash benches/proxy/tails.sh                       # 16m and 1m, 30 s per run, 2 rounds
#   SIZES=16m ROUNDS=3 bash benches/proxy/tails.sh
#   NO_BUILD=1 VARIANTS="sndbuf256k=DJ_SNDBUF=262144" bash benches/proxy/tails.sh
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

DURATION=${DURATION:-30}
ROUNDS=${ROUNDS:-2}
THREADS=${THREADS:-2}
CONNS=${CONNS:-64}
SIZES=${SIZES:-"16m 1m"}
VARIANTS=${VARIANTS:-}

install_peers
[ -n "${NO_BUILD:-}" ] || build_rust
echo "machine: $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"

ORIGIN=18380 NGX=18381 VAR=18382 DJ=18383
start_origin $ORIGIN 86400
start_nginx $NGX $ORIGIN
start_varnish $VAR $ORIGIN
start_daramjwee daramjwee $DJ $ORIGIN memory:2GiB
SERVERS="varnish:$VAR nginx:$NGX daramjwee:$DJ"
port=$((DJ + 1))
for v in $VARIANTS; do
    name=${v%%=*}
    settings=${v#*=}
    start_daramjwee "dj-$name" $port $ORIGIN memory:2GiB env ${settings//,/ }
    SERVERS="$SERVERS dj-$name:$port"
    port=$((port + 1))
done
for srv in $SERVERS; do
    for s in $SIZES; do
        curl -s -o /dev/null "http://127.0.0.1:${srv#*:}/obj/$s"
        curl -s -o /dev/null "http://127.0.0.1:${srv#*:}/obj/$s"
    done
done

# tail_run PORT PATH: prints "req_s p50_ms p90_ms p99_ms max_ms requests"
tail_run() {
    wrk -t"$THREADS" -c"$CONNS" -d"${DURATION}s" --timeout 60s --latency "http://127.0.0.1:$1$2" |
        awk '
        function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
        /^ +Latency / && !/Distribution/ { max = ms($4) }
        /^ +50%/ { p50 = ms($2) }
        /^ +90%/ { p90 = ms($2) }
        /^ +99%/ { p99 = ms($2) }
        /requests in/ { reqs = $1 }
        /^Requests\/sec/ { rps = $2 }
        END { printf "%.1f %.0f %.0f %.0f %.0f %d\n", rps, p50, p90, p99, max, reqs }'
}

echo
echo "wrk -t$THREADS -c$CONNS -d${DURATION}s --latency, servers and wrk sharing the cores:"
echo
printf '| size | round | server | req/s | p50 ms | p90 ms | p99 ms | max ms | p99/p50 | requests |\n'
printf '|---|---|---|---|---|---|---|---|---|---|\n'
for round in $(seq "$ROUNDS"); do
    for s in $SIZES; do
        for srv in $SERVERS; do
            read -r rps p50 p90 p99 max reqs <<<"$(tail_run "${srv#*:}" "/obj/$s")"
            ratio=$(awk -v a="$p99" -v b="$p50" 'BEGIN { printf "%.2f", (b > 0) ? a / b : 0 }')
            printf '| %s | %s | %s | %s | %s | %s | %s | %s | %s | %s |\n' \
                "$s" "$round" "${srv%%:*}" "$rps" "$p50" "$p90" "$p99" "$max" "$ratio" "$reqs"
        done
    done
done
echo
echo "after: $(uptime | sed 's/.*load/load/')"
