#!/usr/bin/env bash
# Failing side by side: hlsgate and nginx configured as a careful operator would
# (proxy_cache_lock on; proxy_cache_use_stale error timeout updating http_500 http_502
# http_503 http_504; proxy_cache_background_update on), both in front of one loopback
# origin that fails on demand (bench/fault-origin.py), under wrk. For each fault and side:
# requests answered, errors (non-2xx answers + socket errors), requests that reached the
# origin, p99. Both check a token per request (nginx: secure_link + sub_filter, as in
# bench/nginx/secure-link.conf.in).
#
#   bench/faults.sh            (DURATION=10s CONNS=32 by default)
#
# Faults: an expired live playlist while the origin answers 500 / hangs (30 s; both sides
# give up after 5 s) / refuses connections (stopped), then restarts; an uncached segment
# while the origin answers 500; 100 different 1 MiB segments at once from an origin that
# drips them (complete bodies counted).
set -euo pipefail
cd "$(dirname "$0")/.."
mkdir -p data
FAULTS_CONFIG=data/bench-faults.yaml
cat >"$FAULTS_CONFIG" <<'EOF'
# bench/faults.sh writes this: hlsgate in front of the failing origin on 18085.
edge:
  listen: "127.0.0.1:18080"
  threads: 2
  access_log: "off"
  origin_connect_timeout: "1s"
  origin_read_timeout: "5s"
tokens:
  secret_file: "data/bench-secret.key"
  ttl: "1h"
origins:
  allow: ["127.0.0.1"]
streams:
  f: { url: "http://127.0.0.1:18085/live/index.m3u8" }
admin:
  listen: "127.0.0.1:18083"
  public_edge_url: "http://127.0.0.1:18080"
store:
  url: "sqlite://data/bench-faults.db"
metrics:
  listen: "127.0.0.1:18089"
EOF
HLSGATE_CONFIG=$FAULTS_CONFIG
. bench/lib.sh
need python3 python3

# --- the failing origin and its data ------------------------------------------------
F=$RUN/faults
mkdir -p "$F/www/live/drip"
{
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1200\n'
    for i in $(seq 1200 1205); do printf '#EXTINF:2.000000,\nlive%d.ts\n' "$i"; done
} >"$F/www/live/index.m3u8"
head -c 18800 /dev/urandom >"$F/www/live/live1200.ts"
for i in $(seq 0 99); do head -c 1048576 /dev/urandom >"$F/www/live/drip/$i.ts"; done
start_origin() {
    python3 bench/fault-origin.py "$F/www" 18085 >"$F/origin.log" 2>&1 &
    ORIGIN_PID=$!
    PIDS+=("$ORIGIN_PID")
    for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18085/live/index.m3u8 && break; sleep 0.1; done
}
stop_origin() { kill "$ORIGIN_PID"; wait "$ORIGIN_PID" 2>/dev/null || true; }
start_origin
fault() { echo "$*" >"$F/fault"; }
origin_requests() { wc -l <"$F/origin-requests.log"; }

# --- nginx as a careful operator configures it --------------------------------------
# The same job as hlsgate's: secure_link checks the viewer's md5 token (as in
# bench/nginx/hls-common.inc), sub_filter signs the playlist's segment URIs, and the cache
# fails well: one fetch per object (lock), stale on errors and while updating, refreshed
# in the background.
mkdir -p "$RUN/fcache"
cat >"$RUN/faults-common.inc" <<'EOF2'
secure_link $arg_md5,$arg_expires;
secure_link_md5 "$secure_link_expires $remote_addr bench-secret";
if ($secure_link = "")  { return 403; }
if ($secure_link = "0") { return 410; }
proxy_pass http://origin;
proxy_http_version 1.1;
proxy_set_header Connection "";
proxy_set_header Accept-Encoding "";
proxy_connect_timeout 1s;
proxy_read_timeout 5s;
proxy_cache faults;
proxy_cache_key $uri;
proxy_cache_lock on;
proxy_cache_lock_timeout 6s;
proxy_cache_use_stale error timeout updating http_500 http_502 http_503 http_504;
proxy_cache_background_update on;
sub_filter_types application/vnd.apple.mpegurl;
sub_filter_once off;
sub_filter ".ts" ".ts?md5=$arg_md5&expires=$arg_expires";
EOF2
cat >"$RUN/faults-nginx.conf" <<EOF
worker_processes 2;
pid $RUN/faults-nginx.pid;
error_log $RUN/faults-nginx-error.log warn;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path $RUN/tmp; proxy_temp_path $RUN/tmp; fastcgi_temp_path $RUN/tmp;
    uwsgi_temp_path $RUN/tmp; scgi_temp_path $RUN/tmp;
    keepalive_requests 1000000;
    proxy_cache_path $RUN/fcache levels=1:2 keys_zone=faults:16m max_size=1g inactive=10m use_temp_path=off;
    upstream origin { server 127.0.0.1:18085; keepalive 64; }
    server {
        listen 127.0.0.1:18086;
        # Freshness as hlsgate's: segments 10 min, this live playlist 1 s.
        location ~ \.ts\$   { include $RUN/faults-common.inc; proxy_cache_valid 200 10m; }
        location ~ \.m3u8\$ { include $RUN/faults-common.inc; proxy_cache_valid 200 1s; }
    }
}
EOF
nginx -c "$RUN/faults-nginx.conf"
trap 'nginx -c "$RUN/faults-nginx.conf" -s stop 2>/dev/null || true; cleanup' EXIT

# wrk on URL for DURATION: "requests errors p99_ms" (errors: non-2xx + socket errors).
measure() { wrk -t1 -c"${CONNS:-32}" -d"${DURATION:-10s}" --timeout 10s --latency "$1" | wrk_figures; }

H_PL=$(hlsgate_url f index.m3u8)
Q="md5=$MD5&expires=$EXPIRES"
N_PL="http://127.0.0.1:18086/live/index.m3u8?$Q"
echo
echo "| fault | side | requests | errors | origin requests | p99 ms |"
echo "|---|---|---|---|---|---|"
row() { # fault side url [setup]: warm the copy, let it expire, fault, wrk
    local name=$1 side=$2 url=$3 how=$4 before out
    fault ok
    curl -s -o /dev/null "$url"
    sleep 1.3
    case $how in
        stop) stop_origin ;;
        *) fault "$how" ;;
    esac
    before=$(origin_requests)
    out=$(measure "$url")
    set -- $out
    printf '| %s | %s | %s | %s | %s | %s |\n' "$name" "$side" "$1" "$2" $(( $(origin_requests) - before )) "$3"
    fault ok
    [ "$how" = stop ] && start_origin
    return 0
}
for side in hlsgate nginx; do
    url=$H_PL; [ $side = nginx ] && url=$N_PL
    row "live playlist, healthy origin (for reference)" $side "$url" ok
done
for side in hlsgate nginx; do
    url=$H_PL; [ $side = nginx ] && url=$N_PL
    row "live playlist, origin 500" $side "$url" "500 /live/index.m3u8"
done
for side in hlsgate nginx; do
    url=$H_PL; [ $side = nginx ] && url=$N_PL
    row "live playlist, origin hangs" $side "$url" "hang /live/index.m3u8"
done
for side in hlsgate nginx; do
    url=$H_PL; [ $side = nginx ] && url=$N_PL
    row "live playlist, origin stopped" $side "$url" stop
    # ... and then restarted: the first 10 s after it is back.
    before=$(origin_requests)
    set -- $(measure "$url")
    printf '| %s | %s | %s | %s | %s | %s |\n' "live playlist, origin restarted" $side "$1" "$2" $(( $(origin_requests) - before )) "$3"
done
for side in hlsgate nginx; do
    url=$(hlsgate_url f miss.ts); [ $side = nginx ] && url="http://127.0.0.1:18086/live/miss.ts?$Q"
    fault "500 /live/miss.ts"
    before=$(origin_requests)
    set -- $(measure "$url")
    printf '| %s | %s | %s | %s | %s | %s |\n' "uncached segment, origin 500 (every answer is an error)" $side "$1" "$2" $(( $(origin_requests) - before )) "$3"
    fault ok
done
# 100 viewers of 100 different 1 MiB segments that arrive in eighths over 2 s.
fault "drip /live/drip/"
for side in hlsgate nginx; do
    base=$(hlsgate_url f drip/x); base=${base%/x}; q=; [ $side = nginx ] && { base=http://127.0.0.1:18086/live/drip; q="?$Q"; }
    before=$(origin_requests)
    seq 0 99 | xargs -P100 -I{} curl -s -o /dev/null -w '%{size_download}\n' --max-time 30 "$base/{}.ts$q" >"$RUN/drip-$side.txt" || true
    complete=$(grep -c '^1048576$' "$RUN/drip-$side.txt" || true)
    # requests for the drip objects (other lines: anything else the origin heard meanwhile)
    drips=$(tail -n +"$(( before + 1 ))" "$F/origin-requests.log" | grep -c '/live/drip/' || true)
    printf '| %s | %s | %s | %s | %s | %s |\n' "100 different 1 MiB segments, origin drips them" $side 100 $(( 100 - complete )) "$drips" "-"
    tail -n +"$(( before + 1 ))" "$F/origin-requests.log" | sort | uniq -c | sort -rn | head -3 >&2
done
fault ok
