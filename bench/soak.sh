#!/usr/bin/env bash
# Soak: IDLE idle keep-alive connections (bench/idle.py: one request each, then silence
# until the edge closes them at edge.idle_timeout, then again) plus PLAYERS simulated live
# viewers (bench/viewers.py, one token each) of a real ffmpeg live stream, through hlsgate
# for DURATION seconds, all on loopback. Samples hlsgate's RSS and open connections every
# 10 s; prints start (after the ramp) / peak / end RSS, both clients' errors and the idle
# close times.
#
#   IDLE=10000 PLAYERS=500 DURATION=600 IDLE_TIMEOUT=60s bench/soak.sh
# 10,000 idle connections need more descriptors than the usual 1024 (each process: the
# edge, the idle client); raised to the hard limit.
ulimit -n "$(ulimit -Hn)"
IDLE=${IDLE:-10000}
PLAYERS=${PLAYERS:-500}
DURATION=${DURATION:-600}
IDLE_TIMEOUT=${IDLE_TIMEOUT:-60s}
mkdir -p data
sed -e "s/^  threads: 2$/  threads: 2\n  idle_timeout: \"$IDLE_TIMEOUT\"\n  max_connections: 20000/" \
    -e 's#data/bench-upgrade.sock#data/soak-upgrade.sock#' bench/hlsgate.yaml > data/bench-soak.yaml
export HLSGATE_CONFIG=data/bench-soak.yaml
. "$(dirname "$0")/lib.sh"
need ffmpeg ffmpeg
need python3 python3

start_live_stream $((DURATION + 120))

echo ">> $PLAYERS viewer tokens" >&2
for i in $(seq "$PLAYERS"); do
    target/release/hlsgate token -c "$HLSGATE_CONFIG" --stream live --ip 127.0.0.1 \
        --ua hlsgate-viewer-sim --ttl 3600
done > "$RUN/urls"
IDLE_PATH=$(hlsgate_url live index.m3u8 | sed 's#^http://[^/]*##')

metric() { curl -s 127.0.0.1:18089/metrics | awk -v m="$1" '$1 == m {print $2}'; }
echo ">> $IDLE idle connections + $PLAYERS viewers for $DURATION s (idle_timeout $IDLE_TIMEOUT)" >&2
echo "rss before: $(rss) kB"
python3 bench/idle.py 127.0.0.1 18080 "$IDLE_PATH" --conns "$IDLE" --seconds "$DURATION" --ramp 20 \
    > "$RUN/idle.json" &
IDLE_PID=$!
python3 bench/viewers.py "$(head -1 "$RUN/urls")" --urls "$RUN/urls" --players "$PLAYERS" \
    --seconds "$DURATION" > "$RUN/viewers.txt" &
VIEWERS_PID=$!
start=$(date +%s)
: > "$RUN/samples"
while kill -0 "$IDLE_PID" 2>/dev/null || kill -0 "$VIEWERS_PID" 2>/dev/null; do
    echo "$(( $(date +%s) - start )) $(rss) $(( $(metric hlsgate_cache_held_bytes) / 1024 )) $(metric hlsgate_edge_connections)" >> "$RUN/samples"
    sleep 10
done
wait "$IDLE_PID" || true
wait "$VIEWERS_PID" || true
echo "samples (seconds, RSS kB, cache held kB, open edge connections):"
cat "$RUN/samples"
# The end is the last sample with the connections still open (the one after the clients
# stop is lower).
awk -v n="$IDLE" '$1 >= 30 && !s {s=$2; sc=$2-$3} $4 >= n {if ($2>p) p=$2; if ($2-$3>pc) pc=$2-$3; e=$2; ec=$2-$3}
     END {printf "RSS start %d kB (at 30 s, after the ramp), peak %d kB, end %d kB\n", s, p, e;
          printf "RSS minus the segment cache: start %d kB, peak %d kB, end %d kB\n", sc, pc, ec}' "$RUN/samples"
echo "viewers:"; cat "$RUN/viewers.txt"
echo "idle: $(cat "$RUN/idle.json")"
curl -s 127.0.0.1:18089/metrics | grep -E '^hlsgate_(requests_total|auth_denials_total|origin_errors_total|active_sessions|cache_requests_total)' | grep -v ' 0$'
# pingora-cache's one-time note about its header compression dictionary is not a problem.
echo "hlsgate log ERROR|WARN lines: $(grep -iE ' (ERROR|WARN) ' "$RUN/hlsgate.log" | grep -vc 'no header compression dictionary')"
grep -iE ' (ERROR|WARN) ' "$RUN/hlsgate.log" | grep -v 'no header compression dictionary' | head -5 || true
