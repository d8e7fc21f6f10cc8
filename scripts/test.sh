#!/usr/bin/env bash
# The test suite, as CI runs it: installs what the tests need when missing (Rust, a C
# compiler, cmake, ffmpeg for the real HLS streams and client, PostgreSQL for the store
# tests, started on loopback, openssl, PyJWT, botocore and Akamai's EdgeAuth (PyPI, in a
# virtualenv) for the third-party-signed token tests, chromium + npm playwright-core and
# hls.js for the browser player test, nginx with libnginx-mod-rtmp for the publishing
# test), then
# runs every test.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_build
need_lint
need ffmpeg ffmpeg
need curl curl
need wrk wrk
need h2load nghttp2-client
need promtool prometheus
need openssl openssl
need_pymod cryptography python3-cryptography
need_pymod jwt python3-jwt
need_pymod botocore python3-botocore
need_pyvenv
need_browser
need_rtmp
need_cargo_deb
need_postgres
cargo fmt --check
cargo clippy --all-targets -- -D warnings
cargo test --all-targets
