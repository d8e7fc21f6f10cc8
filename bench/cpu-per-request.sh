#!/usr/bin/env bash
# CPU time per request (utime + stime of the server process over a wrk run, divided by the
# requests it answered) of two builds, interleaved: steadier than req/s on a shared VM,
# where wrk, both servers and the origin compete for 2 cores and other tenants come and go.
#
#   OLD_BIN=/tmp/old/target/release/hlsgate TOKEN_BIN=$OLD_BIN ROUNDS=5 bench/cpu-per-request.sh [live|jwt|segment ...]
#
# Both builds answer the same URLs (TOKEN_BIN: the build whose tokens both can read).
set -euo pipefail
SCENARIOS=${1:-live jwt segment}
. "$(dirname "$0")/jwt-keys.sh"
. "$(dirname "$0")/lib.sh"
: "${OLD_BIN:?set OLD_BIN to the other hlsgate build}"
ROUNDS=${ROUNDS:-5}
start_old_build
JWT=$(ivs_jwt)
ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
hz=$(getconf CLK_TCK)
# µs of CPU per request: one wrk run against `url`, `pid` the server's process.
per_request() { # pid url
    local t0 t1 n
    t0=$(ticks "$1")
    n=$(wrk -t1 -c32 -d"${DURATION:-6s}" "$2" | awk '/requests in/ {print $1}')
    t1=$(ticks "$1")
    awk -v t=$((t1 - t0)) -v n="$n" -v hz="$hz" 'BEGIN { printf "%.2f", t / hz * 1e6 / n }'
}
printf '%-8s %12s %12s %7s   rounds (before/after µs)\n' scenario 'before µs' 'after µs' ratio
for sc in $SCENARIOS; do
    case $sc in
    live) NEW=$(hlsgate_url live index.m3u8) ;;
    segment) NEW=$(hlsgate_url vod seg.ts) ;;
    jwt) NEW="http://127.0.0.1:18080/hls/live/index.m3u8?token=$JWT" ;;
    *) echo "unknown scenario: $sc" >&2; exit 2 ;;
    esac
    OLD=${NEW/:18080/:18090}
    for u in "$NEW" "$OLD"; do
        [ "$(curl -s -o /dev/null -w '%{http_code}' -A wrk "$u")" = 200 ] || { echo "!! $u" >&2; exit 1; }
    done
    b=(); a=(); rounds=""
    for _ in $(seq "$ROUNDS"); do
        x=$(per_request "$OLD_PID" "$OLD"); y=$(per_request "$HLSGATE_PID" "$NEW")
        b+=("$x"); a+=("$y"); rounds="$rounds $x/$y"
    done
    mb=$(printf '%s\n' "${b[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
    ma=$(printf '%s\n' "${a[@]}" | sort -n | awk '{v[NR]=$1} END {print v[int((NR+1)/2)]}')
    printf '%-8s %12s %12s %6.3fx  %s\n' "$sc" "$mb" "$ma" "$(awk -v a="$ma" -v b="$mb" 'BEGIN{print a/b}')" "$rounds"
done
echo "(medians of $ROUNDS interleaved rounds; wrk -t1 -c32 -d${DURATION:-6s}; CPU = utime+stime of each server process)"
jwt_keys_cleanup
