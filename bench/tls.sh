#!/usr/bin/env bash
# HTTPS: hlsgate (rustls) against nginx (OpenSSL, secure_link + proxy_cache + sub_filter)
# with the same P-256 certificate, h2 and HTTP/1.1, driven by h2load; each side ROUNDS
# times interleaved; medians and the ratio. A third side, the bare Pingora probe
# (examples/bare_pingora.rs, the same rustls set-up, the same bytes from request_filter with
# no checks), is the ceiling: what Pingora itself does next to nginx on this machine.
#
#   bench/tls.sh [live|segment|all]            (default: all)
#   ROUNDS=3 DURATION=8 CONNS=32 STREAMS=10 bench/tls.sh live
#
#   live     the cached 6-segment live playlist, rewritten per viewer
#   segment  the cached 1 MiB segment, token checked on every request
# bench/hlsgate.yaml with a TLS listener on the certificate bench/lib.sh makes (and nginx
# serves too).
mkdir -p "$(dirname "$0")/../data"
sed 's|^edge:$|edge:\n  tls: { listen: "127.0.0.1:18444", cert: "data/bench-tls.crt", key: "data/bench-tls.key" }|' \
    "$(dirname "$0")/hlsgate.yaml" > "$(dirname "$0")/../data/bench-tls.yaml"
export HLSGATE_CONFIG=data/bench-tls.yaml
. "$(dirname "$0")/lib.sh"
need h2load nghttp2-client

SCENARIOS=${1:-all}
[ "$SCENARIOS" = all ] && SCENARIOS="live segment"
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-8}
CONNS=${CONNS:-32}
STREAMS=${STREAMS:-10}

tls_url() { # http URL on port P -> https on port Q
    echo "$1" | sed -e "s#^http://127.0.0.1:$2/#https://127.0.0.1:$3/#"
}

ticks() { local s=0 p; for p in "$@"; do [ -r "/proc/$p/stat" ] && s=$((s + $(awk '{print $14 + $15}' "/proc/$p/stat"))); done; echo "$s"; }
# h2load: "req/s protocol server-µs-per-request" (exit 1 if any request failed or was not
# 2xx); the CPU (utime + stime) of the server processes `pids` over the run, per request.
run_h2load() { # proto url pids...
    local args=(-t1 -c"$CONNS" -D"$DURATION") proto=$1 url=$2 t0 t1
    shift 2
    if [ "$proto" = h2 ]; then args+=(-m"$STREAMS"); else args+=(--h1 -m1); fi
    t0=$(ticks "$@")
    h2load "${args[@]}" "$url" >"$RUN/h2load.txt" 2>&1 || true
    t1=$(ticks "$@")
    awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" '
        /^finished in/ { gsub(",", "", $4); rps = $4 }
        /^requests:/ { done = $8; failed = $10; errored = $12 }
        /^status codes:/ { ok = $3; other = $5 + $7 + $9 }
        /Application protocol:/ { proto = $3 }
        END { if (failed + errored + other > 0 || ok == 0) { print "ERR failed=" failed " errored=" errored " non2xx=" other; exit 1 }
              printf "%s %s %.2f\n", rps, proto, t / hz * 1e6 / done }' "$RUN/h2load.txt"
}
# nginx's workers (its cache loader exits early)
NGINX_PIDS=$(pgrep -f "nginx: worker" -P "$(cat "$RUN/secure-link.pid")" | tr '\n' ' ')

RESULTS=$RUN/tls.txt
: >"$RESULTS"
for sc in $SCENARIOS; do
    case $sc in
    live) NU=$(nginx_url live/index.m3u8); HU=$(hlsgate_url live index.m3u8) ;;
    segment) NU=$(nginx_url vod/seg.ts); HU=$(hlsgate_url vod seg.ts) ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    NS=$(tls_url "$NU" 18082 18443); HS=$(tls_url "$HU" 18080 18444)
    # The probe answers every request with this scenario's object (the live playlist as
    # the origin has it, or the segment), on the runtime bench/hlsgate.yaml's edge has.
    case $sc in live) obj=$RUN/data/live/index.m3u8 ;; *) obj=$RUN/data/vod/seg.ts ;; esac
    start_bare "$obj" tls
    BS=https://127.0.0.1:18091/$sc
    for u in "$NS" "$HS" "$BS"; do
        [ "$(curl -sk --http2 -o /dev/null -w '%{http_code} %{http_version}' "$u")" = "200 2" ] \
            || { echo "!! $u: not 200 over h2" >&2; exit 1; }
    done
    for proto in h2 h1; do
        : >"$RUN/n.txt"; : >"$RUN/h.txt"; : >"$RUN/b.txt"
        echo ">> $sc over TLS $proto: h2load -t1 -c$CONNS -D$DURATION $([ $proto = h2 ] && echo "-m$STREAMS"), $ROUNDS rounds interleaved" >&2
        for r in $(seq "$ROUNDS"); do
            # shellcheck disable=SC2086
            n=$(run_h2load $proto "$NS" $NGINX_PIDS); echo "$n" >>"$RUN/n.txt"
            h=$(run_h2load $proto "$HS" "$HLSGATE_PID"); echo "$h" >>"$RUN/h.txt"
            b=$(run_h2load $proto "$BS" "$BARE_PID"); echo "$b" >>"$RUN/b.txt"
            echo "   round $r: nginx $n | hlsgate $h | bare $b   (req/s protocol server-µs/req)" >&2
        done
        med() { cut -d' ' -f"$2" "$RUN/$1.txt" | median; }
        echo "$sc $proto $(med n 1) $(med h 1) $(med b 1) $(med n 3) $(med h 3) $(med b 3)" >>"$RESULTS"
    done
done
# (a failed probe of the cipher must not lose the table: `|| true`)
CIPHER=$(echo | openssl s_client -connect 127.0.0.1:18444 -alpn h2 2>/dev/null | awk '/Cipher is/ {print $NF; exit}' || true)
NCIPHER=$(echo | openssl s_client -connect 127.0.0.1:18443 -alpn h2 2>/dev/null | awk '/Cipher is/ {print $NF; exit}' || true)
printf '\n%-8s %-6s %12s %12s %12s %8s %8s %8s %22s\n' scenario proto 'nginx req/s' 'hlsgate' 'bare' 'h/nginx' 'h/bare' 'b/nginx' 'µs/req nginx/h/bare'
awk '{ printf "%-8s %-6s %12.1f %12.1f %12.1f %7.2fx %8.2f %7.2fx %8.1f/%5.1f/%5.1f\n", $1, $2, $3, $4, $5, $4 / $3, $4 / $5, $5 / $3, $6, $7, $8 }' "$RESULTS"
echo "(medians of $ROUNDS interleaved rounds; h2load -t1 -c$CONNS -D$DURATION, h2: -m$STREAMS; TLS 1.3, cipher hlsgate $CIPHER / nginx $NCIPHER, P-256 certificate; $(nproc) CPUs shared by h2load, both servers and the origin)"
