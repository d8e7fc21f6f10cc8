#!/usr/bin/env bash
# What the country lookup costs on the cached live playlist: one build, two configs, side
# by side (bench/before-after.sh, interleaved rounds): "before" has no country database;
# "after" has one of NETWORKS random networks (300,000 by default: the size of
# GeoLite2-Country; made by PyPI's mmdb-writer, nothing is downloaded) and the live stream
# behind a country rule, so every request looks its viewer's country up (cached per
# address) and checks it, and the access log would name it.
#
#   SKIP_BUILD=1 ROUNDS=5 bench/geoip.sh
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/need.sh
need_pyvenv
NETWORKS=${NETWORKS:-300000}
mkdir -p data
if [ "$(cat data/bench-countries.n 2>/dev/null)" != "$NETWORKS" ] || [ ! -s data/bench-countries.mmdb ]; then
    echo ">> writing a country database of $NETWORKS networks (mmdb-writer)" >&2
    target/pyvenv/bin/python bench/make_countries.py data/bench-countries.mmdb "$NETWORKS"
    echo "$NETWORKS" >data/bench-countries.n
fi
conf=data/bench-geoip.yaml
sed -e 's#^  live: { url: "\([^"]*\)" }#  live: { url: "\1", access_rules: [{type: ip.geoip.country, country: [US], action: block}] }#' \
    bench/hlsgate.yaml >"$conf"
printf 'geoip:\n  database: "data/bench-countries.mmdb"\n' >>"$conf"
grep -q 'access_rules' "$conf" || { echo "!! the live stream's line in bench/hlsgate.yaml changed" >&2; exit 1; }
export HLSGATE_CONFIG=$conf OLD_BIN=${OLD_BIN:-$PWD/target/release/hlsgate}
export OLD_SED='/^geoip:/d; /^  database:/d; s/, access_rules: .*\] }/ }/'
exec bench/before-after.sh live
