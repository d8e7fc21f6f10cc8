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
echo ">> building the bare Pingora probe (examples/bare_pingora.rs)" >&2
cargo build --release --quiet --example bare_pingora

RESULTS=$RUN/ceiling.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    segment) obj=$RUN/data/vod/seg.ts; HU=$(hlsgate_url vod seg.ts); NU=$(nginx_url vod/seg.ts) ;;
    live) obj=$RUN/data/live/index.m3u8; HU=$(hlsgate_url live index.m3u8); NU=$(nginx_url live/index.m3u8) ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    # The same threads and runtime as bench/hlsgate.yaml's edge (2, no work stealing).
    [ -n "${BARE_PID:-}" ] && { kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; }
    target/release/examples/bare_pingora 127.0.0.1:18090 "$obj" 2 false >"$RUN/bare.log" 2>&1 &
    BARE_PID=$!; PIDS+=("$BARE_PID")
    BU=http://127.0.0.1:18090/$sc
    for _ in $(seq 100); do curl -s -o /dev/null "$BU" && break; sleep 0.1; done
    for u in "$HU" "$BU" "$NU"; do
        curl -s -o "$RUN/check" "$u"
        case $sc in
        segment) cmp -s "$RUN/check" "$obj" || { echo "!! $u: wrong bytes" >&2; exit 1; } ;;
        live) grep -q '^#EXTINF' "$RUN/check" || { echo "!! $u: not the playlist" >&2; exit 1; } ;;
        esac
    done
    echo ">> $sc: wrk -t1 -c${CONNS:-32} -d${DURATION:-10s} --latency, $ROUNDS rounds interleaved" >&2
    : >"$RUN/b.txt"; : >"$RUN/h.txt"; : >"$RUN/n.txt"
    for r in $(seq "$ROUNDS"); do
        b=$(run_wrk "$BU"); echo "$b" >>"$RUN/b.txt"
        h=$(run_wrk "$HU"); echo "$h" >>"$RUN/h.txt"
        n=$(run_wrk "$NU"); echo "$n" >>"$RUN/n.txt"
        echo "   round $r: bare $b | hlsgate $h | nginx $n   (req/s p99-ms)" >&2
    done
    med() { cut -d' ' -f"$2" "$RUN/$1.txt" | median; }
    echo "$sc $(med b 1) $(med b 2) $(med h 1) $(med h 2) $(med n 1) $(med n 2)" >>"$RESULTS"
done
printf '\n%-8s %10s %7s %10s %7s %10s %7s %12s %14s %13s\n' scenario 'bare' p99 hlsgate p99 nginx p99 \
    'hlsgate/bare' 'hlsgate/nginx' 'bare/nginx'
awk '{ printf "%-8s %10.1f %7.2f %10.1f %7.2f %10.1f %7.2f %12.3f %13.2fx %12.2fx\n",
       $1, $2, $3, $4, $5, $6, $7, $4 / $2, $4 / $6, $2 / $6 }' "$RESULTS"
echo "(req/s and p99 ms: medians of $ROUNDS interleaved rounds; wrk -t1 -c${CONNS:-32} -d${DURATION:-10s}; $(nproc) CPUs shared by wrk, the servers and the origin)"
