#!/usr/bin/env bash
# Load test: hlsgate against nginx protecting the same HLS the stock way (secure_link +
# sub_filter, bench/nginx/secure-link.conf.in), both in front of one nginx origin on
# loopback. Runs each side ROUNDS times interleaved (A B A B ...) with wrk and prints the
# median requests/s and p99 latency of each and the ratio.
#
#   bench/compare.sh [vod]        (default: vod)
#   ROUNDS=3 DURATION=10s CONNS=32 bench/compare.sh vod
#
# Scenarios:
#   vod   a 5,000-segment VOD playlist (the shape ffmpeg writes), fetched from the origin
#         and rewritten for the viewer on every request.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_build
need nginx nginx-extras
need wrk wrk
need curl curl
need openssl openssl

SCENARIO=${1:-vod}
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}
RUN=$(mktemp -d /tmp/hlsgate-bench.XXXXXX)
mkdir -p "$RUN/tmp" "$RUN/data/vod"
chmod 755 "$RUN"  # nginx workers run as nobody when started by root
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for c in origin secure-link; do
        [ -f "$RUN/$c.pid" ] && nginx -c "$RUN/$c.conf" -s stop 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT

# --- data ---------------------------------------------------------------------------
{
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n'
    for i in $(seq 0 4999); do printf '#EXTINF:2.000000,\nindex%d.ts\n' "$i"; done
    printf '#EXT-X-ENDLIST\n'
} > "$RUN/data/vod/index.m3u8"

# --- servers ------------------------------------------------------------------------
echo ">> building hlsgate (release)" >&2
cargo build --release --quiet
for c in origin secure-link; do
    sed -e "s#@RUN@#$RUN#g" -e "s#@DATA@#$RUN/data#g" "bench/nginx/$c.conf.in" > "$RUN/$c.conf"
    nginx -c "$RUN/$c.conf" -e "$RUN/$c-error.log"
done
RUST_LOG=warn target/release/hlsgate edge -c bench/hlsgate.yaml >"$RUN/hlsgate.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18080/ && break; sleep 0.1; done

# --- URLs ---------------------------------------------------------------------------
EXPIRES=$(( $(date +%s) + 3600 ))
MD5=$(printf '%s' "$EXPIRES 127.0.0.1 bench-secret" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =)
case "$SCENARIO" in
vod)
    NGINX_URL="http://127.0.0.1:18082/vod/index.m3u8?md5=$MD5&expires=$EXPIRES"
    HLSGATE_URL=$(target/release/hlsgate token -c bench/hlsgate.yaml --stream vod --ip 127.0.0.1 --ttl 3600)
    ;;
*) echo "unknown scenario: $SCENARIO" >&2; exit 2 ;;
esac

# Both sides must really do the job before they are timed: 200, every segment URI signed.
check() { # name url expected-signed-pattern
    local body code
    code=$(curl -s -o "$RUN/check" -w '%{http_code}' "$2")
    body=$(grep -c "$3" "$RUN/check" || true)
    if [ "$code" != 200 ] || [ "$body" -ne 5000 ]; then
        echo "!! $1 is not serving the signed playlist (HTTP $code, $body signed URIs)" >&2
        exit 1
    fi
    echo ">> $1: HTTP 200, $body segment URIs signed, $(wc -c <"$RUN/check") bytes" >&2
}
check nginx "$NGINX_URL" "^index[0-9]*\.ts?md5=$MD5&expires=$EXPIRES\$"
check hlsgate "$HLSGATE_URL" '^/api/hls/[A-Za-z0-9_-]*/vod/index[0-9]*\.ts$'
[ "$(curl -s -o /dev/null -w '%{http_code}' "${NGINX_URL%%\?*}")" = 403 ] || { echo "!! nginx accepts unsigned" >&2; exit 1; }

# --- load ---------------------------------------------------------------------------
run_wrk() { # url -> "req/s p99_ms"
    wrk -t1 -c"$CONNS" -d"$DURATION" --latency "$1" | awk '
        /Requests\/sec/ { rps = $2 }
        /^ +99%/ { v = $2; ms = v + 0;
                   if (v ~ /us$/) ms = v / 1000; else if (v ~ /ms$/) ms = v + 0;
                   else if (v ~ /s$/) ms = v * 1000;
                   p99 = ms }
        /Non-2xx/ { bad = $4 }
        END { if (bad) { print "ERR non-2xx " bad; exit 1 } printf "%s %.2f\n", rps, p99 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

echo ">> $SCENARIO: wrk -t1 -c$CONNS -d$DURATION, $ROUNDS rounds interleaved" >&2
: >"$RUN/nginx.txt"; : >"$RUN/hlsgate.txt"
for r in $(seq "$ROUNDS"); do
    n=$(run_wrk "$NGINX_URL"); echo "$n" >>"$RUN/nginx.txt"
    h=$(run_wrk "$HLSGATE_URL"); echo "$h" >>"$RUN/hlsgate.txt"
    echo "   round $r: nginx $n | hlsgate $h   (req/s p99-ms)" >&2
done
NR=$(cut -d' ' -f1 "$RUN/nginx.txt" | median); NP=$(cut -d' ' -f2 "$RUN/nginx.txt" | median)
HR=$(cut -d' ' -f1 "$RUN/hlsgate.txt" | median); HP=$(cut -d' ' -f2 "$RUN/hlsgate.txt" | median)
printf '%-8s %-28s %12s %10s\n' scenario side 'req/s(med)' 'p99 ms'
printf '%-8s %-28s %12.1f %10.2f\n' "$SCENARIO" "nginx secure_link+sub_filter" "$NR" "$NP"
printf '%-8s %-28s %12.1f %10.2f\n' "$SCENARIO" hlsgate "$HR" "$HP"
awk -v h="$HR" -v n="$NR" 'BEGIN { printf "ratio hlsgate/nginx: %.1fx\n", h / n }'
