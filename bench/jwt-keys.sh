# Sourced before bench/lib.sh by the scripts that ask with IVS-style JWTs: an ES384 key
# pair in $JWT_KEYS (removed on exit by `jwt_keys_cleanup`), and a copy of the bench config
# ($HLSGATE_CONFIG, else bench/hlsgate.yaml) that verifies JWTs signed with it (key `ivs`),
# exported as HLSGATE_CONFIG. After lib.sh, `ivs_jwt` prints one for channel `live`, valid
# for an hour, signed by PyJWT. Also a CloudFront RSA-2048 key pair (key pair id `KBENCH`):
# `cf_url PORT` prints a signed URL for the live playlist on that port, made by botocore.
JWT_KEYS=$(mktemp -d /tmp/hlsgate-jwt.XXXXXX)
openssl ecparam -name secp384r1 -genkey -noout -out "$JWT_KEYS/priv.pem" 2>/dev/null
openssl ec -in "$JWT_KEYS/priv.pem" -pubout -out "$JWT_KEYS/ivs.pub" 2>/dev/null
openssl genrsa -out "$JWT_KEYS/cf.pem" 2048 2>/dev/null
openssl rsa -in "$JWT_KEYS/cf.pem" -pubout -out "$JWT_KEYS/cf.pub" 2>/dev/null
sed "s#^tokens:#tokens:\n  jwt:\n    keys:\n      ivs: \"$JWT_KEYS/ivs.pub\"\n  cloudfront:\n    keys:\n      KBENCH: \"$JWT_KEYS/cf.pub\"#" \
    "${HLSGATE_CONFIG:-$(dirname "${BASH_SOURCE[0]}")/hlsgate.yaml}" >"$JWT_KEYS/hlsgate.yaml"
export HLSGATE_CONFIG=$JWT_KEYS/hlsgate.yaml

ivs_jwt() {
    need_pymod jwt python3-jwt
    /usr/bin/python3 -c 'import jwt,sys,time; print(jwt.encode({"aws:channel-arn":
      "arn:aws:ivs:us-west-2:123456789012:channel/live","exp":int(time.time())+3600},
      open(sys.argv[1]).read(), algorithm="ES384"))' "$JWT_KEYS/priv.pem"
}

cf_url() { # port
    need_pymod botocore python3-botocore
    need_pymod cryptography python3-cryptography
    /usr/bin/python3 "$(dirname "${BASH_SOURCE[0]}")/../tests/helpers/sign_cloudfront.py" \
        "$JWT_KEYS/cf.pem" KBENCH custom "http://127.0.0.1:$1/hls/live/index.m3u8" \
        "$(($(date +%s) + 3600))" "http://127.0.0.1:$1/hls/live/*"
}

jwt_keys_cleanup() { rm -rf "$JWT_KEYS"; }
