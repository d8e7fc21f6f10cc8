# Sourced by the bench scripts: builds hlsgate, makes the HLS data, starts the origin
# nginx, nginx secure_link + proxy_cache + sub_filter, and hlsgate (bench/hlsgate.yaml or
# $HLSGATE_CONFIG), all on loopback, and stops them on exit.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
. scripts/need.sh
need_build
need nginx nginx-extras
need wrk wrk
need curl curl
need openssl openssl

BENCH=$PWD/bench
RUN=$(mktemp -d /tmp/hlsgate-bench.XXXXXX)
chmod 755 "$RUN" # nginx workers run as nobody when started by root
mkdir -p "$RUN/tmp" "$RUN/cache" "$RUN/data/vod" "$RUN/data/live"
HLSGATE_CONFIG=${HLSGATE_CONFIG:-bench/hlsgate.yaml}
PIDS=()
cleanup() {
    for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
    for c in origin secure-link; do
        [ -f "$RUN/$c.pid" ] && nginx -c "$RUN/$c.conf" -s stop 2>/dev/null || true
    done
    rm -rf "$RUN"
}
trap cleanup EXIT

# --- data: a 5,000-segment VOD playlist, a live playlist, one 1 MiB segment -----------
{
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-PLAYLIST-TYPE:VOD\n'
    for i in $(seq 0 4999); do printf '#EXTINF:2.000000,\nindex%d.ts\n' "$i"; done
    printf '#EXT-X-ENDLIST\n'
} > "$RUN/data/vod/index.m3u8"
{
    printf '#EXTM3U\n#EXT-X-VERSION:3\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:1200\n'
    for i in $(seq 1200 1205); do printf '#EXTINF:2.000000,\nlive%d.ts\n' "$i"; done
} > "$RUN/data/live/index.m3u8"
head -c 1048576 /dev/urandom > "$RUN/data/vod/seg.ts"

# --- a TLS certificate both servers use (bench/tls.sh) -------------------------------
mkdir -p data
if [ ! -s data/bench-tls.crt ]; then
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 3650 \
        -keyout data/bench-tls.key -out data/bench-tls.crt -subj /CN=localhost \
        -addext "subjectAltName=DNS:localhost,IP:127.0.0.1" 2>/dev/null
fi

# --- servers ------------------------------------------------------------------------
echo ">> building hlsgate (release)" >&2
[ -n "${SKIP_BUILD:-}" ] || cargo build --release --quiet
for c in origin secure-link; do
    sed -e "s#@RUN@#$RUN#g" -e "s#@DATA@#$RUN/data#g" -e "s#@BENCH@#$BENCH#g" \
        -e "s#@TLS@#$PWD/data/bench-tls#g" \
        "bench/nginx/$c.conf.in" > "$RUN/$c.conf"
    nginx -c "$RUN/$c.conf" -e "$RUN/$c-error.log"
done
RUST_LOG=warn target/release/hlsgate "${HLSGATE_ROLE:-edge}" -c "$HLSGATE_CONFIG" >"$RUN/hlsgate.log" 2>&1 &
HLSGATE_PID=$!
PIDS+=("$HLSGATE_PID")
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18080/healthz && break; sleep 0.1; done

# --- signed URLs --------------------------------------------------------------------
EXPIRES=$(( $(date +%s) + 3600 ))
MD5=$(printf '%s' "$EXPIRES 127.0.0.1 bench-secret" | openssl md5 -binary | openssl base64 | tr +/ -_ | tr -d =)
nginx_url() { echo "http://127.0.0.1:18082/$1?md5=$MD5&expires=$EXPIRES"; }
hlsgate_url() { # stream object
    local u
    # TOKEN_BIN: the build that signs (an older build cannot read a newer token format)
    u=$("${TOKEN_BIN:-target/release/hlsgate}" token -c "$HLSGATE_CONFIG" --stream "$1" --ip 127.0.0.1 --ttl 3600)
    echo "${u%/*}/$2"
}

# A real live stream: ffmpeg writes 2 s segments, 6 in the playlist, into the origin's
# live/ folder for at most $1 seconds; returns once the second segment exists.
start_live_stream() {
    need ffmpeg ffmpeg
    echo ">> starting a live stream with ffmpeg (2 s segments, 6 in the playlist)" >&2
    timeout "$1" ffmpeg -nostdin -loglevel error -re -f lavfi -i "testsrc=size=640x360:rate=25" \
        -f lavfi -i "sine=frequency=440:sample_rate=48000" -c:v libx264 -preset ultrafast \
        -g 50 -keyint_min 50 -sc_threshold 0 -c:a aac -f hls -hls_time 2 -hls_list_size 6 \
        -hls_flags delete_segments -hls_segment_filename "$RUN/data/live/tv%d.ts" \
        "$RUN/data/live/index.m3u8" &
    PIDS+=($!)
    for _ in $(seq 100); do [ -s "$RUN/data/live/tv1.ts" ] && break; sleep 0.2; done
}

# --- measuring ----------------------------------------------------------------------
rss() { awk '/^VmRSS/ { print $2 }' "/proc/$HLSGATE_PID/status"; } # hlsgate's RSS, KiB
run_wrk() { # url [wrk args...] -> "req/s p99_ms"
    local url=$1; shift
    wrk -t1 -c"${CONNS:-32}" -d"${DURATION:-10s}" --latency "$@" "$url" | awk '
        /Requests\/sec/ { rps = $2 }
        /^ +99%/ { v = $2; ms = v + 0;
                   if (v ~ /us$/) ms = v / 1000; else if (v ~ /ms$/) ms = v + 0;
                   else if (v ~ /s$/) ms = v * 1000;
                   p99 = ms }
        /Non-2xx/ { bad = $4 }
        END { if (bad) { print "ERR non-2xx " bad; exit 1 } printf "%s %.2f\n", rps, p99 }'
}
# wrk --latency output on stdin -> "requests non-2xx+socket-errors p99_ms".
wrk_figures() {
    awk '
        / requests in / { req = $1 }
        /Socket errors/ { gsub(/,/, ""); sock = $4 + $6 + $8 + $10 }
        /Non-2xx/ { bad = $5 }
        /^ +99%/ { v = $2; ms = v + 0;
                   if (v ~ /us$/) ms = v / 1000; else if (v ~ /ms$/) ms = v + 0;
                   else if (v ~ /s$/) ms = v * 1000;
                   p99 = ms }
        END { printf "%d %d %.1f\n", req, bad + sock, p99 }'
}
median() { sort -n | awk '{a[NR]=$1} END {print (NR%2 ? a[(NR+1)/2] : (a[NR/2]+a[NR/2+1])/2)}'; }

# A B [C ...] A B ...: ROUNDS rounds of run_wrk on each URL in turn, each round printed;
# prints the medians "A-req/s A-p99 B-req/s B-p99 ...".
interleave() { # label-a url-a label-b url-b [label url ...]
    local args=("$@") n=$(( $# / 2 )) r i out line
    for i in $(seq 0 $(( n - 1 ))); do : >"$RUN/side$i.txt"; done
    for r in $(seq "${ROUNDS:-3}"); do
        line="   round $r:"
        for i in $(seq 0 $(( n - 1 ))); do
            out=$(run_wrk "${args[2 * i + 1]}"); echo "$out" >>"$RUN/side$i.txt"
            line+=" ${args[2 * i]} $out |"
        done
        echo "${line% |}   (req/s p99-ms)" >&2
    done
    out=
    for i in $(seq 0 $(( n - 1 ))); do
        out+="$(cut -d' ' -f1 "$RUN/side$i.txt" | median) $(cut -d' ' -f2 "$RUN/side$i.txt" | median) "
    done
    echo "${out% }"
}

# The bare Pingora probe (examples/bare_pingora.rs: every request answered with FILE from
# request_filter, no checks) on 127.0.0.1:18090, and with "tls" also on 127.0.0.1:18091
# with the bench certificate; the bench edge's threads and runtime (2, no work stealing).
# A probe started before is stopped first.
start_bare() { # file [tls]
    if [ -z "${BARE_BUILT:-}" ]; then
        echo ">> building the bare Pingora probe (examples/bare_pingora.rs)" >&2
        cargo build --release --quiet --example bare_pingora
        BARE_BUILT=1
    fi
    [ -n "${BARE_PID:-}" ] && { kill "$BARE_PID"; wait "$BARE_PID" 2>/dev/null || true; }
    local tls=()
    [ "${2:-}" = tls ] && tls=(127.0.0.1:18091 data/bench-tls.crt data/bench-tls.key)
    target/release/examples/bare_pingora 127.0.0.1:18090 "$1" 2 false "${tls[@]}" \
        >"$RUN/bare.log" 2>&1 &
    BARE_PID=$!; PIDS+=("$BARE_PID")
    for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/ && break; sleep 0.1; done
}

# The other build of a two-build comparison ($OLD_BIN): the same config on other ports
# (18090, ...), the same key file (tokens verify on both), without the keys older builds do
# not know (and whose listeners would clash), and OLD_SED's edits (a sed script) if set.
# Sets OLD_PID.
start_old_build() {
    sed -E -e '/^  (tls|access_log|access_log_format|upgrade_socket):/d' -e 's/127.0.0.1:18080/127.0.0.1:18090/' -e 's/127.0.0.1:18083/127.0.0.1:18093/' \
        -e 's/127.0.0.1:18089/127.0.0.1:18099/' -e 's#sqlite://data/bench.db#sqlite://data/bench-old.db#' \
        ${OLD_SED:+-e "$OLD_SED"} "$HLSGATE_CONFIG" >"$RUN/old.yaml"
    RUST_LOG=warn "$OLD_BIN" edge -c "$RUN/old.yaml" >"$RUN/old.log" 2>&1 &
    OLD_PID=$!
    PIDS+=("$OLD_PID")
    for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/healthz && break; sleep 0.1; done
}
