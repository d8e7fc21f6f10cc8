# Sourced before bench/lib.sh by the scripts that ask with IVS-style JWTs: an ES384 key
# pair in $JWT_KEYS (removed on exit by `jwt_keys_cleanup`), and a copy of the bench config
# ($HLSGATE_CONFIG, else bench/hlsgate.yaml) that verifies JWTs signed with it (key `ivs`),
# exported as HLSGATE_CONFIG. After lib.sh, `ivs_jwt` prints one for channel `live`, valid
# for an hour, signed by PyJWT.
JWT_KEYS=$(mktemp -d /tmp/hlsgate-jwt.XXXXXX)
openssl ecparam -name secp384r1 -genkey -noout -out "$JWT_KEYS/priv.pem" 2>/dev/null
openssl ec -in "$JWT_KEYS/priv.pem" -pubout -out "$JWT_KEYS/ivs.pub" 2>/dev/null
sed "s#^tokens:#tokens:\n  jwt:\n    keys:\n      ivs: \"$JWT_KEYS/ivs.pub\"#" \
    "${HLSGATE_CONFIG:-$(dirname "${BASH_SOURCE[0]}")/hlsgate.yaml}" >"$JWT_KEYS/hlsgate.yaml"
export HLSGATE_CONFIG=$JWT_KEYS/hlsgate.yaml

ivs_jwt() {
    need_pymod jwt python3-jwt
    /usr/bin/python3 -c 'import jwt,sys,time; print(jwt.encode({"aws:channel-arn":
      "arn:aws:ivs:us-west-2:123456789012:channel/live","exp":int(time.time())+3600},
      open(sys.argv[1]).read(), algorithm="ES384"))' "$JWT_KEYS/priv.pem"
}

jwt_keys_cleanup() { rm -rf "$JWT_KEYS"; }
