#!/usr/bin/env bash
# Two builds of hlsgate under the same load, interleaved (A B A B ...): the current tree
# (target/release/hlsgate, port 18080) against another build (OLD_BIN, port 18090), both
# in front of one nginx origin on loopback. For "no regression beyond noise" checks.
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
#   OLD_BIN=/tmp/old/target/release/hlsgate bench/before-after.sh [segment|live|vod|jwt|all]
#   ROUNDS=5 DURATION=10s CONNS=32 OLD_BIN=... bench/before-after.sh segment
#
# `jwt`: the cached live playlist asked for with an IVS-style JWT (ES384, signed by PyJWT)
# in the query, as a player keeps asking for its master: the exchange and the grant's
# checks on every request.
SCENARIOS=${1:-all}
[ "$SCENARIOS" = all ] && SCENARIOS="segment live vod jwt"
if [[ " $SCENARIOS " == *" jwt "* ]]; then
    . "$(dirname "$0")/jwt-keys.sh"
fi
. "$(dirname "$0")/lib.sh"

: "${OLD_BIN:?set OLD_BIN to the other hlsgate build}"
ROUNDS=${ROUNDS:-5}
if [ -n "${JWT_KEYS:-}" ]; then
    JWT=$(ivs_jwt)
fi
start_old_build

RESULTS=$RUN/results.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    vod) obj=index.m3u8; st=vod ;;
    live) obj=index.m3u8; st=live ;;
    segment) obj=seg.ts; st=vod ;;
    jwt) ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    if [ "$sc" = jwt ]; then
        NEW="http://127.0.0.1:18080/hls/live/index.m3u8?token=$JWT"
    else
        NEW=$(hlsgate_url "$st" "$obj")
    fi
    OLD=${NEW/:18080/:18090}
    for u in "$NEW" "$OLD"; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' "$u")" = 200 ] || { echo "!! $u" >&2; exit 1; }
    done
    echo ">> $sc: wrk -t1 -c${CONNS:-32} -d${DURATION:-10s}, $ROUNDS rounds interleaved" >&2
    echo "$sc $(interleave before "$OLD" after "$NEW")" >>"$RESULTS"
done

printf '\n%-8s %14s %10s %14s %10s %8s\n' scenario 'before req/s' 'p99 ms' 'after req/s' 'p99 ms' ratio
awk '{ printf "%-8s %14.1f %10.2f %14.1f %10.2f %7.2fx\n", $1, $2, $3, $4, $5, $4 / $2 }' "$RESULTS"
echo "(medians of $ROUNDS interleaved rounds; wrk -t1 -c${CONNS:-32} -d${DURATION:-10s}; $(nproc) CPUs shared by wrk, both builds and the origin)"
if [ -n "${JWT_KEYS:-}" ]; then jwt_keys_cleanup; fi
