#!/usr/bin/env bash
# Viewer simulation on a real live stream: ffmpeg makes a live HLS stream (2 s segments)
# that the origin nginx serves; PLAYERS simulated players watch it through hlsgate, then
# through nginx secure_link + proxy_cache + sub_filter. Prints errors and p50/p99 per
# side and how many requests reached the origin.
#
#   PLAYERS=200 DURATION=20 bench/viewers.sh
. "$(dirname "$0")/lib.sh"
need ffmpeg ffmpeg
need python3 python3
PLAYERS=${PLAYERS:-200}
DURATION_S=${DURATION:-20}

start_live_stream 600

for side in hlsgate nginx; do
    if [ $side = hlsgate ]; then URL=$(hlsgate_url live index.m3u8); else URL=$(nginx_url live/index.m3u8); fi
    : >"$RUN/origin-access.log"; nginx -c "$RUN/origin.conf" -s reopen 2>/dev/null
    echo "== $side" 
    python3 bench/viewers.py "$URL" --players "$PLAYERS" --seconds "$DURATION_S" || echo "(errors above)"
    sleep 0.5
    echo "origin requests: $(grep -c 'm3u8' "$RUN/origin-access.log" || true) playlist, $(grep -c '\.ts' "$RUN/origin-access.log" || true) segment"
done
