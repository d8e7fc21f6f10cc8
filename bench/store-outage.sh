#!/usr/bin/env bash
# The store fails under load: `hlsgate serve` on PostgreSQL through a relay that can freeze
# (connections open, nothing passes: SIGSTOP, a partition) or go down (connections cut,
# new ones refused: the server stopped), bench/store-relay.py. A viewer the edge has seen
# is driven by wrk (-c32) for 30 s with the store failing from 5 s to 25 s; a viewer it has
# never seen (another login's playback URL, issued before the outage) asks every 250 ms.
# Per mode: wrk's requests, non-2xx and p99; the new viewer's answers and slowest answer;
# hlsgate_store_up during and after.
#
#   bench/store-outage.sh [freeze|down ...]     (both by default)
set -euo pipefail
MODES=${*:-freeze down}
cd "$(dirname "$0")/.."
. scripts/need.sh
need_postgres
DB=hlsgate_bench_outage
export PGPASSWORD=hlsgate
psql -q -h 127.0.0.1 -U hlsgate -d hlsgate -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null
psql -q -h 127.0.0.1 -U hlsgate -d hlsgate -c "CREATE DATABASE $DB" >/dev/null
CONTROL=$(mktemp /tmp/hlsgate-relay.XXXXXX)
echo ok >"$CONTROL"
python3 bench/store-relay.py 18095 127.0.0.1:5432 "$CONTROL" &
RELAY_PID=$!
mkdir -p data
cat >data/bench-store.yaml <<EOF
# bench/store-outage.sh writes this: hlsgate serve on PostgreSQL through the relay.
edge:
  listen: "127.0.0.1:18080"
  threads: 2
  access_log: "off"
admin:
  listen: "127.0.0.1:18083"
  public_edge_url: "http://127.0.0.1:18080"
  login_attempts_per_ip: 0
  login_attempts_per_user: 0
tokens:
  secret_file: "data/bench-secret.key"
  ttl: "1h"
origins:
  allow: ["127.0.0.1"]
store:
  url: "postgres://hlsgate:hlsgate@127.0.0.1:18095/$DB"
  cache_ttl: "2s"
metrics:
  listen: "127.0.0.1:18089"
EOF
sleep 0.5
HLSGATE_CONFIG=data/bench-store.yaml HLSGATE_ROLE=serve . bench/lib.sh
trap 'kill $RELAY_PID 2>/dev/null || true; rm -f "$CONTROL"; cleanup' EXIT

api() { # method path [jwt] [json]
    curl -s -A "$UA" -X "$1" "http://127.0.0.1:18083$2" -H 'Content-Type: application/json' \
        ${3:+-H "Authorization: Bearer $3"} ${4:+-d "$4"}
}
# Playback URLs are bound to the viewer's User-Agent: every client here sends the same.
UA=hlsgate-bench-player
json() { python3 -c "import json,sys; print(json.load(sys.stdin)$1)"; }
creds='{"username":"outage","password":"outage-password"}'
api POST /api/register "" "$creds" >/dev/null
login() { api POST /api/login "" "$creds" | json "['token']"; }
JWT=$(login)
ID=$(api POST /api/streams "$JWT" '{"url":"http://127.0.0.1:18081/live/index.m3u8"}' | json "['id']")
playback() { api GET "/api/stream?streamID=$ID" "$1" | json "['url']"; }
store_up() { curl -s 127.0.0.1:18089/metrics | awk '/^hlsgate_store_up / {print $2}'; }

echo
echo "| store | viewer seen (wrk 30 s, -c32): requests | non-2xx | p99 ms | new viewer during the outage: answers | slowest ms | after: new viewer | store_up during / after |"
echo "|---|---|---|---|---|---|---|---|"
for mode in $MODES; do
    echo ok >"$CONTROL"
    SEEN=$(playback "$(login)")
    UNSEEN=$(playback "$(login)")
    [ "$(curl -s -A "$UA" -o /dev/null -w '%{http_code}' "$SEEN")" = 200 ] || { echo "the seen viewer does not play" >&2; exit 1; }
    wrk -t1 -c32 -d30s --timeout 10s --latency -H "User-Agent: $UA" "$SEEN" >"$RUN/wrk-$mode.txt" &
    WRK=$!
    sleep 5
    echo "$mode" >"$CONTROL"
    sleep 3 # the edge's cache_ttl (2 s) runs out, the store is found down
    : >"$RUN/unseen-$mode.txt"
    for _ in $(seq 60); do
        curl -s -A "$UA" -o /dev/null -w '%{http_code} %{time_total}\n' --max-time 10 "$UNSEEN" >>"$RUN/unseen-$mode.txt"
        sleep 0.25
    done
    during=$(store_up)
    sleep 2
    echo ok >"$CONTROL"
    wait "$WRK" || true
    sleep 3
    after=$(curl -s -A "$UA" -o /dev/null -w '%{http_code}' "$UNSEEN")
    read -r req bad p99 < <(wrk_figures <"$RUN/wrk-$mode.txt")
    answers=$(awk '{print $1}' "$RUN/unseen-$mode.txt" | sort | uniq -c | awk '{printf "%s×%s ", $1, $2}')
    slowest=$(awk '{ if ($2 > m) m = $2 } END { printf "%.1f", m * 1000 }' "$RUN/unseen-$mode.txt")
    printf '| %s | %s | %s | %s | %s | %s | %s | %s / %s |\n' "$mode" "$req" "$bad" "$p99" "${answers% }" "$slowest" "$after" "$during" "$(store_up)"
done
