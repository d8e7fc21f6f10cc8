#!/usr/bin/env bash
# Run hlsgate on its shipped config from a fresh checkout: installs what building needs
# (Rust, a C compiler, cmake) when missing, builds in release mode and starts `serve`.
#   scripts/run.sh                 # conf/hlsgate.yaml
#   scripts/run.sh -c my.yaml      # any other config
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_build
exec cargo run --release --quiet -- serve "$@"
