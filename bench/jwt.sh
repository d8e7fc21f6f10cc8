#!/usr/bin/env bash
# The cached live playlist in JWT mode (IVS style) against path mode, same build,
# interleaved: the JWT (ES384, signed by PyJWT) is verified once and its exchanged native
# token reused by the same viewer (one lookup per request); each request is then a full
# rewrite (every URI gets the native token's prefix), where path mode sends the cached bytes.
#
#   ROUNDS=5 DURATION=8s bench/jwt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. bench/jwt-keys.sh
. bench/lib.sh
JWT=$(ivs_jwt)
PATHU=$(hlsgate_url live index.m3u8)
JWTU="http://127.0.0.1:18080/hls/live/index.m3u8?token=$JWT"
for u in "$PATHU" "$JWTU"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -A wrk "$u")" = 200 ] || { echo "!! $u" >&2; exit 1; }
done
export ROUNDS=${ROUNDS:-5}
read -r pm _ jm _ <<<"$(interleave path "$PATHU" jwt "$JWTU")"
echo "live playlist: path mode $pm req/s, JWT mode $jm req/s, ratio $(awk -v a="$jm" -v b="$pm" 'BEGIN{printf "%.2f", a/b}')x (medians of $ROUNDS, wrk -t1 -c${CONNS:-32} -d${DURATION:-10s})"
jwt_keys_cleanup
