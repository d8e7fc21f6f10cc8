#!/usr/bin/env bash
# Memory bound of the segment cache: hlsgate with cache.max_bytes = MAX (default 64MiB)
# is sent far more distinct 1 MiB segments than fit (wrk, each request a new name), while
# its RSS is sampled every second. Prints the RSS before, the peak, and what the cache
# says it holds.
#
#   MAX=64MiB DURATION=60s bench/memory.sh
MAX=${MAX:-64MiB}
DURATION=${DURATION:-60s}
CFG=$(mktemp /tmp/hlsgate-mem.XXXXXX.yaml)
sed "s/max_bytes: \"256MiB\"/max_bytes: \"$MAX\"/" "$(dirname "$0")/hlsgate.yaml" > "$CFG"
HLSGATE_CONFIG=$CFG
. "$(dirname "$0")/lib.sh"
grep -q "max_bytes: \"$MAX\"" "$CFG" || { echo "!! could not set max_bytes" >&2; exit 1; }

BASE=$(hlsgate_url mem x); BASE=${BASE%/x}
cat > "$RUN/distinct.lua" <<LUA
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "${BASE#http://127.0.0.1:18080}/seg" .. n .. ".ts")
end
LUA
curl -s -o /dev/null "$BASE/seg0.ts"
START=$(rss)
echo ">> cache.max_bytes=$MAX; RSS after start: $((START / 1024)) MiB; wrk -t1 -c16 -d$DURATION, every request a new segment" >&2
PEAK=$START
wrk -t1 -c16 -d"$DURATION" -s "$RUN/distinct.lua" http://127.0.0.1:18080 > "$RUN/wrk.txt" &
WRK=$!
while kill -0 $WRK 2>/dev/null; do
    r=$(rss); [ "$r" -gt "$PEAK" ] && PEAK=$r
    sleep 1
done
REQS=$(awk '/requests in/ {print $1}' "$RUN/wrk.txt")
HELD=$(curl -s 127.0.0.1:18089/metrics | awk '/^hlsgate_cache_held_bytes / {print $2}')
OBJS=$(curl -s 127.0.0.1:18089/metrics | awk '/^hlsgate_cache_objects / {print $2}')
END=$(rss)
rm -f "$CFG"
echo "distinct segments requested: $REQS (x 1 MiB)"
echo "cache holds: $((HELD / 1048576)) MiB in $OBJS objects (max_bytes $MAX)"
echo "RSS: start $((START / 1024)) MiB, peak $((PEAK / 1024)) MiB, end $((END / 1024)) MiB"
