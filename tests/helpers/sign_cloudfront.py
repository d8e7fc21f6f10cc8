#!/usr/bin/env python3
"""CloudFront signed URLs and cookies made by botocore's CloudFrontSigner (AWS's own signing
code, Debian's python3-botocore), with the RSA-SHA1 signer from AWS's documentation
(python3-cryptography), for the cookie/URL-mode tests.

    sign_cloudfront.py KEY_PEM KEY_PAIR_ID canned URL EXP
    sign_cloudfront.py KEY_PEM KEY_PAIR_ID custom URL EXP RESOURCE [IP_CIDR|-] [NOT_BEFORE|-]
    sign_cloudfront.py KEY_PEM KEY_PAIR_ID cookies - EXP RESOURCE [IP_CIDR|-] [NOT_BEFORE|-]

`canned`/`custom` print the signed URL; `cookies` prints the three cookies as JSON.
"""
import datetime
import json
import sys

from botocore.signers import CloudFrontSigner
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding


def when(t: str):
    return datetime.datetime.fromtimestamp(int(t), datetime.timezone.utc)


def main() -> None:
    key_path, key_pair_id, mode, url, exp = sys.argv[1:6]
    key = serialization.load_pem_private_key(open(key_path, "rb").read(), password=None)

    def rsa_signer(message: bytes) -> bytes:
        return key.sign(message, padding.PKCS1v15(), hashes.SHA1())

    signer = CloudFrontSigner(key_pair_id, rsa_signer)
    if mode == "canned":
        print(signer.generate_presigned_url(url, date_less_than=when(exp)))
        return
    resource = sys.argv[6]
    ip = sys.argv[7] if len(sys.argv) > 7 and sys.argv[7] != "-" else None
    nbf = when(sys.argv[8]) if len(sys.argv) > 8 and sys.argv[8] != "-" else None
    policy = signer.build_policy(resource, when(exp), date_greater_than=nbf, ip_address=ip)
    if mode == "custom":
        print(signer.generate_presigned_url(url, policy=policy))
        return
    encoded = policy.encode("utf8")
    print(json.dumps({
        "CloudFront-Policy": signer._url_b64encode(encoded).decode("utf8"),
        "CloudFront-Signature": signer._url_b64encode(rsa_signer(encoded)).decode("utf8"),
        "CloudFront-Key-Pair-Id": key_pair_id,
    }))


main()
