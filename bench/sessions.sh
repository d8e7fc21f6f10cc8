#!/usr/bin/env bash
# What the admin's sessions cost and how fast they end, on `hlsgate serve` with the bench
# config (SQLite store in data/bench.db; the origin is lib.sh's nginx on loopback):
#
#   1. edge throughput on the cached live playlist with a stateless token (`hlsgate token`)
#      against a playback URL from the admin, whose stored session the edge checks on
#      every request (through its moka cache): ROUNDS interleaved wrk runs, medians, ratio;
#      and how many store queries the edge made meanwhile (hlsgate_store_queries_total);
#   2. login latency (argon2id verify + session insert), LOGINS sequential logins, median;
#   3. logout: the status of the first playback request after the 204.
#
#   bench/sessions.sh            ROUNDS=3 DURATION=10s CONNS=32 LOGINS=20
HLSGATE_ROLE=serve
. "$(dirname "$0")/lib.sh"
ROUNDS=${ROUNDS:-3}
LOGINS=${LOGINS:-20}
A=http://127.0.0.1:18083/api
UA="bench-player/1.0"
json() { python3 -c "import json,sys; print(json.load(sys.stdin)[\"$1\"])"; }
store_queries() {
    curl -s 127.0.0.1:18089/metrics | awk '/^hlsgate_store_queries_total/ { s += $2 } END { print s + 0 }'
}

CREDS='{"username":"bench","password":"bench-password"}'
curl -s -o /dev/null -XPOST $A/register -d "$CREDS"       # 201, or 409 from an earlier run
JWT=$(curl -s -XPOST $A/login -d "$CREDS" | json token)
ID=$(curl -s -H "Authorization: Bearer $JWT" -XPOST $A/streams \
    -d '{"url":"http://127.0.0.1:18081/live/index.m3u8"}' | json id)
SU=$(curl -s -A "$UA" -H "Authorization: Bearer $JWT" "$A/stream?streamID=$ID" | json url)
U=$(target/release/hlsgate token -c "$HLSGATE_CONFIG" --stream live --ip 127.0.0.1 --ua "$UA" --ttl 3600)
for u in "$SU" "$U"; do
    code=$(curl -s -o /dev/null -w '%{http_code}' -A "$UA" "$u")
    [ "$code" = 200 ] || { echo "!! $u: HTTP $code" >&2; exit 1; }
done

echo ">> live playlist: stateless token vs stored session, $ROUNDS rounds interleaved" >&2
: >"$RUN/a.txt"; : >"$RUN/b.txt"
q0=$(store_queries)
for r in $(seq "$ROUNDS"); do
    a=$(run_wrk "$U" -H "User-Agent: $UA"); echo "$a" >>"$RUN/a.txt"
    b=$(run_wrk "$SU" -H "User-Agent: $UA"); echo "$b" >>"$RUN/b.txt"
    echo "   round $r: stateless $a | stored session $b   (req/s p99-ms)" >&2
done
q1=$(store_queries)
sa=$(cut -d' ' -f1 "$RUN/a.txt" | median); pa=$(cut -d' ' -f2 "$RUN/a.txt" | median)
sb=$(cut -d' ' -f1 "$RUN/b.txt" | median); pb=$(cut -d' ' -f2 "$RUN/b.txt" | median)
requests=$(awk -v r="$sb" -v n="$ROUNDS" -v d="${DURATION:-10s}" 'BEGIN { sub(/s$/, "", d); printf "%d", r * n * d }')

echo ">> $LOGINS logins" >&2
: >"$RUN/login.txt"
for _ in $(seq "$LOGINS"); do
    curl -s -o /dev/null -w '%{time_total}\n' -XPOST $A/login -d "$CREDS" >>"$RUN/login.txt"
done
login_ms=$(median <"$RUN/login.txt" | awk '{ printf "%.1f", $1 * 1000 }')

curl -s -o /dev/null -XPOST -H "Authorization: Bearer $JWT" $A/logout
after=$(curl -s -o /dev/null -w '%{http_code}' -A "$UA" "$SU")

printf '\n%-28s %12s %10s\n' 'live playlist, cached' 'req/s' 'p99 ms'
printf '%-28s %12.1f %10.2f\n' 'stateless token' "$sa" "$pa"
printf '%-28s %12.1f %10.2f\n' 'stored-session token' "$sb" "$pb"
awk -v a="$sa" -v b="$sb" 'BEGIN { printf "ratio stored/stateless: %.2f\n", b / a }'
echo "store queries by the edge during ~$requests stored-session requests: $((q1 - q0))"
echo "login median: ${login_ms} ms ($LOGINS sequential)"
echo "first playback request after logout: HTTP $after"
echo "(medians of $ROUNDS interleaved rounds; wrk -t1 -c${CONNS:-32} -d${DURATION:-10s}; $(nproc) CPUs shared)"
