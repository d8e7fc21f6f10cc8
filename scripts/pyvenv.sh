#!/usr/bin/env bash
# The Python the README's token examples sign with: a virtualenv in target/pyvenv holding the
# signers people already use (PyJWT with cryptography, botocore's CloudFrontSigner, Akamai's
# akamai-edgeauth) and MaxMind's format writer (mmdb-writer), from PyPI, made when missing
# (python3-venv installed if need be).
# Prints the interpreter's path:   PY=$(scripts/pyvenv.sh)
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_pyvenv
echo "$PWD/target/pyvenv/bin/python"
