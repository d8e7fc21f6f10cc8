#!/usr/bin/env bash
# The ceiling: hlsgate against a bare Pingora 0.9 service (examples/bare_pingora.rs)
# answering the same bytes from request_filter with no checks at all (no token, no cache
# lookup, no metrics, no log), same threads, same runtime, same load; and nginx
# (secure_link + proxy_cache + sub_filter, as bench/compare.sh) doing the job. Each side
# ROUNDS times interleaved; medians, hlsgate / bare and both against nginx.
#
#   bench/ceiling.sh [segment|live|all]       (default: segment)
#   ROUNDS=5 DURATION=10s CONNS=32 bench/ceiling.sh live
#
#   segment  a cached 1 MiB segment, token checked on every request
#   live     the cached 6-segment live playlist, rewritten per viewer (bare: the origin's
#            bytes as they are)
. "$(dirname "$0")/lib.sh"
SCENARIOS=${1:-segment}
[ "$SCENARIOS" = all ] && SCENARIOS="segment live"
ROUNDS=${ROUNDS:-5}

RESULTS=$RUN/ceiling.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    segment) obj=$RUN/data/vod/seg.ts; HU=$(hlsgate_url vod seg.ts); NU=$(nginx_url vod/seg.ts) ;;
    live) obj=$RUN/data/live/index.m3u8; HU=$(hlsgate_url live index.m3u8); NU=$(nginx_url live/index.m3u8) ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    start_bare "$obj"
    BU=http://127.0.0.1:18090/$sc
    for u in "$HU" "$BU" "$NU"; do
        curl -s -o "$RUN/check" "$u"
        case $sc in
        segment) cmp -s "$RUN/check" "$obj" || { echo "!! $u: wrong bytes" >&2; exit 1; } ;;
        live) grep -q '^#EXTINF' "$RUN/check" || { echo "!! $u: not the playlist" >&2; exit 1; } ;;
        esac
    done
    echo ">> $sc: wrk -t1 -c${CONNS:-32} -d${DURATION:-10s} --latency, $ROUNDS rounds interleaved" >&2
    echo "$sc $(interleave bare "$BU" hlsgate "$HU" nginx "$NU")" >>"$RESULTS"
done
printf '\n%-8s %10s %7s %10s %7s %10s %7s %12s %14s %13s\n' scenario 'bare' p99 hlsgate p99 nginx p99 \
    'hlsgate/bare' 'hlsgate/nginx' 'bare/nginx'
awk '{ printf "%-8s %10.1f %7.2f %10.1f %7.2f %10.1f %7.2f %12.3f %13.2fx %12.2fx\n",
       $1, $2, $3, $4, $5, $6, $7, $4 / $2, $4 / $6, $2 / $6 }' "$RESULTS"
echo "(req/s and p99 ms: medians of $ROUNDS interleaved rounds; wrk -t1 -c${CONNS:-32} -d${DURATION:-10s}; $(nproc) CPUs shared by wrk, the servers and the origin)"
