#!/usr/bin/env python3
"""Akamai EdgeAuth tokens made by Akamai's own EdgeAuth library (PyPI `akamai-edgeauth`,
installed by scripts/test.sh into target/pyvenv), for the Akamai-mode tests.

    sign_akamai.py KEY_HEX acl|url PATH START END [IP|-]

Prints the token (`[ip=..~]st=..~exp=..~acl=..~hmac=..`).
"""
import sys

from akamai.edgeauth import EdgeAuth


def main() -> None:
    key, kind, path, start, end = sys.argv[1:6]
    ip = sys.argv[6] if len(sys.argv) > 6 and sys.argv[6] != "-" else None
    auth = EdgeAuth(key=key, start_time=int(start), end_time=int(end), ip=ip,
                    algorithm="sha256", escape_early=False)
    if kind == "acl":
        print(auth.generate_acl_token(path))
    else:
        print(auth.generate_url_token(path))


main()
