#!/usr/bin/env bash
# Two builds of hlsgate under the same load, interleaved (A B A B ...): the current tree
# (target/release/hlsgate, port 18080) against another build (OLD_BIN, port 18090), both
# in front of one nginx origin on loopback. For "no regression beyond noise" checks.
#
#   git worktree add /tmp/old <commit> && (cd /tmp/old && cargo build --release)
#   OLD_BIN=/tmp/old/target/release/hlsgate bench/before-after.sh [segment|live|vod|all]
#   ROUNDS=5 DURATION=10s CONNS=32 OLD_BIN=... bench/before-after.sh segment
. "$(dirname "$0")/lib.sh"

: "${OLD_BIN:?set OLD_BIN to the other hlsgate build}"
SCENARIOS=${1:-all}
[ "$SCENARIOS" = all ] && SCENARIOS="segment live vod"
ROUNDS=${ROUNDS:-5}

# The other build: the same config on other ports, the same key file (tokens verify on both),
# without the keys older builds do not know (and whose listeners would clash).
sed -E -e '/^  (tls|access_log|access_log_format|upgrade_socket):/d' -e 's/127.0.0.1:18080/127.0.0.1:18090/' -e 's/127.0.0.1:18083/127.0.0.1:18093/' \
    -e 's/127.0.0.1:18089/127.0.0.1:18099/' -e 's#sqlite://data/bench.db#sqlite://data/bench-old.db#' \
    "$HLSGATE_CONFIG" > "$RUN/old.yaml"
RUST_LOG=warn "$OLD_BIN" edge -c "$RUN/old.yaml" >"$RUN/old.log" 2>&1 &
PIDS+=("$!")
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/healthz && break; sleep 0.1; done

RESULTS=$RUN/results.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    vod) obj=index.m3u8; st=vod ;;
    live) obj=index.m3u8; st=live ;;
    segment) obj=seg.ts; st=vod ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    NEW=$(hlsgate_url "$st" "$obj")
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
