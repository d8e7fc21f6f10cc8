#!/usr/bin/env python3
"""Sign a JWT with PyJWT (a signer nobody here wrote), for the JWT-mode tests.

    sign_jwt.py PRIVATE_KEY_PEM ALG KID|- CLAIMS_JSON

ALG is any PyJWT algorithm (ES384, ES256, RS256, none), or HS256-PUBKEY: an HS256 token
whose HMAC secret is the *public* key PEM given instead (the algorithm-confusion attack;
PyJWT refuses to build one, so it is built by hand here).
"""
import base64
import hashlib
import hmac
import json
import sys

import jwt


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def main() -> None:
    key_path, alg, kid, claims = sys.argv[1:5]
    key = open(key_path).read()
    headers = None if kid == "-" else {"kid": kid}
    claims = json.loads(claims)
    if alg == "HS256-PUBKEY":
        header = {"alg": "HS256", "typ": "JWT", **(headers or {})}
        signing_input = b64(json.dumps(header).encode()) + "." + b64(json.dumps(claims).encode())
        mac = hmac.new(key.encode(), signing_input.encode(), hashlib.sha256).digest()
        print(signing_input + "." + b64(mac))
        return
    if alg == "none":
        print(jwt.encode(claims, None, algorithm="none", headers=headers))
        return
    print(jwt.encode(claims, key, algorithm=alg, headers=headers))


main()
