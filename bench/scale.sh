#!/usr/bin/env bash
# How hlsgate's cost grows with the work (figures in bench/README.md):
#
#   bench/scale.sh viewers    simulated live players (bench/viewers.py, one token each) on a
#                             real ffmpeg live stream: LEVELS="100 1000 5000", SECONDS_EACH=60;
#                             hlsgate's CPU seconds (/proc utime+stime) per viewer-minute, p99
#   bench/scale.sh playlist   the rewriter at 50, 5,000, 50,000 entries (criterion): time per entry
#   bench/scale.sh cache      OBJECTS="1000 10000 100000" 1 KiB objects filled into the cache:
#                             RSS per object, then wrk on random cached objects: req/s, p50, p99
#   bench/scale.sh players    the same levels driven by h2load (C; Python's threads cannot
#                             keep 5,000 players on time here): one connection per viewer,
#                             --rps 1 alternating the live playlist and a 256 KiB segment (a
#                             player at the live edge: one of each per 2 s target duration);
#                             CPU s per viewer-minute, p99 from h2load's per-request log
#   bench/scale.sh all
. "$(dirname "$0")/lib.sh"
need python3 python3
WHAT=${1:-all}
[ "$WHAT" = all ] && WHAT="playlist cache viewers players"

cpu_ticks() { awk '{ print $14 + $15 }' "/proc/$HLSGATE_PID/stat"; }

for part in $WHAT; do
case $part in
playlist)
    echo ">> rewriter at 50 / 5,000 / 50,000 entries (criterion)" >&2
    cargo bench --quiet --bench rewriter -- --warm-up-time 1 --measurement-time 3 rewriter_entries >/dev/null 2>&1
    printf '\n%-9s %9s %14s %14s\n' mode entries 'median µs' 'ns / entry'
    for mode in prefixed kept; do for n in 50 5000 50000; do
        est=target/criterion/rewriter_entries/${mode}_$n/new/estimates.json
        python3 -c "import json,sys; m=json.load(open('$est'))['median']['point_estimate']; print('%-9s %9d %14.2f %14.2f' % ('$mode', $n, m/1000, m/$n))"
    done; done ;;
cache)
    OBJECTS=${OBJECTS:-"1000 10000 100000"}
    max=$(echo $OBJECTS | tr ' ' '\n' | sort -n | tail -1)
    mkdir -p "$RUN/data/mem"
    python3 - "$RUN/data/mem" "$max" <<'PY'
import os, sys
d, n = sys.argv[1], int(sys.argv[2])
for i in range(n):
    with open(os.path.join(d, f"o{i}.ts"), "wb") as f:
        f.write(bytes([0x47]) * 1024)
PY
    BASE=$(hlsgate_url mem x); BASE=${BASE%/x}
    sleep 1; base_rss=$(rss); done_n=0
    printf '\n%9s %12s %12s %10s %9s %9s\n' objects 'RSS MiB' 'KiB/object' 'req/s' 'p50 ms' 'p99 ms' >"$RUN/cache.txt"
    for n in $OBJECTS; do
        echo ">> filling the cache to $n objects" >&2
        python3 - "$BASE" "$done_n" "$n" <<'PY'
import http.client, sys, urllib.parse
base, a, b = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
u = urllib.parse.urlsplit(base)
c = http.client.HTTPConnection(u.hostname, u.port)
for i in range(a, b):
    c.request("GET", f"{u.path}/o{i}.ts")
    r = c.getresponse(); r.read()
    assert r.status == 200, (i, r.status)
PY
        done_n=$n; sleep 1
        rss=$(rss)
        cat >"$RUN/random.lua" <<LUA
math.randomseed(42)
request = function() return wrk.format("GET", "${BASE#http://127.0.0.1:18080}/o" .. math.random(0, $n - 1) .. ".ts") end
LUA
        read -r rps p99 < <(run_wrk "$BASE/o0.ts" -s "$RUN/random.lua")
        p50=$(wrk -t1 -c"${CONNS:-32}" -d5s --latency -s "$RUN/random.lua" "$BASE/o0.ts" | awk '/^ +50%/ { v=$2; ms=v+0; if (v ~ /us$/) ms=v/1000; print ms }')
        awk -v n="$n" -v r="$rss" -v b="$base_rss" -v rps="$rps" -v p50="$p50" -v p99="$p99" \
            'BEGIN { printf "%9d %12.1f %12.2f %10.0f %9.3f %9.2f\n", n, r / 1024, (r - b) / n, rps, p50, p99 }' >>"$RUN/cache.txt"
    done
    curl -s 127.0.0.1:18089/metrics | grep -E '^hlsgate_cache_(objects|bytes) ' >&2 || true
    cat "$RUN/cache.txt" ;;
viewers)
    LEVELS=${LEVELS:-"100 1000 5000"}
    SECONDS_EACH=${SECONDS_EACH:-60}
    start_live_stream $(( 120 + SECONDS_EACH * 4 ))
    max=$(echo $LEVELS | tr ' ' '\n' | sort -n | tail -1)
    echo ">> issuing $max viewer tokens" >&2
    U=$(hlsgate_url live index.m3u8)
    for i in $(seq "$max"); do
        target/release/hlsgate token -c "$HLSGATE_CONFIG" --stream live --ip 127.0.0.1 --ttl 3600
    done | sed 's#/[^/]*$#/index.m3u8#' >"$RUN/urls.txt"
    hz=$(getconf CLK_TCK)
    printf '\n%8s %10s %14s %12s %12s %8s\n' viewers 'CPU s' 'CPU s/v-min' 'playlist p99' 'segment p99' errors >"$RUN/viewers.txt"
    for n in $LEVELS; do
        echo ">> $n players for $SECONDS_EACH s" >&2
        c0=$(cpu_ticks)
        python3 bench/viewers.py "$U" --players "$n" --seconds "$SECONDS_EACH" --urls "$RUN/urls.txt" >"$RUN/v.txt" || true
        c1=$(cpu_ticks)
        cat "$RUN/v.txt" >&2
        awk -v n="$n" -v c="$(( c1 - c0 ))" -v hz="$hz" -v s="$SECONDS_EACH" '
            /^playlist/ { pp = $5; pe = $3 } /^segment/ { sp = $5; se = $3 }
            END { cpu = c / hz; printf "%8d %10.2f %14.5f %12.2f %12.2f %8d\n", n, cpu, cpu / (n * s / 60), pp, sp, pe + se }' "$RUN/v.txt" >>"$RUN/viewers.txt"
        sleep 2
    done
    cat "$RUN/viewers.txt" ;;
players)
    need h2load nghttp2-client
    LEVELS=${LEVELS:-"100 1000 5000"}
    SECONDS_EACH=${SECONDS_EACH:-60}
    start_live_stream $(( 60 + SECONDS_EACH * 4 ))
    head -c 262144 /dev/urandom >"$RUN/data/vod/seg256k.ts"
    { hlsgate_url live index.m3u8; hlsgate_url vod seg256k.ts; } >"$RUN/uris.txt"
    while read -r u; do curl -sf -o /dev/null "$u" || { echo "!! $u" >&2; exit 1; }; done <"$RUN/uris.txt"
    hz=$(getconf CLK_TCK)
    printf '\n%8s %10s %14s %10s %10s %9s %8s\n' viewers 'CPU s' 'CPU s/v-min' requests 'p50 ms' 'p99 ms' errors >"$RUN/players.txt"
    for n in $LEVELS; do
        echo ">> $n viewers (h2load --h1 -c$n --rps 1), $SECONDS_EACH requests each" >&2
        c0=$(cpu_ticks)
        # Connections open in 200 batches over 2 s, so the viewers' 1 s request timers are
        # spread over the second instead of firing together; the run ends after each has
        # made SECONDS_EACH requests.
        rm -f "$RUN/h2load.log"
        h2load --h1 -t1 -c"$n" -m1 --rps 1 -r $(( (n + 199) / 200 )) --rate-period 10ms \
            -n $(( n * SECONDS_EACH )) -i "$RUN/uris.txt" \
            --log-file "$RUN/h2load.log" >"$RUN/h2load.txt" 2>&1 || true
        c1=$(cpu_ticks)
        grep -E '^requests:|^status codes:' "$RUN/h2load.txt" >&2
        errs=$(awk '/^requests:/ { print $10 + $12 } ' "$RUN/h2load.txt")
        awk '$2 != 200 { bad++ } { print $3 / 1000 } END { }' "$RUN/h2load.log" | sort -n >"$RUN/lat.txt"
        awk -v n="$n" -v c="$(( c1 - c0 ))" -v hz="$hz" -v s="$SECONDS_EACH" -v e="$errs" '
            { a[NR] = $1 } END { cpu = c / hz;
              printf "%8d %10.2f %14.5f %10d %10.2f %9.2f %8d\n", n, cpu, cpu / (n * s / 60), NR,
                     a[int(NR * 0.5) + 1], a[int(NR * 0.99) + 1], e }' "$RUN/lat.txt" >>"$RUN/players.txt"
        sleep 2
    done
    cat "$RUN/players.txt" ;;
*) echo "unknown part: $part" >&2; exit 2 ;;
esac
done
