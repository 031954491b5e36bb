#!/usr/bin/env bash
# Stampede bench (issue 4): N clients request one fresh key at once through daramjwee, nginx
# (proxy_cache_lock on) and Varnish, all in front of the same local origin, in the same run.
# Prints origin calls, time to first byte and time to complete (p50, max) over every client.
#
#   bash benches/stampede/run.sh            # about 1-2 minutes after the build
#
# Loopback only; every process it starts is stopped by PID on exit.
set -euo pipefail
source "$(dirname "$0")/../proxy/lib.sh"
trap cleanup EXIT
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

install_peers
build_rust
echo "machine: $(nproc) cores; before: $(uptime | sed 's/.*load/load/')"

ORIGIN=18180 DJ=18181 NGX=18182 VAR=18183
start_origin $ORIGIN 3600
start_daramjwee daramjwee $DJ $ORIGIN memory:2GiB
start_nginx $NGX $ORIGIN
start_varnish $VAR $ORIGIN

CLIENTS=${CLIENTS:-"200 1000"}
printf '| object | clients | server | origin calls | ok | TTFB p50 ms | TTFB max ms | done p50 ms | done max ms |\n'
printf '|---|---|---|---|---|---|---|---|---|\n'
for obj in "1 KiB fast:/obj/1k" "16 MiB fast:/obj/16m" "1 MiB slow (~1 s):/slow/1m"; do
    label=${obj%%:*}
    path=${obj#*:}
    for n in $CLIENTS; do
        for server in daramjwee:$DJ nginx:$NGX varnish:$VAR; do
            name=${server%%:*}
            port=${server#*:}
            before=$(origin_calls $ORIGIN)
            out=$("$REL/examples/stampede_client" "http://127.0.0.1:$port$path?r=$name-$n-$RANDOM$RANDOM" "$n" 60)
            after=$(origin_calls $ORIGIN)
            get() { sed -n "s/.*$1=\([^ ]*\).*/\1/p" <<<"$out"; }
            printf '| %s | %s | %s | %s | %s/%s | %s | %s | %s | %s |\n' "$label" "$n" "$name" \
                $((after - before)) "$(get ok)" "$n" "$(get ttfb_p50_ms)" "$(get ttfb_max_ms)" \
                "$(get done_p50_ms)" "$(get done_max_ms)"
        done
    done
done
echo
echo "after: $(uptime | sed 's/.*load/load/') (other jobs on this shared machine compete for the same cores)"
