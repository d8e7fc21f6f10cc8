#!/usr/bin/env bash
# What one address holding many connections costs everyone else: the per-address
# connection cap (edge.max_connections_per_ip, issue 26) against a connection flood.
# Viewers (wrk -t1 -c32, from 127.0.0.1, connecting while the flood is on) play the cached
# live playlist; one client from 127.0.0.2 (bench/idle.py --source) opens FLOOD keep-alive
# connections, one request each (/healthz), then holds them idle, and reconnects at once
# whenever one is closed or refused. Both edges have edge.max_connections 512 and a 60 s idle timeout.
# Rounds interleaved, each side DURATION:
#
#   alone    the viewers, no flood (capped edge)
#   capped   + the flood, edge.max_connections_per_ip 64
#   uncapped + the flood, max_connections_per_ip 0 (a second hlsgate, same build)
#
#   ROUNDS=3 DURATION=15s FLOOD=2000 bench/connflood.sh
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
conf=data/bench-connflood.yaml
sed -e 's/^edge:$/edge:\n  max_connections: 512\n  max_connections_per_ip: 64\n  idle_timeout: "60s"/' \
    bench/hlsgate.yaml >"$conf"
export HLSGATE_CONFIG=$conf
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-15s}
FLOOD=${FLOOD:-2000}
secs=${DURATION%s}
VIEWER=$(hlsgate_url live index.m3u8)
# The uncapped edge: the same build and config on 18090 (metrics 18099, admin 18093).
sed -E -e '/^  (tls|access_log|access_log_format|upgrade_socket):/d' \
    -e 's/127.0.0.1:18080/127.0.0.1:18090/' -e 's/127.0.0.1:18083/127.0.0.1:18093/' \
    -e 's/127.0.0.1:18089/127.0.0.1:18099/' -e 's#sqlite://data/bench.db#sqlite://data/bench-connflood.db#' \
    -e 's/max_connections_per_ip: 64/max_connections_per_ip: 0/' \
    "$conf" >"$RUN/uncapped.yaml"
RUST_LOG=warn target/release/hlsgate edge -c "$RUN/uncapped.yaml" >"$RUN/uncapped.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/healthz && break; sleep 0.1; done
PATH_Q=${VIEWER#http://127.0.0.1:18080}

# side port flood? -> "req/s non-2xx+errors p99" of the viewers, and the flood's summary
side() {
    local port=$1 flood=$2 fpid=
    if [ "$flood" = yes ]; then
        python3 bench/idle.py 127.0.0.1 "$port" /healthz --conns "$FLOOD" --ramp 2 \
            --seconds $(( secs + 5 )) --source 127.0.0.2 >"$RUN/flood.$port.json" &
        fpid=$!
        sleep 4 # the flood holds its connections
    fi
    wrk -t1 -c32 -d"$DURATION" --latency "http://127.0.0.1:$port$PATH_Q" >"$RUN/wrk.txt" 2>&1 || true
    local req bad p99
    read -r req bad p99 < <(wrk_figures <"$RUN/wrk.txt")
    [ -n "$fpid" ] && wait "$fpid"
    echo "$(( req / secs )) $bad $p99"
}

: >"$RUN/results.txt"
for r in $(seq "$ROUNDS"); do
    a=$(side 18080 no); c=$(side 18080 yes); u=$(side 18090 yes)
    echo "   round $r: alone $a | capped $c | uncapped $u   (viewers' req/s, failed, p99 ms)" >&2
    echo "$a $c $u" >>"$RUN/results.txt"
done
printf '\n%-9s %12s %12s %10s\n' side 'req/s' 'failed' 'p99 ms'
for i in 0 1 2; do
    name=$(echo alone capped uncapped | cut -d' ' -f$(( i + 1 )))
    printf '%-9s %12s %12s %10s\n' "$name" \
        "$(awk -v c=$(( 3 * i + 1 )) '{print $c}' "$RUN/results.txt" | median)" \
        "$(awk -v c=$(( 3 * i + 2 )) '{print $c}' "$RUN/results.txt" | median)" \
        "$(awk -v c=$(( 3 * i + 3 )) '{print $c}' "$RUN/results.txt" | median)"
done
echo "(medians of $ROUNDS interleaved rounds; viewers wrk -t1 -c32 -d$DURATION from 127.0.0.1; flood: $FLOOD connections from 127.0.0.2; edge.max_connections 512)"
curl -s 127.0.0.1:18089/metrics | grep 'hlsgate_auth_denials_total{reason="ip_connection_limit"}' || true
echo "last flood on the capped edge: $(cat "$RUN/flood.18080.json" | head -c 300)"
echo "last flood on the uncapped edge: $(cat "$RUN/flood.18090.json" | head -c 300)"
