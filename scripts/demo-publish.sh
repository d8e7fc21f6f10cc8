#!/usr/bin/env bash
# The publisher walkthrough in one command, against a running `hlsgate serve` on the shipped
# config (scripts/run.sh --background): starts nginx-rtmp on loopback (RTMP 127.0.0.1:1935,
# its HLS folder served on 127.0.0.1:8000, the origin port conf/hlsgate.yaml allows), signs
# in as a demo user (registered when missing), adds a stream pointing at that folder, asks
# for its stream key, publishes an ffmpeg test pattern with it, prints the playback URL and
# plays a few seconds of it through the edge; then rotates the key and shows the publisher
# dropped at its next on_update. nginx and ffmpeg are stopped on exit; hlsgate keeps running.
#   scripts/demo-publish.sh                 # installs nginx + libnginx-mod-rtmp, ffmpeg if missing
#   DEMO_KEEP=1 scripts/demo-publish.sh     # leave it publishing (Ctrl-C stops it)
# Files (nginx's config, logs, the HLS segments): data/demo-publish/.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_rtmp
need ffmpeg ffmpeg
need curl curl

ADMIN=http://127.0.0.1:8081
if ! curl -sf -o /dev/null "$ADMIN/healthz"; then
    echo "!! no hlsgate admin on $ADMIN: start it first with scripts/run.sh --background" >&2
    exit 1
fi
if (exec 3<>/dev/tcp/127.0.0.1/8000) 2>/dev/null; then
    echo "!! 127.0.0.1:8000 is taken (the README's Python origin? kill \$ORIGIN_PID): nginx serves the HLS folder there" >&2
    exit 1
fi

DIR=$PWD/data/demo-publish
rm -rf "$DIR"
mkdir -p "$DIR/hls" "$DIR/tmp"
PUB_PID=
cleanup() {
    [ -n "$PUB_PID" ] && kill "$PUB_PID" 2>/dev/null || true
    [ -s "$DIR/nginx.pid" ] && kill "$(cat "$DIR/nginx.pid")" 2>/dev/null || true
}
trap cleanup EXIT
hook() { echo "$ADMIN/hooks/rtmp/$1"; }
cat >"$DIR/nginx.conf" <<EOF
load_module /usr/lib/nginx/modules/ngx_rtmp_module.so;
worker_processes 1;
pid $DIR/nginx.pid;
error_log $DIR/error.log info;
$([ "$(id -u)" = 0 ] && echo "user root;")
events { worker_connections 256; }
rtmp {
    server {
        listen 127.0.0.1:1935;
        notify_method post;
        application live {
            live on;
            on_publish $(hook on_publish);
            on_publish_done $(hook on_publish_done);
            on_update $(hook on_update);
            notify_update_timeout 2s;
            on_play $(hook on_play);
        }
        application hls {
            live on;
            allow publish 127.0.0.1;
            deny publish all;
            deny play all;
            hls on;
            hls_path $DIR/hls;
            hls_nested on;
            hls_fragment 1s;
            hls_playlist_length 6s;
        }
    }
}
http {
    access_log off;
    client_body_temp_path $DIR/tmp;
    proxy_temp_path $DIR/tmp;
    fastcgi_temp_path $DIR/tmp;
    uwsgi_temp_path $DIR/tmp;
    scgi_temp_path $DIR/tmp;
    types { application/vnd.apple.mpegurl m3u8; video/mp2t ts; }
    server {
        listen 127.0.0.1:8000;
        location /hls/ { root $DIR; add_header Cache-Control no-cache; }
    }
}
EOF
nginx -c "$DIR/nginx.conf" -p "$DIR" -e "$DIR/error.log"
for _ in $(seq 50); do (exec 3<>/dev/tcp/127.0.0.1/1935) 2>/dev/null && break; sleep 0.1; done

# json FIELD: that field of the JSON on stdin
json() { python3 -c 'import json,sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"; }
api() { # method path [json body]
    curl -s -X "$1" -H "Authorization: Bearer $JWT" ${3:+--json "$3"} "$ADMIN/api$2"
}
CREDS='{"username":"demo-publisher","password":"demo-publisher-password"}'
curl -s -o /dev/null "$ADMIN/api/register" --json "$CREDS"
JWT=$(curl -s "$ADMIN/api/login" --json "$CREDS" | json token)
ID=$(api POST /streams '{"url":"http://127.0.0.1:8000/hls/new/index.m3u8"}' | json id)
api PUT "/streams/$ID" "{\"url\":\"http://127.0.0.1:8000/hls/$ID/index.m3u8\"}" >/dev/null
KEY_JSON=$(api POST "/streams/$ID/key")
PUBLISH=$(echo "$KEY_JSON" | json publishUrl)
echo "stream $ID: publishing a test pattern to ${PUBLISH%/*}/sk_... (its stream key)"
ffmpeg -v error -re -f lavfi -i testsrc2=size=640x360:rate=25 -f lavfi -i sine=frequency=440 \
    -c:v libx264 -preset veryfast -tune zerolatency -g 25 -pix_fmt yuv420p -c:a aac \
    -f flv "$PUBLISH" 2>"$DIR/publisher.log" &
PUB_PID=$!

UA=demo-player
URL=$(curl -s -A "$UA" -H "Authorization: Bearer $JWT" "$ADMIN/api/stream?streamID=$ID" | json url)
for _ in $(seq 300); do
    curl -s -A "$UA" "$URL" | grep -q '#EXTINF' && break
    kill -0 "$PUB_PID" 2>/dev/null || { echo "!! the publisher stopped:" >&2; cat "$DIR/publisher.log" >&2; exit 1; }
    sleep 0.1
done
echo "playback URL: $URL"
ffmpeg -v error -user_agent "$UA" -i "$URL" -t 3 -c copy -f null -
echo "played 3 s of it through the edge"
if [ -n "${DEMO_KEEP:-}" ]; then
    echo "publishing until Ctrl-C"
    wait "$PUB_PID"
    exit 0
fi

api POST "/streams/$ID/key" >/dev/null
for _ in $(seq 150); do
    kill -0 "$PUB_PID" 2>/dev/null || break
    sleep 0.1
done
if kill -0 "$PUB_PID" 2>/dev/null; then
    echo "!! the publisher with the old key was still publishing 15 s after the rotation" >&2
    exit 1
fi
PUB_PID=
echo "key rotated: the publisher was dropped"
