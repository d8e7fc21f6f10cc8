#!/usr/bin/env bash
# What a flood of forged credentials costs the viewers already admitted. Viewers (wrk
# -t1 -c32) play the cached live playlist with their native tokens for DURATION while one
# client (a second wrk, -t1 -c8) sends forged JWTs: well-formed IVS-style ES384 tokens,
# signed by PyJWT, with their signature's bytes changed, so each costs a full P-384 check
# unless refused before it. Rounds interleaved, each side DURATION:
#
#   alone    the viewers, no flood
#   bounded  + the flood, edge.max_failed_verifications 20 (the default): past 20 failed
#            checks in a second the address is answered 429 with no check
#   unbound  + the flood, max_failed_verifications 0 (a second hlsgate, same build)
#   cheap    + a flood of garbage tokens refused before any signature check: what any flood
#            costs on this 2-core machine, where the flooding wrk takes CPU too
#
#   ROUNDS=3 DURATION=20s bench/flood.sh
#   KIND=cloudfront bench/flood.sh    the flood is botocore's CloudFront signed URLs with a
#                                     changed signature (RSA-2048 checks) instead
#
# Both wrk clients are on 127.0.0.1: the viewers' native tokens never meet the bound (it
# is consulted only where a foreign credential would be checked), so sharing the address
# does not help them.
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/jwt-keys.sh
. bench/lib.sh
ROUNDS=${ROUNDS:-3}
DURATION=${DURATION:-20s}
KIND=${KIND:-jwt}
case $KIND in
jwt)
    JWT=$(ivs_jwt)
    # The same token with its signature reversed (base64url of 96 other bytes): forged.
    SIG=${JWT##*.}
    FORGED="${JWT%.*}.$(echo "$SIG" | rev)"
    flood_url() { echo "http://127.0.0.1:$1/hls/live/index.m3u8?token=$FORGED"; }
    ;;
cloudfront)
    # botocore's signed URL with one character of its signature changed: a full RSA-2048
    # check each, then refused.
    CF=$(cf_url 18080)
    [ "$(curl -s -o /dev/null -w '%{http_code}' "$CF")" = 200 ] || { echo "!! botocore's URL is not 200" >&2; exit 1; }
    FORGED_CF=$(echo "$CF" | sed -E 's/(Signature=.{20})(.)/\1\n\2/' | awk 'NR == 1 {a = $0} NR == 2 {c = substr($0, 1, 1); print a (c == "A" ? "B" : "A") substr($0, 2)}')
    flood_url() { echo "${FORGED_CF/:18080/:$1}"; }
    ;;
*) echo "KIND: jwt or cloudfront" >&2; exit 2 ;;
esac
VIEWER=$(hlsgate_url live index.m3u8)
CHEAP="http://127.0.0.1:18080/hls/live/index.m3u8?token=not-a-token"

# The unbound edge: the same build and config on 18090 (metrics 18099, admin 18093).
sed -E -e '/^  (tls|access_log|access_log_format|upgrade_socket):/d' \
    -e 's/127.0.0.1:18080/127.0.0.1:18090/' -e 's/127.0.0.1:18083/127.0.0.1:18093/' \
    -e 's/127.0.0.1:18089/127.0.0.1:18099/' -e 's#sqlite://data/bench.db#sqlite://data/bench-flood.db#' \
    -e 's/^edge:$/edge:\n  max_failed_verifications: 0/' \
    "$HLSGATE_CONFIG" >"$RUN/unbound.yaml"
RUST_LOG=warn target/release/hlsgate edge -c "$RUN/unbound.yaml" >"$RUN/unbound.log" 2>&1 &
UNBOUND_PID=$!
PIDS+=("$UNBOUND_PID")
for _ in $(seq 100); do curl -s -o /dev/null 127.0.0.1:18090/healthz && break; sleep 0.1; done
VIEWER2=${VIEWER/:18080/:18090}

code() { curl -s -o /dev/null -w '%{http_code}' -A wrk "$1"; }
[ "$(code "$VIEWER")" = 200 ] && [ "$(code "$VIEWER2")" = 200 ] || { echo "!! viewer URL" >&2; exit 1; }
[ "$(code "$(flood_url 18080)")" = 401 ] || { echo "!! the forged $KIND credential is not refused 401" >&2; exit 1; }
[ "$(code "$CHEAP")" = 401 ] || { echo "!! the garbage token is not refused 401" >&2; exit 1; }

ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; }
# One run: the viewers on `viewer` for DURATION, and (unless `flood` is -) a flood on
# `flood` meanwhile. Prints "viewer-req/s flood-req/s flood-429s edge-cpu-s".
run() { # viewer flood pid
    local t0 t1 fpid=
    t0=$(ticks "$3")
    if [ "$2" != - ]; then
        wrk -t1 -c8 -d"$DURATION" -s bench/status.lua "$2" >"$RUN/flood.txt" 2>&1 &
        fpid=$!
    fi
    wrk -t1 -c32 -d"$DURATION" "$1" >"$RUN/view.txt"
    [ -n "$fpid" ] && wait "$fpid"
    t1=$(ticks "$3")
    local v f r
    v=$(awk '/Requests\/sec/ {print $2}' "$RUN/view.txt")
    grep -q "Non-2xx" "$RUN/view.txt" && { echo "!! viewers got non-2xx" >&2; cat "$RUN/view.txt" >&2; exit 1; }
    if [ -n "$fpid" ]; then
        f=$(awk '/Requests\/sec/ {print $2}' "$RUN/flood.txt")
        r=$(awk '/^status 429/ {print $3}' "$RUN/flood.txt")
    else
        f=0 r=0
    fi
    echo "$v $f ${r:-0} $(awk -v t=$((t1 - t0)) -v hz="$(getconf CLK_TCK)" 'BEGIN {printf "%.1f", t / hz}')"
}

: >"$RUN/flood-results.txt"
for r in $(seq "$ROUNDS"); do
    a=$(run "$VIEWER" - "$HLSGATE_PID")
    b=$(run "$VIEWER" "$(flood_url 18080)" "$HLSGATE_PID")
    c=$(run "$VIEWER2" "$(flood_url 18090)" "$UNBOUND_PID")
    d=$(run "$VIEWER" "$CHEAP" "$HLSGATE_PID")
    echo "   round $r: alone $a | bounded $b | unbound $c | cheap $d   (viewer req/s, flood req/s, flood 429s, edge CPU s)" >&2
    echo "$a $b $c $d" >>"$RUN/flood-results.txt"
done
col() { awk -v c="$1" '{print $c}' "$RUN/flood-results.txt" | median; }
A=$(col 1); B=$(col 5); C=$(col 9); D=$(col 13)
printf '\n%-9s %14s %9s %14s %12s\n' side 'viewer req/s' 'vs alone' 'flood req/s' 'flood 429s'
printf '%-9s %14.0f %8.2fx %14s %12s\n' alone "$A" 1 - -
printf '%-9s %14.0f %8.2fx %14.0f %12.0f\n' bounded "$B" "$(awk -v a="$B" -v b="$A" 'BEGIN{print a/b}')" "$(col 6)" "$(col 7)"
printf '%-9s %14.0f %8.2fx %14.0f %12.0f\n' unbound "$C" "$(awk -v a="$C" -v b="$A" 'BEGIN{print a/b}')" "$(col 10)" "$(col 11)"
printf '%-9s %14.0f %8.2fx %14.0f %12.0f\n' cheap "$D" "$(awk -v a="$D" -v b="$A" 'BEGIN{print a/b}')" "$(col 14)" "$(col 15)"
echo "(flood: forged $KIND credentials; medians of $ROUNDS interleaved rounds of $DURATION; viewers wrk -t1 -c32 on the cached live playlist, flood wrk -t1 -c8; $(nproc) CPUs shared by both wrk, hlsgate and the origin)"
jwt_keys_cleanup
