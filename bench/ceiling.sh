#!/usr/bin/env bash
# The ceiling: hlsgate serving a cached 1 MiB segment (token checked, cache hit, metrics,
# headers) against a bare Pingora 0.9 service (examples/bare_pingora.rs) answering the same
# bytes from request_filter with no checks at all, same threads, same load; each side
# ROUNDS times interleaved; medians and the ratio hlsgate / bare.
#
#   bench/ceiling.sh                      ROUNDS=5 DURATION=10s CONNS=32
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-5}
echo ">> building the bare Pingora probe (examples/bare_pingora.rs)" >&2
cargo build --release --quiet --example bare_pingora
# The same threads and runtime as bench/hlsgate.yaml's edge (2, no work stealing).
target/release/examples/bare_pingora 127.0.0.1:18090 "$RUN/data/vod/seg.ts" 2 false \
    >"$RUN/bare.log" 2>&1 &
PIDS+=($!)
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/ && break; sleep 0.1; done

HU=$(hlsgate_url vod seg.ts)
BU=http://127.0.0.1:18090/vod/seg.ts
for u in "$HU" "$BU"; do
    curl -s -o "$RUN/check" "$u"
    cmp -s "$RUN/check" "$RUN/data/vod/seg.ts" || { echo "!! $u: wrong bytes" >&2; exit 1; }
done
curl -s -o /dev/null "$HU" # the segment is cached before timing
echo ">> cached 1 MiB segment: wrk -t1 -c${CONNS:-32} -d${DURATION:-10s} --latency, $ROUNDS rounds interleaved" >&2
read -r b_rps b_p99 h_rps h_p99 < <(interleave bare "$BU" hlsgate "$HU")
printf '\n%-10s %12s %9s\n' side 'req/s' 'p99 ms'
printf '%-10s %12.1f %9.2f\n' bare "$b_rps" "$b_p99" hlsgate "$h_rps" "$h_p99"
awk -v h="$h_rps" -v b="$b_rps" 'BEGIN { printf "hlsgate / bare Pingora: %.3f\n", h / b }'
echo "(medians of $ROUNDS interleaved rounds; $(nproc) CPUs shared by wrk and the server)"
