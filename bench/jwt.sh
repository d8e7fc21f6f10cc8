#!/usr/bin/env bash
# The cached live playlist in JWT mode (IVS style) against path mode, same build,
# interleaved: the JWT (ES384, signed by PyJWT) is verified once and its exchanged native
# token reused by the same viewer (one lookup per request); each request is then a full
# rewrite (every URI gets the native token's prefix), where path mode sends the cached bytes.
#
#   ROUNDS=5 DURATION=8s bench/jwt.sh
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=$(mktemp -d /tmp/hlsgate-jwt.XXXXXX)
openssl ecparam -name secp384r1 -genkey -noout -out "$KEYS/priv.pem" 2>/dev/null
openssl ec -in "$KEYS/priv.pem" -pubout -out "$KEYS/ivs.pub" 2>/dev/null
sed "s#^tokens:#tokens:\n  jwt:\n    keys:\n      ivs: \"$KEYS/ivs.pub\"#" bench/hlsgate.yaml > "$KEYS/hlsgate.yaml"
export HLSGATE_CONFIG=$KEYS/hlsgate.yaml
. bench/lib.sh
need_pymod jwt python3-jwt
JWT=$(/usr/bin/python3 -c 'import jwt,sys,time; print(jwt.encode({"aws:channel-arn":
  "arn:aws:ivs:us-west-2:123456789012:channel/live","exp":int(time.time())+3600},
  open(sys.argv[1]).read(), algorithm="ES384"))' "$KEYS/priv.pem")
PATHU=$(hlsgate_url live index.m3u8)
JWTU="http://127.0.0.1:18080/hls/live/index.m3u8?token=$JWT"
for u in "$PATHU" "$JWTU"; do
    [ "$(curl -s -o /dev/null -w '%{http_code}' -A wrk "$u")" = 200 ] || { echo "!! $u" >&2; exit 1; }
done
export ROUNDS=${ROUNDS:-5}
read -r pm _ jm _ <<<"$(interleave path "$PATHU" jwt "$JWTU")"
echo "live playlist: path mode $pm req/s, JWT mode $jm req/s, ratio $(awk -v a="$jm" -v b="$pm" 'BEGIN{printf "%.2f", a/b}')x (medians of $ROUNDS, wrk -t1 -c${CONNS:-32} -d${DURATION:-10s})"
rm -rf "$KEYS"
