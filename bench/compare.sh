#!/usr/bin/env bash
# Load test: hlsgate against nginx protecting the same HLS the stock way
# (secure_link + proxy_cache + sub_filter: bench/nginx/secure-link.conf.in), both in front
# of one nginx origin on loopback. Each side runs ROUNDS times interleaved (A B A B ...)
# under the same wrk load; prints the median requests/s and p99 latency and the ratio.
#
#   bench/compare.sh [vod|live|segment|all]      (default: all)
#   ROUNDS=3 DURATION=10s CONNS=32 bench/compare.sh segment
#
#   vod      a 5,000-segment VOD playlist (150 KB), cached, rewritten for each viewer
#   live     a 6-segment live playlist, cached about 1 s, rewritten for each viewer
#   segment  a cached 1 MiB segment, token checked on every request
. "$(dirname "$0")/lib.sh"

SCENARIOS=${1:-all}
[ "$SCENARIOS" = all ] && SCENARIOS="segment live vod"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-10s}
CONNS=${CONNS:-32}

# Both sides must really do the job before they are timed.
check() { # name url scenario
    local code signed
    code=$(curl -s -o "$RUN/check" -w '%{http_code}' "$2")
    [ "$code" = 200 ] || { echo "!! $1 $3: HTTP $code" >&2; exit 1; }
    case $3 in
    segment) cmp -s "$RUN/check" "$RUN/data/vod/seg.ts" || { echo "!! $1: wrong segment bytes" >&2; exit 1; } ;;
    vod|live)
        # nginx appends its token; hlsgate keeps relative URIs (they resolve against the
        # tokened playlist URL) and prefixes the rest.
        if [ "$1" = nginx ]; then re="md5=$MD5&expires=$EXPIRES\$"
        else re="^(/api/hls/[A-Za-z0-9_-]+/$3/|[^/#][^:]*\$)"; fi
        signed=$(grep -cE "$re" "$RUN/check" || true)
        want=$(grep -cv '^#' "$RUN/data/$3/index.m3u8")
        [ "$signed" -eq "$want" ] || { echo "!! $1 $3: $signed of $want URIs signed" >&2; exit 1; } ;;
    esac
}
[ "$(curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:18082/vod/seg.ts)" = 403 ] \
    || { echo "!! nginx serves unsigned requests" >&2; exit 1; }

RESULTS=$RUN/results.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    vod) NU=$(nginx_url vod/index.m3u8); HU=$(hlsgate_url vod index.m3u8) ;;
    live) NU=$(nginx_url live/index.m3u8); HU=$(hlsgate_url live index.m3u8) ;;
    segment) NU=$(nginx_url vod/seg.ts); HU=$(hlsgate_url vod seg.ts) ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    check nginx "$NU" "$sc"; check hlsgate "$HU" "$sc"
    echo ">> $sc: wrk -t1 -c$CONNS -d$DURATION --latency, $ROUNDS rounds interleaved" >&2
    echo "$sc $(interleave nginx "$NU" hlsgate "$HU")" >>"$RESULTS"
done

printf '\n%-8s %14s %10s %14s %10s %8s\n' scenario 'nginx req/s' 'p99 ms' 'hlsgate req/s' 'p99 ms' ratio
awk '{ printf "%-8s %14.1f %10.2f %14.1f %10.2f %7.1fx\n", $1, $2, $3, $4, $5, $4 / $2 }' "$RESULTS"
echo "(medians of $ROUNDS interleaved rounds; wrk -t1 -c$CONNS -d$DURATION; $(nproc) CPUs shared by wrk, both servers and the origin)"
